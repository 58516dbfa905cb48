//! The redb storage against openraft's own storage test suite, and durability across a reopen
//! (of the state, and of the decided events' numbering).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, EntryPayload, LogId, Raft, RaftLogReader, StorageError};
use quorate_consensus::NodeId;
use quorate_consensus::mem_network::MemRouter;
use quorate_consensus::{
    EventHub, EventIndex, EventKind, LogStore, NodeRecord, NodeStatus, Request, Role,
    StateMachineData, StateMachineStore, TypeConfig, open_db, raft_config,
};

#[path = "../../tests/support/wait.rs"]
mod wait;

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

/// What the store acknowledged survives dropping it and reopening the same redb file: a
/// single-node Raft appends entries (each write acknowledged only once its entry is on disk),
/// votes, commits and applies them, and builds a snapshot; after it is shut down and every
/// handle dropped, the reopened file holds the vote, the committed index, every acknowledged
/// entry after the snapshot, and the snapshot with the registry as it was (and the store
/// reports the committed index it saved or read, to its clones too); a Raft started on
/// the reopened stores comes back with every acknowledged write applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_state_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let router = MemRouter::default();
    let config = Arc::new(raft_config("test").expect("config"));
    let node = BasicNode {
        addr: "node-1".into(),
    };

    let db = open_db(&path).expect("open db");
    let sm = StateMachineStore::open(db.clone()).expect("state machine");
    let watched = LogStore::new(db.clone());
    assert_eq!(watched.committed_index(), None, "nothing committed yet");
    let raft = Raft::new(
        NodeId::new(1),
        config.clone(),
        router.network(NodeId::new(1)),
        watched.clone(),
        sm.clone(),
    )
    .await
    .expect("raft");
    router.add(NodeId::new(1), raft.clone());
    raft.initialize(BTreeMap::from([(NodeId::new(1), node.clone())]))
        .await
        .expect("initialize");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.current_leader == Some(NodeId::new(1)), "leadership")
        .await
        .expect("leader");
    let mut acked: Vec<(LogId<NodeId>, Request)> = Vec::new();
    for req in std::iter::once(put_node()).chain((0..5).map(label)) {
        let w = raft.client_write(req.clone()).await.expect("write");
        assert_eq!(w.data, Ok(()), "{req:?} applied");
        acked.push((w.log_id, req));
    }
    raft.trigger().snapshot().await.expect("trigger snapshot");
    let snapshot = raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.snapshot.is_some(), "a snapshot")
        .await
        .expect("snapshot")
        .snapshot
        .expect("snapshot id");
    for req in (5..8).map(label) {
        let w = raft.client_write(req.clone()).await.expect("write");
        assert_eq!(w.data, Ok(()), "{req:?} applied");
        acked.push((w.log_id, req));
    }
    let metrics = raft.metrics().borrow().clone();
    let last = acked.last().expect("writes").0;
    assert!(
        watched.committed_index() >= Some(last.index),
        "a clone of the store Raft writes reports the committed index: {:?}, last write {last:?}",
        watched.committed_index()
    );
    let registry = sm.data().read().expect("data").registry.clone();
    raft.shutdown().await.expect("shutdown");
    router.remove(NodeId::new(1));
    drop((raft, sm, db, watched));

    // The file is free once the last handle is gone (openraft's tasks hold store clones until
    // they have wound down).
    let db = wait::until_async(
        "the database to be free to reopen",
        Duration::from_secs(5),
        || open_db(&path),
    )
    .await;
    let mut log = LogStore::new(db.clone());
    assert_eq!(log.committed_index(), None, "not known before it is read");
    assert_eq!(
        log.read_vote().await.expect("read vote"),
        Some(metrics.vote),
        "the vote"
    );
    let committed = log.read_committed().await.expect("read committed");
    assert!(
        committed >= Some(last),
        "committed {committed:?} covers the last acknowledged write {last:?}"
    );
    assert_eq!(
        log.committed_index(),
        committed.map(|c| c.index),
        "the committed index read back"
    );
    let state = log.get_log_state().await.expect("log state");
    assert!(state.last_log_id >= Some(last), "{state:?}");
    let entries = log
        .try_get_log_entries(snapshot.index + 1..=last.index)
        .await
        .expect("read log");
    for (log_id, req) in acked.iter().filter(|(id, _)| id.index > snapshot.index) {
        let entry = entries
            .iter()
            .find(|e| e.log_id == *log_id)
            .unwrap_or_else(|| panic!("entry {log_id:?} kept: {entries:?}"));
        assert!(
            matches!(&entry.payload, EntryPayload::Normal(r) if r == req),
            "entry {log_id:?} is {req:?}: {:?}",
            entry.payload
        );
    }

    let mut sm = StateMachineStore::open(db.clone()).expect("reopen state machine");
    let stored = sm
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(stored.meta.last_log_id, Some(snapshot), "the snapshot");
    let restored = sm.data().read().expect("data").clone();
    assert_eq!(restored.last_applied, Some(snapshot), "restored up to it");
    assert_eq!(
        restored.registry.nodes[&NodeId::new(1)].labels.len(),
        acked
            .iter()
            .filter(|(id, r)| id.index <= snapshot.index && matches!(r, Request::SetLabel { .. }))
            .count(),
        "the registry as of the snapshot"
    );

    let router = MemRouter::default();
    let raft = Raft::new(
        NodeId::new(1),
        config,
        router.network(NodeId::new(1)),
        log,
        sm.clone(),
    )
    .await
    .expect("raft over the reopened file");
    router.add(NodeId::new(1), raft.clone());
    wait::until_async(
        "every acknowledged write applied again",
        Duration::from_secs(10),
        || {
            let now = sm.data().read().expect("data").registry.clone();
            if now == registry {
                Ok(())
            } else {
                Err(Box::new(now))
            }
        },
    )
    .await;
    raft.shutdown().await.expect("shutdown");
}

