//! In-process Raft clusters over the in-memory network: elections, learners, leader loss and a
//! restart from disk, partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft, ServerState};
use quorate_consensus::NodeId;
use quorate_consensus::mem_network::MemRouter;
use quorate_consensus::{LogStore, Request, StateMachineStore, TypeConfig, open_db, raft_config};

#[path = "../../tests/support/wait.rs"]
mod wait;

use wait::until_async as until;

struct Node {
    raft: Raft<TypeConfig>,
    sm: StateMachineStore,
}

async fn start(router: &MemRouter, dir: &std::path::Path, id: NodeId) -> Node {
    let db = open_db(&dir.join(format!("n{id}.redb"))).expect("db");
    let sm = StateMachineStore::open(db.clone()).expect("sm");
    let config = Arc::new(raft_config("test").expect("config"));
    let raft = Raft::new(
        id,
        config,
        router.network(id),
        LogStore::new(db),
        sm.clone(),
    )
    .await
    .expect("raft");
    router.add(id, raft.clone());
    Node { raft, sm }
}

fn addr(id: NodeId) -> BasicNode {
    BasicNode {
        addr: format!("node-{id}"),
    }
}

fn label_count(n: &Node) -> usize {
    n.sm.data()
        .read()
        .map(|d| d.registry.nodes.values().map(|r| r.labels.len()).sum())
        .unwrap_or(0)
}

fn put_node(id: NodeId) -> Request {
    Request::PutNode {
        node: quorate_consensus::NodeRecord {
            id,
            name: format!("n{id}"),
            role: quorate_consensus::Role::Voter,
            raft_addr: "10.0.0.1:7947".into(),
            gossip_addr: "10.0.0.1:7946".into(),
            api_addr: "127.0.0.1:7948".into(),
            labels: BTreeMap::new(),
            status: quorate_consensus::NodeStatus::Active,
            joined_ms: 0,
            key: None,
        },
    }
}

fn set_label(i: usize) -> Request {
    Request::SetLabel {
        node: NodeId::new(1),
        key: format!("k{i}"),
        value: format!("v{i}"),
    }
}

/// Three voters elect one leader; two learners receive every committed entry and never vote
/// or become candidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_learners_replicate_without_voting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = MemRouter::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=5 {
        nodes.insert(
            NodeId::new(id),
            start(&router, dir.path(), NodeId::new(id)).await,
        );
    }
    let voters: BTreeMap<NodeId, BasicNode> = (1..=3)
        .map(|id| (NodeId::new(id), addr(NodeId::new(id))))
        .collect();
    nodes[&NodeId::new(1)]
        .raft
        .initialize(voters)
        .await
        .expect("initialize");
    let leader = nodes[&NodeId::new(1)]
        .raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("leader")
        .current_leader
        .expect("leader id");
    let lead = &nodes[&leader].raft;
    // A first write commits the new leader's term (and the initial membership with it);
    // membership changes are refused while that is in progress.
    lead.client_write(put_node(NodeId::new(1)))
        .await
        .expect("put node");
    for id in [4, 5] {
        lead.add_learner(NodeId::new(id), addr(NodeId::new(id)), false)
            .await
            .expect("add learner");
    }
    for i in 0..20 {
        lead.client_write(set_label(i))
            .await
            .expect("write")
            .data
            .expect("applied");
    }
    for (id, n) in &nodes {
        until(
            &format!("node {id} to apply all writes"),
            Duration::from_secs(5),
            || {
                let c = label_count(n);
                if c == 20 {
                    Ok(())
                } else {
                    Err(format!("{c} labels"))
                }
            },
        )
        .await;
    }
    for id in [4, 5].map(NodeId::new) {
        let m = nodes[&id].raft.metrics().borrow().clone();
        assert_eq!(m.state, ServerState::Learner, "node {id} is a learner");
        let voter_ids: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        assert_eq!(
            voter_ids,
            BTreeSet::from([1, 2, 3].map(NodeId::new)),
            "learners are not voters"
        );
        assert!(
            m.vote.leader_id().voted_for() != Some(id),
            "a learner never votes for itself"
        );
    }
    for n in nodes.values() {
        n.raft.shutdown().await.expect("shutdown");
    }
}

