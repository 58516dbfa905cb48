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
//!
//! **Calls to storage learners outlive openraft's deadline.** openraft gives every
//! AppendEntries one heartbeat interval (50 ms) and drops the call then. A storage node on a
//! busy host answers later than that, so every call to it timed out, was sent again in full
//! and timed out again: the learner never caught up, and its heartbeats, never recorded as
//! answered, all travelled. A call to a quiet target now runs on its own for up to
//! [`LEARNER_APPEND_TTL`], at most one at a time; openraft's next call to that target waits
//! for it, and takes its answer when the answer covers the new request (same vote, and the
//! learner now holds the new request's entries, or the same heartbeat), else sends the new
//! request. Only the learner's own answers are given back, so the reasoning above holds: a
//! learner's ack moves nothing but its own matching log id, and counts for neither commit
//! nor lease.
//!
//! **Answers are checked like requests.** openraft steps down for a higher vote in any
//! target's answer, learners included, and persists it. A learner has no vote: a higher vote
//! in its answer (an append's `HigherVote`, a snapshot answer's vote above the request's) is
//! refused here, counted and logged, and never reaches openraft; the leader hears of a newer
//! leader from the voters. From anyone, a term more than [`MAX_TERM_AHEAD`] above this node's
//! is refused the same way, so no answer can bring a term near `u64::MAX` (where the next
//! election's `term + 1` would overflow). A refused answer is a network error to openraft:
//! it retries after its backoff, as for a peer that did not answer. [`AnswerGuard`] holds
//! what the answers are checked against, kept current by the node.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

/// How long a call to a quiet target (a storage learner) may take to be answered: it runs
/// on past openraft's deadline of one heartbeat interval.
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

/// How far above this node's current term a term in an answer may be. Terms grow by one an
/// election, and a voter campaigns only after a pre-vote a majority granted: no honest peer is
/// this far ahead of a member that hears from the group.
pub const MAX_TERM_AHEAD: u64 = 1 << 16;

/// The highest term a request or an answer may carry, whatever this node's own: far above any
/// term a real group reaches (one election every 50 ms for over 400,000 years), and far enough
/// below `u64::MAX` that term arithmetic never overflows.
pub const TERM_CEILING: u64 = 1 << 48;

/// What Raft's answers are checked against: the voters of the effective membership and this
/// node's current term, kept current by the node; and the answers refused so far.
#[derive(Clone, Debug, Default)]
pub struct AnswerGuard(Arc<Guarded>);

#[derive(Debug, Default)]
struct Guarded {
    voters: RwLock<BTreeSet<NodeId>>,
    term: AtomicU64,
    refused: AtomicU64,
}

/// Why an answer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forged {
    /// A vote above the leader's from a node that is not a voter.
    VoteFromNonVoter,
    /// A term more than [`MAX_TERM_AHEAD`] above this node's, or above [`TERM_CEILING`].
    TermTooFar,
}

impl std::fmt::Display for Forged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Forged::VoteFromNonVoter => "a higher vote from a node that is not a voter",
            Forged::TermTooFar => "a term far above this node's",
        })
    }
}

impl AnswerGuard {
    /// Sets the voters of the effective membership (of every configuration of a joint one).
    pub fn set_voters(&self, voters: BTreeSet<NodeId>) {
        if let Ok(mut v) = self.0.voters.write()
            && *v != voters
        {
            *v = voters;
        }
    }

    /// Sets this node's current term.
    pub fn set_term(&self, term: u64) {
        self.0.term.store(term, Ordering::Relaxed);
    }

