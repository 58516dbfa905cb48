//! Raft's network over QUIC: openraft's `RaftNetworkFactory` and `RaftNetwork` on [`QuicNet`].
//!
//! A peer that cannot be dialed is `Unreachable`, which makes openraft back off (100 ms, see
//! [`RaftPeer::backoff`]) instead of retrying at once; a connection that breaks mid-call is a
//! `Network` error.
//!
//! **Heartbeats to storage learners.** openraft 0.9 sends a heartbeat every
//! `heartbeat_interval` (50 ms) to every target, learners included: 200 storage nodes are
//! 4,000 QUIC round trips a second for the leader. To a [`QuietTargets`] member (a learner
//! the registry records as a storage node) only one heartbeat per [`LEARNER_BEAT`] travels;
//! the others are answered here with the answer the learner gave to the same request, when it
//! is the same request: no entries, the same vote, the same `prev_log_id`, the same
//! `leader_commit`. Anything else (entries, a new commit index, a new term, a conflict, an
//! error) goes to the learner at once, so replication and commit propagation are as before;
//! only the learner's liveness is checked every 500 ms instead of every 50 ms.
//!
//! Why this is safe: the answer is one the learner gave to this very request within
//! [`LEARNER_BEAT`], so it tells the leader nothing it did not know — the matching log id
//! stays the one the learner confirmed. A learner has no vote: its acks count for neither the
//! commit index nor the leader lease (openraft's clock progress counts voters only), so an
//! answer given here cannot make the leader believe in a quorum it does not have. A storage
//! node is never promoted to voter (its registry role stays storage; only voter-role records
//! are promoted), and a target is quiet only while Raft's effective membership lists it as a
//! learner, so a voter's heartbeats always travel. A learner that died is found out within
//! [`LEARNER_BEAT`] (its next real heartbeat fails), and nothing waits on that: learners
//! never hold anything up.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId, Vote};

use crate::TypeConfig;
use crate::proto::{Reply, Rpc};
use crate::quic::{CallError, QuicNet};

use quorate_base::NodeId;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

/// How long entries to a quiet target (a storage learner) may take to be acknowledged.
pub(crate) const LEARNER_APPEND_TTL: Duration = Duration::from_secs(2);

/// How often a heartbeat reaches a quiet target (a storage learner): one in ten of the
/// leader's heartbeats.
pub const LEARNER_BEAT: Duration = Duration::from_millis(500);

/// The targets whose heartbeats may be answered between real ones ([`LEARNER_BEAT`]): the
/// learners of the effective membership that the registry records as storage nodes. Kept by
/// the node as both change; empty by default (every heartbeat travels).
#[derive(Clone, Debug, Default)]
pub struct QuietTargets(Arc<RwLock<BTreeSet<NodeId>>>);

impl QuietTargets {
    /// Replaces the set.
    pub fn set(&self, ids: BTreeSet<NodeId>) {
        if let Ok(mut s) = self.0.write()
            && *s != ids
        {
            *s = ids;
        }
    }

    /// Whether `id` is quiet.
    pub fn contains(&self, id: NodeId) -> bool {
        self.0.read().is_ok_and(|s| s.contains(&id))
    }
}

/// The network factory openraft uses.
#[derive(Clone)]
pub struct RaftNet {
    pub(crate) net: QuicNet,
    quiet: QuietTargets,
}

impl RaftNet {
    /// Raft over this endpoint.
    pub fn new(net: QuicNet) -> RaftNet {
        RaftNet {
            net,
            quiet: QuietTargets::default(),
        }
    }

    /// The set of quiet targets this network reads (a handle: the node keeps it current).
    pub fn quiet(&self) -> QuietTargets {
        self.quiet.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        RaftPeer {
            net: self.net.clone(),
            target,
            addr: node.addr.parse().map_err(|_| node.addr.clone()),
            quiet: self.quiet.clone(),
            beat: None,
        }
    }
}

/// Raft RPCs to one peer.
pub struct RaftPeer {
    net: QuicNet,
    target: NodeId,
    addr: Result<SocketAddr, String>,
    quiet: QuietTargets,
    /// The last heartbeat that reached the peer and its success: what may be answered here.
    beat: Option<Beat>,
}

/// A heartbeat the peer answered with success, and when it was sent.
struct Beat {
    vote: Vote<NodeId>,
    prev_log_id: Option<LogId<NodeId>>,
    leader_commit: Option<LogId<NodeId>>,
    sent: Instant,
}

impl Beat {
    fn of(req: &AppendEntriesRequest<TypeConfig>, sent: Instant) -> Option<Beat> {
        req.entries.is_empty().then_some(Beat {
            vote: req.vote,
            prev_log_id: req.prev_log_id,
            leader_commit: req.leader_commit,
            sent,
        })
    }

