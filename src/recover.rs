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

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_consensus::{ClusterFile, Files, RecoverError as Raft, Role};

    /// A directory that is no data dir, a data dir without a cluster, and a storage node's
    /// data dir are each refused with their own error, and nothing is written.
    #[test]
    fn what_cannot_be_recovered_is_refused() {
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Recover::open(empty.path()),
            Err(RecoverError::NotADataDir { .. })
        ));

        let dir = tempfile::tempdir().expect("tempdir");
        let node = DataDir::open(dir.path()).expect("data dir").node_id();
        assert!(matches!(
            Recover::open(dir.path()),
            Err(RecoverError::Consensus(Raft::NoCluster { .. }))
        ));

        let files = Files::open(&dir.path().join("consensus")).expect("files");
        files
            .save_cluster(&ClusterFile {
                format: 1,
                cluster_id: "00000000000000ab".into(),
                cluster_name: "c".into(),
                ca_fingerprint: "00".repeat(32),
                node_id: node,
                role: Role::Storage,
                bootstrapped: false,
            })
            .expect("cluster.json");
        drop(quorate_consensus::open_db(&files.raft_db()).expect("raft.redb"));
        let before = std::fs::read(files.raft_db()).expect("read");
        assert!(matches!(
            Recover::open(dir.path()),
            Err(RecoverError::Consensus(Raft::NotVoter { .. }))
        ));
        assert_eq!(std::fs::read(files.raft_db()).expect("read"), before);

        let held = DataDir::open(dir.path()).expect("an agent holds it");
        assert!(matches!(
            Recover::open(dir.path()),
            Err(RecoverError::DataDir(crate::DataDirError::Locked { .. }))
        ));
        drop(held);
    }
}