    /// Answers refused so far.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.0.voters.read().is_ok_and(|v| v.contains(&id))
    }

    /// Whether `from` may answer with `vote` to a request that carried `asked`.
    pub(crate) fn check(
        &self,
        from: NodeId,
        asked: &Vote<NodeId>,
        vote: &Vote<NodeId>,
    ) -> Result<(), Forged> {
        check_answer(
            self.is_voter(from),
            self.0.term.load(Ordering::Relaxed),
            asked,
            vote,
        )
    }

    /// Counts and logs a refused answer (the first, then at every power of two, so that a
    /// flood of them is seen without filling the log).
    fn refuse(&self, from: NodeId, vote: &Vote<NodeId>, why: Forged) {
        let n = self.0.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(peer = %from, term = vote.leader_id().term, refused = n, reason = %why, "Raft answer refused");
        } else {
            debug!(peer = %from, term = vote.leader_id().term, reason = %why, "Raft answer refused");
        }
    }
}

/// The rule [`AnswerGuard::check`] applies (pure): an answer's vote is refused when its term is
/// above [`TERM_CEILING`] or more than [`MAX_TERM_AHEAD`] above `term` (this node's), or,
/// from a node that is not a voter, when it is not at or below the vote of the request it
/// answers.
pub(crate) fn check_answer(
    from_voter: bool,
    term: u64,
    asked: &Vote<NodeId>,
    vote: &Vote<NodeId>,
) -> Result<(), Forged> {
    let t = vote.leader_id().term;
    if t > TERM_CEILING
        || t > term
            .max(asked.leader_id().term)
            .saturating_add(MAX_TERM_AHEAD)
    {
        return Err(Forged::TermTooFar);
    }
    let at_most_asked = matches!(
        vote.partial_cmp(asked),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    );
    if !from_voter && !at_most_asked {
        return Err(Forged::VoteFromNonVoter);
    }
    Ok(())
}

/// The network factory openraft uses.
#[derive(Clone)]
pub struct RaftNet {
    pub(crate) net: QuicNet,
    quiet: QuietTargets,
    guard: AnswerGuard,
}

impl RaftNet {
    /// Raft over this endpoint.
    pub fn new(net: QuicNet) -> RaftNet {
        RaftNet {
            net,
            quiet: QuietTargets::default(),
            guard: AnswerGuard::default(),
        }
    }

    /// What answers are checked against (a handle: the node keeps it current).
    pub fn guard(&self) -> AnswerGuard {
        self.guard.clone()
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
            to: Callee {
                net: self.net.clone(),
                target,
                addr: node.addr.parse().map_err(|_| node.addr.clone()),
            },
            quiet: self.quiet.clone(),
            guard: self.guard.clone(),
            beat: None,
            pending: None,
        }
    }
}

/// Raft RPCs to one peer.
pub struct RaftPeer {
    to: Callee,
    quiet: QuietTargets,
    guard: AnswerGuard,
    /// The last heartbeat that reached the peer and its success: what may be answered here.
    beat: Option<Beat>,
    /// The call to a quiet target still running, if openraft gave up waiting for it.
    pending: Option<Pending>,
}

/// Where a peer's calls go; cloned into a call that runs on its own.
#[derive(Clone)]
struct Callee {
    net: QuicNet,
    target: NodeId,
    addr: Result<SocketAddr, String>,
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>;

/// What an AppendEntries asked: enough to tell whether its answer covers another request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Asked {
    vote: Vote<NodeId>,
    prev_log_id: Option<LogId<NodeId>>,
    /// The last entry's log id; `prev_log_id` for a heartbeat.
    last: Option<LogId<NodeId>>,
    leader_commit: Option<LogId<NodeId>>,
    heartbeat: bool,
}

impl Asked {
    fn of(req: &AppendEntriesRequest<TypeConfig>) -> Asked {
        Asked {
            vote: req.vote,
            prev_log_id: req.prev_log_id,
            last: req.entries.last().map(|e| e.log_id).or(req.prev_log_id),
            leader_commit: req.leader_commit,
            heartbeat: req.entries.is_empty(),
        }
    }