/// Three started nodes, initialized as one group of three voters, with a leader that has
/// committed a first write: the shared setup of the failure tests.
async fn three_voters(
    router: &MemRouter,
    dir: &std::path::Path,
) -> (BTreeMap<NodeId, Node>, NodeId) {
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(NodeId::new(id), start(router, dir, NodeId::new(id)).await);
    }
    nodes[&NodeId::new(1)]
        .raft
        .initialize(
            (1..=3)
                .map(|id| (NodeId::new(id), addr(NodeId::new(id))))
                .collect::<BTreeMap<_, _>>(),
        )
        .await
        .expect("init");
    let leader = wait_leader(&nodes[&NodeId::new(1)], None).await;
    nodes[&leader]
        .raft
        .client_write(put_node(NodeId::new(1)))
        .await
        .expect("write");
    (nodes, leader)
}

/// Waits until `n` knows a leader other than `not`.
async fn wait_leader(n: &Node, not: Option<NodeId>) -> NodeId {
    n.raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(
            move |m| m.current_leader.is_some() && m.current_leader != not,
            "a new leader",
        )
        .await
        .expect("leader")
        .current_leader
        .expect("id")
}

/// Waits until every node holds the same registry with at least `labels` labels.
async fn converged(nodes: &BTreeMap<NodeId, Node>, labels: usize) {
    until(
        "every node to hold the same registry",
        Duration::from_secs(10),
        || {
            let regs: Vec<_> = nodes
                .values()
                .map(|n| n.sm.data().read().map(|d| d.registry.clone()).ok())
                .collect();
            let same = regs.windows(2).all(|w| w[0] == w[1]);
            let c = nodes.values().map(label_count).min().unwrap_or(0);
            if same && c >= labels {
                Ok(())
            } else {
                Err(format!("same: {same}, labels: {c}"))
            }
        },
    )
    .await;
}

/// The leader dies: the other two elect a new one and keep committing; restarted from its
/// data, the dead node rejoins and everyone converges on the same registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_is_replaced_and_catches_up_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = MemRouter::default();
    let (mut nodes, leader) = three_voters(&router, dir.path()).await;

    router.remove(leader);
    nodes
        .remove(&leader)
        .expect("leader")
        .raft
        .shutdown()
        .await
        .expect("shutdown");
    let survivor = *nodes.keys().next().expect("survivor");
    let new_leader = wait_leader(&nodes[&survivor], Some(leader)).await;
    assert_ne!(new_leader, leader);
    nodes[&new_leader]
        .raft
        .client_write(set_label(1))
        .await
        .expect("write after failover");

    let back = start(&router, dir.path(), leader).await;
    nodes.insert(leader, back);
    converged(&nodes, 1).await;
    for n in nodes.values() {
        n.raft.shutdown().await.expect("shutdown");
    }
}

/// A leader cut off from the majority cannot commit (here both followers are cut away, so the
/// leader alone is a minority of three); after healing, everyone converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_cannot_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = MemRouter::default();
    let (nodes, leader) = three_voters(&router, dir.path()).await;
    nodes[&leader]
        .raft
        .client_write(set_label(1))
        .await
        .expect("write with a majority");

    let followers: Vec<NodeId> = nodes.keys().copied().filter(|id| *id != leader).collect();
    for f in &followers {
        router.set_cut(*f, true);
    }
    let minority = tokio::time::timeout(
        Duration::from_secs(2),
        nodes[&leader].raft.client_write(set_label(2)),
    )
    .await;
    assert!(
        !matches!(minority, Ok(Ok(_))),
        "a minority committed: {minority:?}"
    );
    for f in &followers {
        router.set_cut(*f, false);
    }
    converged(&nodes, 1).await;
    for n in nodes.values() {
        n.raft.shutdown().await.expect("shutdown");
    }
}
