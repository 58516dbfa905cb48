//! [`Role`]: which plane a node belongs to. Decided when it joins (by its token or its
//! configuration), kept in the registry, and never changed from storage to voter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The part a node plays in the cluster.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Management plane: may vote in the Raft group.
    #[default]
    Voter,
    /// Storage plane: a non-voting learner for life.
    Storage,
}

impl Role {
    /// The role's name: `voter` or `storage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Storage => "storage",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a role.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role {0:?}: `voter` or `storage`")]
pub struct ParseRoleError(String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "voter" => Ok(Role::Voter),
            "storage" => Ok(Role::Storage),
            other => Err(ParseRoleError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_serde_and_display_agree() {
        for r in [Role::Voter, Role::Storage] {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert!("Voter".parse::<Role>().is_err());
        assert_eq!(Role::default(), Role::Voter);
    }
}