    /// The answer `req` gets from the learner's `answer` to this request, when that answer
    /// says all `req` would learn: the same request answered anything; or, from the same
    /// leader, a success that leaves the learner holding `req`'s entries (`Success`, or
    /// `PartialSuccess` up to where it holds them), or a heartbeat with the same commit index
    /// and a `prev_log_id` the learner holds. `None`: `req` must travel.
    fn covers(
        &self,
        answer: &AppendEntriesResponse<NodeId>,
        req: &Asked,
    ) -> Option<AppendEntriesResponse<NodeId>> {
        if self == req {
            return Some(match answer {
                AppendEntriesResponse::Success => AppendEntriesResponse::Success,
                AppendEntriesResponse::PartialSuccess(m) => {
                    AppendEntriesResponse::PartialSuccess(*m)
                }
                AppendEntriesResponse::Conflict => AppendEntriesResponse::Conflict,
                AppendEntriesResponse::HigherVote(v) => AppendEntriesResponse::HigherVote(*v),
            });
        }
        let held = match answer {
            AppendEntriesResponse::Success => self.last,
            AppendEntriesResponse::PartialSuccess(m) => *m,
            _ => return None,
        };
        if req.vote != self.vote || held < req.prev_log_id {
            return None;
        }
        if req.heartbeat {
            return (req.leader_commit == self.leader_commit)
                .then_some(AppendEntriesResponse::Success);
        }
        if held >= req.last {
            Some(AppendEntriesResponse::Success)
        } else if held > req.prev_log_id {
            Some(AppendEntriesResponse::PartialSuccess(held))
        } else {
            None
        }
    }
}

/// A call to a quiet target running on its own.
struct Pending {
    asked: Asked,
    sent: Instant,
    answer: tokio::sync::oneshot::Receiver<AppendResult>,
}

/// A heartbeat the peer answered with success, and when it was sent.
struct Beat {
    asked: Asked,
    sent: Instant,
}

impl Beat {
    fn of(asked: &Asked, sent: Instant) -> Option<Beat> {
        asked.heartbeat.then_some(Beat {
            asked: *asked,
            sent,
        })
    }

