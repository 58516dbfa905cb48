//! Hostile members over QUIC, in-process: a member host that runs a modified node built from
//! these crates ([`rogue`]) and holds everything its role holds. Each test names the attack
//! and what must hold against it.

use super::*;

use std::time::Instant;

#[path = "../../../tests/support/rogue.rs"]
mod rogue;

use super::authority::{identity_of, leader_of};
use rogue::{Forge, ForgedVotes};

/// Writes `n` labels of `node` through `via`, one after another; the time each took, sorted,
/// and the errors.
async fn timed_writes(
    via: &Consensus,
    node: NodeId,
    tag: &str,
    n: usize,
) -> (Vec<Duration>, Vec<String>) {
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        match via.write(label(node, &format!("{tag}{i}"))).await {
            Ok(w) if w.outcome.is_ok() => took.push(started.elapsed()),
            Ok(w) => errors.push(format!("{:?}", w.outcome)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    took.sort();
    (took, errors)
}

/// The 99th percentile of sorted durations (the largest, for fewer than 100).
fn p99(sorted: &[Duration]) -> Duration {
    let i = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

/// Each voter's (leader, term, core running).
fn raft_views(c: &Cluster, voters: &[NodeId]) -> Vec<(NodeId, Option<NodeId>, u64, bool)> {
    voters
        .iter()
        .map(|id| {
            let m = c.nodes[id].raft().metrics().borrow().clone();
            (
                *id,
                m.current_leader,
                m.current_term,
                m.running_state.is_ok(),
            )
        })
        .collect()
}

/// A storage learner whose host runs a modified node answering every append with a vote above
/// the leader's, first the next term, then `u64::MAX`: the voters keep one leader in the same
/// term, every write through a follower commits (p99 within twice the figure with an honest
/// learner, plus scheduling slack), no voter's Raft core stops, and the forged answers are
/// refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_forging_higher_votes_cannot_depose_the_leader() {
    let mut c = three_voters_and_storage().await;
    let voters = [1, 2, 3].map(NodeId::new);
    let storage = NodeId::new(4);
    let leader = leader_of(&c);
    let follower = *voters.iter().find(|v| **v != leader).expect("a follower");
    let (honest, errors) = timed_writes(&c.nodes[&follower], follower, "honest", 20).await;
    assert!(errors.is_empty(), "honest writes failed: {errors:?}");

    // The storage host's agent is replaced by the rogue, with its identity, on its address.
    let id = identity_of(&c, storage);
    let port = c.ports[&storage];
    c.kill(storage).await;
    let rogue = Arc::new(ForgedVotes::new(storage, Forge::NextTerm));
    let net = wait::until_async("the storage node's port", Duration::from_secs(10), || {
        QuicNet::bind(addr(port), &id, &DenyList::default()).map_err(|e| e.to_string())
    })
    .await;
    let serving = net.serve(rogue.clone());
    let term = c.nodes[&leader].raft().metrics().borrow().current_term;

    for (mode, tag) in [(Forge::NextTerm, "next"), (Forge::MaxTerm, "max")] {
        rogue.set(mode);
        let from = rogue.forged.load(Ordering::Relaxed);
        wait::until_async(
            &format!("the leader to hear the rogue's {tag} forged answers"),
            Duration::from_secs(10),
            || {
                let n = rogue.forged.load(Ordering::Relaxed);
                if n >= from + 5 { Ok(()) } else { Err(n) }
            },
        )
        .await;
        let (took, errors) = timed_writes(&c.nodes[&follower], follower, tag, 20).await;
        let views = raft_views(&c, &voters);
        let bound = (p99(&honest) * 2).max(p99(&honest) + Duration::from_millis(250));
        eprintln!(
            "{tag}: honest p99 {:?}, with the rogue p99 {:?} (bound {bound:?}), {} forged answers, views {views:?}",
            p99(&honest),
            p99(&took),
            rogue.forged.load(Ordering::Relaxed)
        );
        assert!(errors.is_empty(), "{tag}: writes failed: {errors:?}");
        for (v, seen_leader, seen_term, running) in &views {
            assert!(running, "{tag}: node {v}'s Raft core stopped: {views:?}");
            assert_eq!(
                (*seen_leader, *seen_term),
                (Some(leader), term),
                "{tag}: node {v} no longer holds the leader in its term: {views:?}"
            );
        }
        let refused = c.nodes[&leader].counts().answers_refused;
        assert!(
            refused >= rogue.forged.load(Ordering::Relaxed).min(5),
            "{tag}: the leader counted {refused} refused answers"
        );
        assert!(
            p99(&took) <= bound,
            "{tag}: p99 {:?} above {bound:?}",
            p99(&took)
        );
    }
    serving.abort();
    net.close();
    c.shutdown().await;
}