fn put_node() -> Request {
    Request::PutNode {
        node: NodeRecord {
            id: NodeId::new(1),
            name: "n1".into(),
            role: Role::Voter,
            raft_addr: "10.0.0.1:7947".into(),
            gossip_addr: "10.0.0.1:7946".into(),
            api_addr: "127.0.0.1:7948".into(),
            labels: BTreeMap::new(),
            status: NodeStatus::Active,
            joined_ms: 0,
            key: None,
        },
    }
}

fn label(i: usize) -> Request {
    Request::SetLabel {
        node: NodeId::new(1),
        key: format!("k{i}"),
        value: format!("v{i}"),
    }
}

/// Every event published after `after`, until the hub's last index reaches `upto`.
async fn events_until(
    hub: &Arc<EventHub>,
    after: Option<EventIndex>,
    upto: EventIndex,
) -> Vec<(EventIndex, EventKind)> {
    let mut sub = hub.subscribe(after).expect("retained");
    let mut out = Vec::new();
    while sub.position() < Some(upto) {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("events up to {upto}; got {out:?}"))
            .expect("not compacted");
        out.push((e.index, e.kind));
    }
    out
}

/// The decided events are numbered by the state machine's own counter, which a snapshot
/// keeps: after a reopen, the entries applied again after the snapshot give the same events
/// with the same indexes, a position before the snapshot is compacted, and the registry index
/// comes back. State saved before the counter existed still loads (it counts from 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_events_come_back_with_their_indexes_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let config = Arc::new(raft_config("test").expect("config"));
    let start = |db: Arc<redb::Database>| {
        let config = config.clone();
        async move {
            let router = MemRouter::default();
            let sm = StateMachineStore::open(db.clone()).expect("state machine");
            let raft = Raft::new(
                NodeId::new(1),
                config,
                router.network(NodeId::new(1)),
                LogStore::new(db),
                sm.clone(),
            )
            .await
            .expect("raft");
            router.add(NodeId::new(1), raft.clone());
            (raft, sm, router)
        }
    };
    let db = open_db(&path).expect("open db");
    let (raft, sm, _router) = start(db.clone()).await;
    let hub = sm.events().clone();
    let node = BasicNode {
        addr: "node-1".into(),
    };
    raft.initialize(BTreeMap::from([(NodeId::new(1), node)]))
        .await
        .expect("initialize");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.current_leader == Some(NodeId::new(1)), "leadership")
        .await
        .expect("leader");
    for req in std::iter::once(put_node()).chain((0..3).map(label)) {
        raft.client_write(req).await.expect("write");
    }
    raft.trigger().snapshot().await.expect("trigger snapshot");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.snapshot.is_some(), "a snapshot")
        .await
        .expect("snapshot");
    let at_snapshot = hub.last_index();
    for req in (3..6).map(label) {
        raft.client_write(req).await.expect("write");
    }
    let noop = raft.client_write(Request::Noop).await.expect("a no-op");
    let last = hub.last_index();
    let before = events_until(&hub, Some(at_snapshot), last).await;
    assert_eq!(
        before.len(),
        3,
        "three label writes, the no-op none: {before:?}"
    );
    let registry_index = hub.registry_index();
    assert!(
        registry_index < noop.log_id.index,
        "the no-op (entry {}) did not move the registry index ({registry_index})",
        noop.log_id.index
    );
    raft.shutdown().await.expect("shutdown");
    drop((raft, sm, hub, db));

    let db = wait::until_async("the database to reopen", Duration::from_secs(5), || {
        open_db(&path)
    })
    .await;
    let (raft, sm, _router) = start(db).await;
    let hub = sm.events().clone();
    assert_eq!(hub.oldest(), at_snapshot, "the snapshot's count");
    assert!(
        hub.subscribe(Some(EventIndex::decided(1))).is_err(),
        "before the snapshot: compacted"
    );
    let after = events_until(&hub, Some(at_snapshot), last).await;
    assert_eq!(after, before, "the same events, the same indexes");
    wait::until_async("the registry index back", Duration::from_secs(5), || {
        let i = hub.registry_index();
        if i == registry_index { Ok(()) } else { Err(i) }
    })
    .await;
    raft.shutdown().await.expect("shutdown");

    let old: StateMachineData =
        serde_json::from_str(r#"{"last_applied":null,"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"registry":{"cluster":null,"nodes":{},"tokens":{},"settings":{"voter_target":3,"failed_grace_ms":60000}}}"#)
            .expect("state without the event counter loads");
    assert_eq!((old.events_decided, old.registry_index), (0, 0));
}
