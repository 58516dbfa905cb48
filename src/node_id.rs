//! The node id: a random 64-bit number drawn on a node's first start and kept in its data dir.
//!
//! It is what every layer keys a node by (mDNS TXT `id`, gossip, Raft), never the node's name,
//! which an operator may change or mDNS may rename on a conflict. It is written as 16 lowercase
//! hex digits so that ids sort the same as text and as numbers.

use std::fmt;
use std::str::FromStr;

/// A node's permanent identity within a cluster. Zero is never drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u64);

impl NodeId {
    /// Draws a new random, non-zero node id.
    pub fn random() -> Self {
        loop {
            let n: u64 = rand::random();
            if n != 0 {
                return NodeId(n);
            }
        }
    }

    /// The id as a number, as Raft uses it.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> u64 {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a text is not a node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a node id is 16 hex digits, not zero; got {0:?}")]
pub struct ParseNodeIdError(String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseNodeIdError(s.to_string());
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        match u64::from_str_radix(s, 16) {
            Ok(0) | Err(_) => Err(bad()),
            Ok(n) => Ok(NodeId(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>(), Ok(id));
        assert_eq!("00ABCDEF01234567".parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn parse_refuses_zero_short_long_and_non_hex() {
        for bad in [
            "0000000000000000",
            "abc",
            "00abcdef012345678",
            "00abcdef0123456g",
            "+0abcdef01234567",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn random_ids_are_non_zero_and_differ() {
        let a = NodeId::random();
        let b = NodeId::random();
        assert_ne!(a.get(), 0);
        assert_ne!(a, b);
    }
}
