//! `quorate recover`'s work on a data dir: the quorum-lost recovery of a stopped surviving
//! voter ([`quorate_consensus::Recovery`]), with the data dir locked for the whole of it.
//!
//! It refuses a directory that is no quorate data dir or holds no cluster, one an agent holds
//! (the data dir's lock, then redb's), and a storage node. It asks nothing and prints
//! nothing: the command shows the plan and asks the operator.

use std::path::{Path, PathBuf};

use quorate_consensus::{Recovery, RecoveryPlan};

use crate::DataDir;

/// Why a data dir could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Not a data dir of a quorate node.
    #[error("{path} is not a quorate data dir (no node.json): give the survivor's --data-dir")]
    NotADataDir {
        /// The directory.
        path: PathBuf,
    },
    /// The data dir could not be opened or is in use.
    #[error(transparent)]
    DataDir(#[from] crate::DataDirError),
    /// The node's Raft state.
    #[error(transparent)]
    Consensus(#[from] quorate_consensus::RecoverError),
}

/// A stopped node's data dir, locked, with its recovery worked out.
pub struct Recover {
    _dir: DataDir,
    recovery: Recovery,
}

impl Recover {
    /// Opens and locks the data dir at `path` and works out the recovery; changes nothing.
    pub fn open(path: &Path) -> Result<Recover, RecoverError> {
        if !path.join(crate::data_dir::META_FILE).is_file() {
            return Err(RecoverError::NotADataDir {
                path: path.to_path_buf(),
            });
        }
        let dir = DataDir::open(path)?;
        let recovery = Recovery::open(&dir.path().join("consensus"))?;
        Ok(Recover {
            _dir: dir,
            recovery,
        })
    }

    /// What [`Recover::apply`] will change.
    pub fn plan(&self) -> &RecoveryPlan {
        self.recovery.plan()
    }

    /// Rewrites the node's Raft membership (see [`Recovery::apply`]).
    pub fn apply(self) -> Result<RecoveryPlan, RecoverError> {
        Ok(self.recovery.apply()?)
    }
}
