//! Routing: every write, read, admin operation, join and certificate renewal runs on the
//! leader. A node that leads runs it here ([`Inner::local`]); any other forwards it over QUIC
//! and routes again when the leadership moves, until the write deadline. A node's own request
//! is checked against the authority rules before it goes anywhere, so that an operator on a
//! storage node hears the refusal even when no leader is reachable (the leader checks again).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::state::{Inner, not_leader};
use crate::authority::{self, Action};
use crate::proto::{
    AdminOp, ConsensusError, JoinReply, JoinRequest, RegistryAt, Reply, Rpc, Written,
};
use crate::registry::{Registry, Request};

/// What can be routed to the leader.
#[derive(Clone)]
pub(super) enum Op {
    Write(Request),
    Read,
    /// A read for a backup: the whole registry and the log position it reflects.
    Snapshot,
    Admin(AdminOp),
    Join(JoinRequest),
    /// A new certificate for this node's identity, from this certificate request.
    Renew(String),
}

pub(super) enum Done {
    Written(Written),
    Registry(Registry),
    Snapshot(RegistryAt),
    Message(String),
    Joined(JoinReply),
    Renewed(String),
}

impl Op {
    pub(super) fn rpc(&self) -> Rpc {
        match self {
            Op::Write(req) => Rpc::Write { req: req.clone() },
            Op::Read => Rpc::Read,
            Op::Snapshot => Rpc::Snapshot,
            Op::Admin(op) => Rpc::Admin { op: op.clone() },
            Op::Join(join) => Rpc::Join { join: join.clone() },
            Op::Renew(csr) => Rpc::Renew {
                csr_pem: csr.clone(),
            },
        }
    }

    fn action(&self) -> Option<Action<'_>> {
        match self {
            Op::Write(req) => Some(Action::Write(req)),
            Op::Read => Some(Action::Read),
            Op::Snapshot => Some(Action::Snapshot),
            Op::Admin(op) => Some(Action::Admin(op)),
            Op::Renew(_) => Some(Action::Renew),
            // A stranger's join, which this voter forwards (checked where it came in).
            Op::Join(_) => None,
        }
    }
}

pub(super) fn done_of(reply: Reply) -> Result<Done, ConsensusError> {
    match reply {
        Reply::Written { res } => res.map(Done::Written),
        Reply::Registry { res } => res.map(Done::Registry),
        Reply::Snapshot { res } => res.map(Done::Snapshot),
        Reply::Done { res } => res.map(Done::Message),
        Reply::Joined { res } => res.map(Done::Joined),
        Reply::Renewed { res } => res.map(Done::Renewed),
        Reply::Refused { reason } => Err(ConsensusError::internal(format!(
            "the leader refused the request: {reason}"
        ))),
        _ => Err(ConsensusError::internal("an answer to another request")),
    }
}

pub(super) fn reply_of(done: Result<Done, ConsensusError>, op: &Op) -> Reply {
    match (op, done) {
        (Op::Write(_), Ok(Done::Written(w))) => Reply::Written { res: Ok(w) },
        (Op::Write(_), Err(e)) => Reply::Written { res: Err(e) },
        (Op::Read, Ok(Done::Registry(r))) => Reply::Registry { res: Ok(r) },
        (Op::Read, Err(e)) => Reply::Registry { res: Err(e) },
        (Op::Snapshot, Ok(Done::Snapshot(r))) => Reply::Snapshot { res: Ok(r) },
        (Op::Snapshot, Err(e)) => Reply::Snapshot { res: Err(e) },
        (Op::Admin(_), Ok(Done::Message(m))) => Reply::Done { res: Ok(m) },
        (Op::Admin(_), Err(e)) => Reply::Done { res: Err(e) },
        (Op::Join(_), Ok(Done::Joined(j))) => Reply::Joined { res: Ok(j) },
        (Op::Join(_), Err(e)) => Reply::Joined { res: Err(e) },
        (Op::Renew(_), Ok(Done::Renewed(c))) => Reply::Renewed { res: Ok(c) },
        (Op::Renew(_), Err(e)) => Reply::Renewed { res: Err(e) },
        _ => Reply::Refused {
            reason: "internal: mismatched answer".into(),
        },
    }
}

