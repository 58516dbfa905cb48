//! The redb storage against openraft's own storage test suite, and durability across a reopen
//! (of the state, and of the decided events' numbering).

use std::collections::{BTreeMap, BTreeSet};
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
    lead_alone(&raft, node.clone()).await;
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

/// Initializes `raft` (node 1) as a group of one and waits until it leads.
async fn lead_alone(raft: &Raft<TypeConfig>, node: BasicNode) {
    raft.initialize(BTreeMap::from([(NodeId::new(1), node)]))
        .await
        .expect("initialize");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.current_leader == Some(NodeId::new(1)), "leadership")
        .await
        .expect("leader");
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
    lead_alone(&raft, node).await;
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

/// One node of a recovery test: its directory and its running Raft over redb.
struct Member {
    dir: tempfile::TempDir,
    raft: Raft<TypeConfig>,
    sm: StateMachineStore,
}

async fn start_member(dir: tempfile::TempDir, id: u64, router: &MemRouter) -> Member {
    let config = Arc::new(raft_config("test").expect("config"));
    let path = dir.path().join("raft.redb");
    let db = wait::until_async(
        "the database to be free to open",
        Duration::from_secs(5),
        || open_db(&path),
    )
    .await;
    let sm = StateMachineStore::open(db.clone()).expect("state machine");
    let raft = Raft::new(
        NodeId::new(id),
        config,
        router.network(NodeId::new(id)),
        LogStore::new(db),
        sm.clone(),
    )
    .await
    .expect("raft");
    router.add(NodeId::new(id), raft.clone());
    Member { dir, raft, sm }
}

fn record(id: u64, role: Role) -> NodeRecord {
    NodeRecord {
        id: NodeId::new(id),
        name: format!("n{id}"),
        role,
        raft_addr: format!("10.0.0.{id}:7947"),
        gossip_addr: format!("10.0.0.{id}:7946"),
        api_addr: "127.0.0.1:7948".into(),
        labels: BTreeMap::new(),
        status: NodeStatus::Active,
        joined_ms: 0,
        key: Some(format!("key-{id}")),
    }
}

