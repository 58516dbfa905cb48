//! The leader's primitives: confirm a quorum, write locally, change the Raft membership, and
//! record the cluster's identity. Everything that changes state on the leader goes through
//! these; they never route anywhere (see [`super::route`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::state::{Inner, not_leader};
use crate::proto::{ConsensusError, Written};
use crate::registry::{ClusterInfo, Request};
use quorate_base::now_ms;

use quorate_base::NodeId;
use tracing::debug;

/// How long a membership change may take.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a quorum check stays good for writes that follow it.
const QUORUM_FRESH: Duration = Duration::from_millis(100);

impl Inner {
    /// Confirms that this node leads with a majority behind it, at most every
    /// [`QUORUM_FRESH`] (always when `fresh`).
    ///
    /// Callers that arrive while a check is under way wait for the next one, which starts after
    /// all of them arrived, and share its answer (etcd batches its ReadIndex rounds the same
    /// way): a bulk start of hundreds of joiners costs a few rounds of heartbeats to the voters,
    /// not one each, retried every 50 ms when the voters answer late.
    pub(super) async fn check_quorum(&self, fresh: bool) -> Result<(), ConsensusError> {
        if !fresh
            && let Ok(q) = self.quorum_ok.lock()
            && q.is_some_and(|t| t.elapsed() < QUORUM_FRESH)
        {
            return Ok(());
        }
        loop {
            let checked = self
                .locks
                .quorum_checks
                .submit((), &self.locks.confirming, |_| self.confirm_quorum())
                .await;
            // `None`: the caller running the check that carried this one went away half way;
            // ask again (a check changes nothing).
            if let Some(outcome) = checked {
                return outcome;
            }
        }
    }

    /// One quorum check: a check that fails is tried again for up to a second (a fresh leader
    /// may still be dialing its followers) before the answer is no.
    async fn confirm_quorum(&self) -> Result<(), ConsensusError> {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            self.counters.quorum_checks.fetch_add(1, Ordering::Relaxed);
            let r =
                tokio::time::timeout(Duration::from_secs(1), self.raft.ensure_linearizable()).await;
            match r {
                Ok(Ok(_)) => {
                    if let Ok(mut q) = self.quorum_ok.lock() {
                        *q = Some(Instant::now());
                    }
                    return Ok(());
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                    return Err(not_leader());
                }
                Ok(Err(RaftError::Fatal(_))) => return Err(ConsensusError::ShuttingDown),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                    if Instant::now() >= until {
                        return Err(ConsensusError::NoQuorum);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub(super) async fn write_local(&self, req: Request) -> Result<Written, ConsensusError> {
        let _g = self.locks.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        self.check_quorum(false).await?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.write_timeout, self.raft.client_write(req)).await {
            Ok(Ok(resp)) => Ok(Written {
                outcome: resp.data,
                index: resp.log_id.index,
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(not_leader()),
            Ok(Err(RaftError::APIError(e))) => Err(ConsensusError::membership(e)),
            Ok(Err(RaftError::Fatal(_))) => Err(ConsensusError::ShuttingDown),
            Err(_) => Err(ConsensusError::Timeout {
                ms: self.write_timeout.as_millis() as u64,
            }),
        }
    }

    pub(super) async fn change(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), ConsensusError> {
        // One change at a time from this node; one already under way (the autopilot's, an
        // operator's) is waited for, not failed on.
        let _one = self.locks.changing.lock().await;
        self.change_locked(changes, retain).await
    }

    /// [`Inner::change`], with `locks.changing` held by the caller.
    async fn change_locked(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), ConsensusError> {
        let until = Instant::now() + CHANGE_DEADLINE;
        loop {
            self.counters
                .membership_changes
                .fetch_add(1, Ordering::Relaxed);
            let left = until.saturating_duration_since(Instant::now());
            let r =
                tokio::time::timeout(left, self.raft.change_membership(changes.clone(), retain))
                    .await;
            match r {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    return Err(not_leader());
                }
                Ok(Err(RaftError::APIError(e))) => return Err(ConsensusError::membership(e)),
                Ok(Err(RaftError::Fatal(_))) => return Err(ConsensusError::ShuttingDown),
                Err(_) => {
                    return Err(ConsensusError::Timeout {
                        ms: CHANGE_DEADLINE.as_millis() as u64,
                    });
                }
            }
        }
    }

    /// Adds a learner. Learners admitted while a membership change is under way are added
    /// together, in the next change ([`super::batch`]).
    pub(super) async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), ConsensusError> {
        let changed = self
            .locks
            .learners
            .submit((id, addr), &self.locks.changing, |learners| async move {
                let nodes: BTreeMap<NodeId, BasicNode> = learners
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode { addr }))
                    .collect();
                if nodes.len() > 1 {
                    debug!(
                        learners = nodes.len(),
                        "adding learners in one membership change"
                    );
                }
                self.change_locked(ChangeMembers::AddNodes(nodes), true)
                    .await
            })
            .await;
        // `None`: the change that carried this learner was dropped half way; the joiner asks
        // again.
        changed.unwrap_or(Err(ConsensusError::Timeout {
            ms: CHANGE_DEADLINE.as_millis() as u64,
        }))
    }

    /// Writes on the leader and insists the registry accepted.
    pub(super) async fn write_ok(&self, req: Request) -> Result<(), ConsensusError> {
        let w = self.write_local(req).await?;
        w.outcome.map_err(ConsensusError::membership)
    }

    /// Records the cluster's identity (and settings) when this node bootstrapped it and the
    /// registry lacks it (also after a crash half way through a bootstrap).
    pub(super) async fn ensure_cluster(&self) -> Result<(), ConsensusError> {
        if self.registry().cluster.is_some() || !self.me.cluster.bootstrapped {
            return Ok(());
        }
        let _one = self.locks.initializing.lock().await;
        if self.registry().cluster.is_some() {
            return Ok(());
        }
        let w = self
            .write_local(Request::InitCluster {
                cluster: ClusterInfo {
                    id: self.me.cluster.cluster_id.clone(),
                    name: self.me.cluster.cluster_name.clone(),
                    created_ms: now_ms(),
                },
            })
            .await?;
        match w.outcome {
            Ok(()) => Ok(()),
            Err(crate::Refusal::AlreadyInitialized { id }) if id == self.me.cluster.cluster_id => {
                Ok(())
            }
            Err(r) => Err(ConsensusError::membership(r)),
        }
    }
}