impl Inner {
    /// Sends `op` to the leader (or runs it here when this node leads), retrying while the
    /// leadership moves, until the write deadline.
    pub(super) async fn route(&self, op: Op) -> Result<Done, ConsensusError> {
        if let Some(action) = op.action() {
            let me = self.me_as_caller();
            if let Err(f) = authority::check(me, action) {
                self.refused(me, "own request", &f);
                return Err(ConsensusError::from(f));
            }
        }
        let until = Instant::now() + self.write_timeout;
        let mut metrics = self.raft.metrics();
        let mut last: ConsensusError;
        loop {
            let m = metrics.borrow_and_update().clone();
            if m.running_state.is_err() {
                return Err(ConsensusError::ShuttingDown);
            }
            match m.current_leader {
                Some(l) if l == self.id => match self.local(&op).await {
                    Err(ConsensusError::NoLeader) => last = ConsensusError::NoLeader,
                    other => return other,
                },
                Some(l) => {
                    let addr = m
                        .membership_config
                        .membership()
                        .get_node(&l)
                        .and_then(|n| n.addr.parse::<SocketAddr>().ok());
                    match addr {
                        None => last = ConsensusError::NoLeader,
                        Some(addr) => {
                            if matches!(op, Op::Write(_)) {
                                self.counters
                                    .writes_forwarded
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            let body =
                                serde_json::to_vec(&op.rpc()).map_err(ConsensusError::internal)?;
                            let left = until.saturating_duration_since(Instant::now());
                            let deadline =
                                left.max(Duration::from_millis(500)) + Duration::from_secs(1);
                            // If the leadership moves while the request is out (the leader
                            // died, or was deposed), route again at once rather than waiting
                            // out the deadline. A request abandoned this way may still have
                            // been applied: registry requests are idempotent, or refused as
                            // duplicates, so routing again is safe.
                            let mut watch = self.raft.metrics();
                            let moved = async move {
                                while watch.changed().await.is_ok() {
                                    if watch.borrow().current_leader != Some(l) {
                                        return;
                                    }
                                }
                                std::future::pending::<()>().await
                            };
                            let called = tokio::select! {
                                r = self.net.call(l, addr, &body, deadline) => Some(r),
                                () = moved => None,
                            };
                            match called {
                                None => last = ConsensusError::NoLeader,
                                Some(Ok(answer)) => {
                                    let reply: Reply = serde_json::from_slice(&answer)
                                        .map_err(ConsensusError::internal)?;
                                    match done_of(reply) {
                                        Err(ConsensusError::NoLeader) => {
                                            last = ConsensusError::NoLeader
                                        }
                                        other => return other,
                                    }
                                }
                                Some(Err(e)) => {
                                    last = ConsensusError::LeaderUnreachable {
                                        leader: l,
                                        message: e.to_string(),
                                    }
                                }
                            }
                        }
                    }
                }
                None => last = ConsensusError::NoLeader,
            }
            if Instant::now() >= until {
                if matches!(op, Op::Write(_)) {
                    self.counters.writes_failed.fetch_add(1, Ordering::Relaxed);
                }
                return Err(last);
            }
            // Wait for news of the leadership, or retry shortly.
            let _ = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await;
        }
    }

    /// Runs `op` on this node, which believes it leads. `NoLeader` means "route again".
    pub(super) async fn local(&self, op: &Op) -> Result<Done, ConsensusError> {
        match op {
            Op::Write(req) => self.write_local(req.clone()).await.map(Done::Written),
            Op::Read => {
                let _g = self.locks.handover.read().await;
                self.check_quorum(true).await?;
                Ok(Done::Registry(self.registry()))
            }
            Op::Snapshot => {
                let _g = self.locks.handover.read().await;
                self.check_quorum(true).await?;
                // ensure_linearizable waited until this node applied everything committed
                // before the read: the registry and its position are read together.
                let d = self.sm.data();
                let d = d
                    .read()
                    .map_err(|_| ConsensusError::internal("state machine lock poisoned"))?;
                let (index, term) = d
                    .last_applied
                    .map_or((0, 0), |l| (l.index, l.leader_id.term));
                Ok(Done::Snapshot(RegistryAt {
                    registry: d.registry.clone(),
                    index,
                    term,
                    leader: self.id,
                }))
            }
            Op::Admin(a) => self.admin_local(a.clone()).await.map(Done::Message),
            Op::Join(j) => self.join_local(j.clone()).await.map(Done::Joined),
            Op::Renew(csr) => self
                .renew_for(self.id, &self.me.key, csr)
                .await
                .map(Done::Renewed),
        }
    }

    /// Runs `op` here if this node leads; a forwarded request must not be forwarded again.
    pub(super) async fn local_if_leader(&self, op: &Op) -> Result<Done, ConsensusError> {
        if !self.is_leader() {
            return Err(not_leader());
        }
        self.local(op).await
    }
}