/// Quorum lost for good: of three voters and a learner, two voters' state is gone. The
/// survivor's files, recovered while it is stopped (refused while its database is open),
/// start a group in which it is the only voter: it elects itself, commits, keeps the learner
/// (which replicates the new writes) and every registry write from before, and the lost
/// voters' records are removed and their identities refused. Recovering it again is refused:
/// it is the only voter already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_survivor_leads_alone_and_keeps_the_learner() {
    use quorate_consensus::{ClusterFile, Files, RecoverError, Recovery};

    let router = MemRouter::default();
    let mut members = Vec::new();
    for id in 1..=4 {
        let dir = tempfile::tempdir().expect("tempdir");
        Files::open(dir.path())
            .expect("files")
            .save_cluster(&ClusterFile {
                format: 1,
                cluster_id: "00000000000000ab".into(),
                cluster_name: "test".into(),
                ca_fingerprint: "00".repeat(32),
                node_id: NodeId::new(id),
                role: if id == 4 { Role::Storage } else { Role::Voter },
                bootstrapped: id == 1,
            })
            .expect("cluster.json");
        members.push(start_member(dir, id, &router).await);
    }
    let node = |id: u64| BasicNode {
        addr: format!("n{id}"),
    };
    members[0]
        .raft
        .initialize(BTreeMap::from([
            (NodeId::new(1), node(1)),
            (NodeId::new(2), node(2)),
            (NodeId::new(3), node(3)),
        ]))
        .await
        .expect("initialize");
    let leader = members[0]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("leader")
        .current_leader
        .expect("leader id");
    let lead = &members[(leader.get() - 1) as usize].raft;
    // A new leader refuses membership changes until the first entry of its term is applied.
    lead.wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| {
                m.current_leader == Some(m.id)
                    && m.last_applied
                        .is_some_and(|l| l.leader_id.term == m.current_term)
            },
            "the leader's first entry applied",
        )
        .await
        .expect("the leader's first entry applied");
    tokio::time::timeout(
        Duration::from_secs(10),
        lead.add_learner(NodeId::new(4), node(4), true),
    )
    .await
    .expect("in time")
    .expect("learner added");
    let mut last = 0;
    for req in [
        Request::PutNode {
            node: record(1, Role::Voter),
        },
        Request::PutNode {
            node: record(2, Role::Voter),
        },
        Request::PutNode {
            node: record(3, Role::Voter),
        },
        Request::PutNode {
            node: record(4, Role::Storage),
        },
        Request::SetLabel {
            node: NodeId::new(4),
            key: "zone".into(),
            value: "a".into(),
        },
    ] {
        let w = lead.client_write(req.clone()).await.expect("write");
        assert_eq!(w.data, Ok(()), "{req:?}");
        last = w.log_id.index;
    }
    for m in &members {
        m.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(last), "every write applied")
            .await
            .expect("applied");
    }

    // The survivor's database is open: refused.
    let refused = Recovery::open(members[0].dir.path()).err();
    assert!(
        matches!(refused, Some(RecoverError::InUse { .. })),
        "{refused:?}"
    );

    let mut dirs = Vec::new();
    for m in members {
        m.raft.shutdown().await.expect("shutdown");
        router.remove(m.raft.metrics().borrow().id);
        dirs.push(m.dir);
    }
    // Voters 2 and 3 are lost for good.
    let survivor_dir = dirs.remove(0);
    let learner_dir = dirs.remove(2);
    drop(dirs);

    let recovery = wait::until_async(
        "the survivor's database to be free",
        Duration::from_secs(5),
        || Recovery::open(survivor_dir.path()).map_err(|e| e.to_string()),
    )
    .await;
    let plan = recovery.plan().clone();
    let ids = |v: &[u64]| v.iter().map(|i| NodeId::new(*i)).collect::<BTreeSet<_>>();
    assert_eq!(plan.voters_before, ids(&[1, 2, 3]));
    assert_eq!(plan.voters_after, ids(&[1]));
    assert_eq!(plan.lost, ids(&[2, 3]));
    assert_eq!(plan.records_removed, ids(&[2, 3]));
    assert_eq!(
        plan.learners,
        BTreeMap::from([(NodeId::new(4), "n4".to_string())])
    );
    recovery.apply().expect("recovered");

    let router = MemRouter::default();
    let survivor = start_member(survivor_dir, 1, &router).await;
    let learner = start_member(learner_dir, 4, &router).await;
    let m = survivor
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| {
                m.current_leader == Some(NodeId::new(1))
                    && m.last_applied.is_some_and(|l| l.index > last)
            },
            "the survivor to lead and commit the recovery",
        )
        .await
        .expect("leads");
    let mem = m.membership_config.membership();
    assert_eq!(mem.voter_ids().collect::<BTreeSet<_>>(), ids(&[1]));
    assert_eq!(mem.learner_ids().collect::<BTreeSet<_>>(), ids(&[4]));
    let w = survivor
        .raft
        .client_write(Request::SetLabel {
            node: NodeId::new(4),
            key: "after".into(),
            value: "recovery".into(),
        })
        .await
        .expect("a write commits with the survivor alone");
    learner
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(w.log_id.index), "the learner replicates")
        .await
        .expect("replicated");
    for sm in [&survivor.sm, &learner.sm] {
        let r = sm.data().read().expect("data").registry.clone();
        assert_eq!(
            r.nodes.keys().copied().collect::<BTreeSet<_>>(),
            ids(&[1, 4]),
            "the lost voters' records are gone"
        );
        assert!(r.removed.contains_key(&NodeId::new(2)) && r.removed.contains_key(&NodeId::new(3)));
        assert_eq!(
            r.nodes[&NodeId::new(4)].labels["zone"],
            "a",
            "earlier writes kept"
        );
        assert_eq!(r.nodes[&NodeId::new(4)].labels["after"], "recovery");
    }
    let dir = survivor.dir;
    survivor.raft.shutdown().await.expect("shutdown");
    learner.raft.shutdown().await.expect("shutdown");
    router.remove(NodeId::new(1));
    router.remove(NodeId::new(4));
    drop((survivor.raft, survivor.sm));
    let again =
        wait::until_async(
            "the database to be free",
            Duration::from_secs(5),
            || match Recovery::open(dir.path()) {
                Err(RecoverError::InUse { .. }) => Err("in use".to_string()),
                other => Ok(other.err()),
            },
        )
        .await;
    assert!(
        matches!(again, Some(RecoverError::AlreadyAlone { .. })),
        "{again:?}"
    );
}

/// A database is made under a temporary name and renamed into place once complete: a
/// leftover of a creation cut short (what a kill -9 at admission left, a file redb never
/// finished) is made again, and the node's database opens; a file in place is never
/// replaced, even one that does not open.
#[tokio::test]
async fn a_database_cut_short_while_made_is_made_again_and_one_in_place_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let leftover = dir.path().join("raft.redb.new");
    // What redb leaves when killed after sizing the file and before its magic number.
    std::fs::write(&leftover, vec![0u8; 8192]).expect("leftover");
    let db = open_db(&path).expect("made again");
    assert!(!leftover.exists(), "the leftover is gone");
    let vote = openraft::Vote::new(3, NodeId::new(1));
    LogStore::new(db.clone())
        .save_vote(&vote)
        .await
        .expect("save vote");
    drop(db);
    let db = wait::until_async("the database to reopen", Duration::from_secs(5), || {
        open_db(&path)
    })
    .await;
    assert_eq!(
        LogStore::new(db).read_vote().await.expect("read vote"),
        Some(vote),
        "what was written is read back"
    );

    let other = dir.path().join("other.redb");
    std::fs::write(&other, vec![0u8; 8192]).expect("a file in place");
    let e = match open_db(&other) {
        Ok(_) => panic!("a file that is no database opened"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("invalid data"), "{e}");
    assert_eq!(
        std::fs::read(&other).expect("read").len(),
        8192,
        "a file in place is left as it was"
    );
}