    /// Whether `req` is the same heartbeat, within [`LEARNER_BEAT`] of the one that travelled.
    fn answers(&self, req: &AppendEntriesRequest<TypeConfig>) -> bool {
        req.entries.is_empty()
            && req.vote == self.vote
            && req.prev_log_id == self.prev_log_id
            && req.leader_commit == self.leader_commit
            && self.sent.elapsed() < LEARNER_BEAT
    }
}

fn failed<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

fn refused<E: std::error::Error>(reason: &str) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&Message(format!(
        "refused by the peer: {reason}"
    ))))
}

impl RaftPeer {
    /// Sends `rpc` and takes the answer `pick` expects: the remote's `Result`, whose error
    /// becomes a `RemoteError`. A refusal or an answer to another request is a network error.
    async fn call<T, E: std::error::Error>(
        &self,
        rpc: &Rpc,
        ttl: Duration,
        pick: impl FnOnce(Reply) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let addr = match &self.addr {
            Ok(a) => *a,
            Err(bad) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Message(format!(
                    "node {} has no valid address ({bad:?})",
                    self.target
                )))));
            }
        };
        let body = serde_json::to_vec(rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&Message(e.to_string()))))?;
        let answer = self
            .net
            .call(self.target, addr, &body, ttl)
            .await
            .map_err(failed)?;
        let reply: Reply = serde_json::from_slice(&answer).map_err(|e| {
            RPCError::Network(NetworkError::new(&Message(format!(
                "unreadable answer: {e}"
            ))))
        })?;
        if let Reply::Refused { reason } = &reply {
            return Err(refused(reason));
        }
        match pick(reply) {
            Some(res) => res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            None => Err(refused("an answer to another request")),
        }
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    /// 100 ms between attempts to an unreachable peer, not openraft's 500 ms: heartbeats are
    /// drained during a backoff, and a peer that comes back must hear from the leader before
    /// its own election timeout (300 to 400 ms) or it campaigns and disrupts the group. The
    /// cost is small: a call to a peer being dialed returns at its deadline without dialing
    /// again (one dial at a time per peer), and the log says once that the peer is down.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if self.beat.as_ref().is_some_and(|b| b.answers(&req)) && self.quiet.contains(self.target) {
            return Ok(AppendEntriesResponse::Success);
        }
        let sent = Instant::now();
        let beat = Beat::of(&req, sent);
        // openraft gives every AppendEntries the heartbeat interval (50 ms) to complete; a
        // storage learner catching up takes the log in batches of hundreds of entries, which a
        // busy host does not take in 50 ms, and a batch that times out is sent again from the
        // start, for ever. Entries to a quiet target get `LEARNER_APPEND_TTL`: only that
        // learner's stream waits, and its acks count for neither commit nor lease.
        let ttl = if !req.entries.is_empty() && self.quiet.contains(self.target) {
            option.hard_ttl().max(LEARNER_APPEND_TTL)
        } else {
            option.hard_ttl()
        };
        let rpc = Rpc::AppendEntries { req };
        let res = self
            .call(&rpc, ttl, |r| match r {
                Reply::AppendEntries { res } => Some(res),
                _ => None,
            })
            .await;
        self.beat = match &res {
            Ok(AppendEntriesResponse::Success) => beat,
            _ => None,
        };
        res
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let rpc = Rpc::InstallSnapshot { req };
        self.call(&rpc, option.hard_ttl(), |r| match r {
            Reply::InstallSnapshot { res } => Some(res),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let rpc = Rpc::Vote { req };
        self.call(&rpc, option.hard_ttl(), |r| match r {
            Reply::Vote { res } => Some(res),
            _ => None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, NodeId::from(1u64)), index)
    }

    fn beat(term: u64, prev: u64, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, NodeId::from(1u64)),
            prev_log_id: Some(log_id(term, prev)),
            leader_commit: Some(log_id(term, commit)),
            entries: vec![],
        }
    }

    #[test]
    fn only_the_same_heartbeat_within_the_learner_beat_is_answered_again() {
        let sent = Instant::now();
        let last = Beat::of(&beat(2, 10, 9), sent).expect("a heartbeat");
        assert!(last.answers(&beat(2, 10, 9)), "the same heartbeat");
        assert!(!last.answers(&beat(3, 10, 9)), "a new term travels");
        assert!(
            !last.answers(&beat(2, 11, 9)),
            "another prev_log_id travels"
        );
        assert!(
            !last.answers(&beat(2, 10, 10)),
            "a new commit index travels"
        );
        let mut entries = beat(2, 10, 9);
        entries.entries.push(Entry {
            log_id: log_id(2, 11),
            payload: EntryPayload::Blank,
        });
        assert!(!last.answers(&entries), "entries travel");
        assert!(
            Beat::of(&entries, sent).is_none(),
            "entries are no heartbeat"
        );
        let old = Beat::of(&beat(2, 10, 9), sent - LEARNER_BEAT).expect("a heartbeat");
        assert!(
            !old.answers(&beat(2, 10, 9)),
            "one heartbeat per LEARNER_BEAT travels"
        );
    }
}