    /// Whether `req` is the same heartbeat, within [`LEARNER_BEAT`] of the one that travelled.
    fn answers(&self, req: &Asked) -> bool {
        *req == self.asked && self.sent.elapsed() < LEARNER_BEAT
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

impl Callee {
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

    async fn append(&self, req: AppendEntriesRequest<TypeConfig>, ttl: Duration) -> AppendResult {
        let rpc = Rpc::AppendEntries { req };
        self.call(&rpc, ttl, |r| match r {
            Reply::AppendEntries { res } => Some(res),
            _ => None,
        })
        .await
    }
}

impl RaftPeer {
    /// Keeps a heartbeat the peer answered with success, to answer its repeats; anything
    /// else forgets the last one.
    fn record_beat(&mut self, asked: &Asked, sent: Instant, res: &AppendResult) {
        self.beat =
            Beat::of(asked, sent).filter(|_| matches!(res, Ok(AppendEntriesResponse::Success)));
    }

    /// The append, before its answer is checked.
    async fn append(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> AppendResult {
        let asked = Asked::of(&req);
        if !self.quiet.contains(self.to.target) {
            self.pending = None;
            let sent = Instant::now();
            let res = self.to.append(req, option.hard_ttl()).await;
            self.record_beat(&asked, sent, &res);
            return res;
        }
        // openraft drops this future at its deadline; a call still running stays in
        // `pending` for the next request.
        if let Some(p) = self.pending.as_mut() {
            let done = (&mut p.answer).await;
            let p = self.pending.take().expect("pending while awaited");
            if let Ok(res) = done {
                self.record_beat(&p.asked, p.sent, &res);
                if let Ok(answer) = &res
                    && let Some(covered) = p.asked.covers(answer, &asked)
                {
                    return Ok(covered);
                }
            }
        }
        if self.beat.as_ref().is_some_and(|b| b.answers(&asked)) {
            return Ok(AppendEntriesResponse::Success);
        }
        let (tx, answer) = tokio::sync::oneshot::channel();
        let to = self.to.clone();
        tokio::spawn(async move {
            let _ = tx.send(to.append(req, LEARNER_APPEND_TTL).await);
        });
        let sent = Instant::now();
        let p = self.pending.insert(Pending {
            asked,
            sent,
            answer,
        });
        let done = (&mut p.answer).await;
        self.pending = None;
        let res = done.unwrap_or_else(|_| {
            Err(RPCError::Network(NetworkError::new(&Message(
                "the call ended without an answer".to_string(),
            ))))
        });
        self.record_beat(&asked, sent, &res);
        res
    }

    /// `res` unless it carries a vote the guard refuses: then a network error.
    fn checked<T, E: std::error::Error>(
        &self,
        asked: &Vote<NodeId>,
        vote: Option<&Vote<NodeId>>,
        res: Result<T, RPCError<NodeId, BasicNode, E>>,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        let Some(vote) = vote else { return res };
        match self.guard.check(self.to.target, asked, vote) {
            Ok(()) => res,
            Err(why) => {
                self.guard.refuse(self.to.target, vote, why);
                Err(refused(&format!("answer refused: {why}")))
            }
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
    ) -> AppendResult {
        let asked = req.vote;
        let res = self.append(req, option).await;
        let vote = match &res {
            Ok(AppendEntriesResponse::HigherVote(v)) => Some(*v),
            _ => None,
        };
        self.checked(&asked, vote.as_ref(), res)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let asked = req.vote;
        let rpc = Rpc::InstallSnapshot { req };
        let res = self
            .to
            .call(&rpc, option.hard_ttl(), |r| match r {
                Reply::InstallSnapshot { res } => Some(res),
                _ => None,
            })
            .await;
        let vote = res.as_ref().ok().map(|r| r.vote);
        self.checked(&asked, vote.as_ref(), res)
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let asked = req.vote;
        let rpc = Rpc::Vote { req };
        let res = self
            .to
            .call(&rpc, option.hard_ttl(), |r| match r {
                Reply::Vote { res } => Some(res),
                _ => None,
            })
            .await;
        // A voter's answer may carry a higher vote (it voted for another candidate): only
        // its distance from this node's term is checked.
        let vote = res.as_ref().ok().map(|r| r.vote);
        self.checked(&asked, vote.as_ref(), res)
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

    fn append(term: u64, prev: u64, last: u64, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        let mut req = beat(term, prev, commit);
        for i in prev + 1..=last {
            req.entries.push(Entry {
                log_id: log_id(term, i),
                payload: EntryPayload::Blank,
            });
        }
        req
    }

    #[test]
    fn a_vote_in_an_answer_is_checked_by_who_sent_it_and_how_far_it_goes() {
        let asked = Vote::new_committed(5, NodeId::from(1u64));
        let higher = Vote::new(6, NodeId::from(4u64));
        // A voter may know a newer leader; a learner may not depose one.
        assert_eq!(check_answer(true, 5, &asked, &higher), Ok(()));
        assert_eq!(
            check_answer(false, 5, &asked, &higher),
            Err(Forged::VoteFromNonVoter)
        );
        // A learner's honest answer: the leader's own vote, or one below it.
        assert_eq!(check_answer(false, 5, &asked, &asked), Ok(()));
        assert_eq!(
            check_answer(
                false,
                5,
                &asked,
                &Vote::new_committed(4, NodeId::from(2u64))
            ),
            Ok(())
        );
        // From anyone: not far above this node's term, never near u64::MAX.
        let far = Vote::new(5 + MAX_TERM_AHEAD + 1, NodeId::from(2u64));
        assert_eq!(check_answer(true, 5, &asked, &far), Err(Forged::TermTooFar));
        let edge = Vote::new(5 + MAX_TERM_AHEAD, NodeId::from(2u64));
        assert_eq!(check_answer(true, 5, &asked, &edge), Ok(()));
        let max = Vote::new(u64::MAX, NodeId::from(2u64));
        assert_eq!(
            check_answer(true, u64::MAX - 1, &asked, &max),
            Err(Forged::TermTooFar),
            "above the ceiling whatever this node's term"
        );
    }

    #[test]
    fn an_answer_covers_only_what_the_learner_then_holds() {
        use AppendEntriesResponse::{Conflict, PartialSuccess, Success};
        let batch = Asked::of(&append(2, 10, 20, 9));
        // The same request: whatever it was answered.
        assert_eq!(batch.covers(&Success, &batch), Some(Success));
        assert_eq!(batch.covers(&Conflict, &batch), Some(Conflict));
        // The learner holds up to 20: a retry from 10 to 25 has 20 of its entries held.
        assert_eq!(
            batch.covers(&Success, &Asked::of(&append(2, 10, 25, 9))),
            Some(PartialSuccess(Some(log_id(2, 20))))
        );
        assert_eq!(
            batch.covers(&Success, &Asked::of(&append(2, 12, 18, 9))),
            Some(Success),
            "entries all held"
        );
        assert_eq!(
            batch.covers(&Success, &Asked::of(&append(2, 20, 30, 9))),
            None,
            "nothing of it held: it travels"
        );
        assert_eq!(
            batch.covers(&Success, &Asked::of(&append(2, 21, 30, 9))),
            None,
            "a prev_log_id past what is held"
        );
        assert_eq!(
            batch.covers(&Success, &Asked::of(&append(3, 10, 25, 9))),
            None,
            "another leader's request travels"
        );
        assert_eq!(
            batch.covers(&Conflict, &Asked::of(&append(2, 10, 25, 9))),
            None,
            "a conflict answers only its own request"
        );
        // Heartbeats: held prev and the same commit index, or they travel.
        assert_eq!(
            batch.covers(&Success, &Asked::of(&beat(2, 15, 9))),
            Some(Success)
        );
        assert_eq!(
            batch.covers(&Success, &Asked::of(&beat(2, 15, 12))),
            None,
            "a new commit index travels"
        );
        assert_eq!(batch.covers(&Success, &Asked::of(&beat(2, 21, 9))), None);
        // A partial success holds only what it says.
        let partial = PartialSuccess(Some(log_id(2, 15)));
        assert_eq!(
            batch.covers(&partial, &Asked::of(&append(2, 10, 20, 10))),
            Some(PartialSuccess(Some(log_id(2, 15))))
        );
    }

    #[test]
    fn only_the_same_heartbeat_within_the_learner_beat_is_answered_again() {
        let sent = Instant::now();
        let last = Beat::of(&Asked::of(&beat(2, 10, 9)), sent).expect("a heartbeat");
        assert!(
            last.answers(&Asked::of(&beat(2, 10, 9))),
            "the same heartbeat"
        );
        assert!(
            !last.answers(&Asked::of(&beat(3, 10, 9))),
            "a new term travels"
        );
        assert!(
            !last.answers(&Asked::of(&beat(2, 11, 9))),
            "another prev_log_id travels"
        );
        assert!(
            !last.answers(&Asked::of(&beat(2, 10, 10))),
            "a new commit index travels"
        );
        let mut entries = beat(2, 10, 9);
        entries.entries.push(Entry {
            log_id: log_id(2, 11),
            payload: EntryPayload::Blank,
        });
        assert!(!last.answers(&Asked::of(&entries)), "entries travel");
        assert!(
            Beat::of(&Asked::of(&entries), sent).is_none(),
            "entries are no heartbeat"
        );
        let old = Beat::of(&Asked::of(&beat(2, 10, 9)), sent - LEARNER_BEAT).expect("a heartbeat");
        assert!(
            !old.answers(&Asked::of(&beat(2, 10, 9))),
            "one heartbeat per LEARNER_BEAT travels"
        );
    }
}
