//! Membership changes on the leader: the operator's admin operations (promote, demote,
//! remove, leave), the leadership hand-over, and the autopilot's rounds (the policy is
//! [`crate::autopilot`], pure; this is its driver). Each is checked against the group's
//! current membership and goes through [`super::leader`]'s primitives.
//!
//! **Leadership hand-over** (openraft 0.9 has no `transfer_leader`): the leader stops its
//! heartbeats and its own candidacy, waits until the chosen voter has every entry and until
//! the followers' leader lease has run out (`election_timeout_max`), then tells that voter to
//! campaign. Its log is the longest and it starts first, so it wins; the old leader becomes a
//! follower and resumes normal timers. Writes arriving meanwhile wait and then go to the new
//! leader.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ChangeMembers};
use tracing::{debug, info, warn};

use super::state::{Inner, lag_of, not_leader};
use crate::autopilot::{self, Action, Facts};
use crate::proto::{AdminOp, ConsensusError, Reply, Rpc};
use crate::registry::{NodeStatus, Registry, Request, Role};

use quorate_base::NodeId;

/// Most voters a group may have.
const MAX_VOTERS: usize = 7;

impl Inner {
    pub(super) async fn admin_local(&self, op: AdminOp) -> Result<String, ConsensusError> {
        if let AdminOp::StepDown { to } = op {
            return self.step_down(to).await;
        }
        // A change that takes the leader itself out of voting hands leadership over first,
        // and is then routed to the new leader.
        let me_going = match &op {
            AdminOp::Demote { node } | AdminOp::Remove { node } | AdminOp::Leave { node } => {
                *node == self.id
            }
            _ => false,
        };
        if me_going {
            if let AdminOp::Leave { node } = &op {
                let _ = self.mark_leaving(*node).await;
            }
            self.step_down(None).await?;
            return Err(not_leader());
        }
        let _g = self.locks.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        self.check_quorum(true).await?;
        let (voters, learners) = self.voters_learners();
        let registry = self.registry();
        let name = |id: NodeId| id.to_string();
        match op {
            AdminOp::Promote { node } => {
                if voters.contains(&node) {
                    return Ok(format!("{} is a voter already", name(node)));
                }
                if !learners.contains(&node) {
                    return Err(ConsensusError::membership(format!(
                        "{} is not a learner of this cluster",
                        name(node)
                    )));
                }
                if registry.nodes.get(&node).map(|n| n.role) != Some(Role::Voter) {
                    return Err(ConsensusError::membership(format!(
                        "{} has the storage role: storage nodes are learners for life",
                        name(node)
                    )));
                }
                if voters.len() >= MAX_VOTERS {
                    return Err(ConsensusError::membership(format!(
                        "the group has {MAX_VOTERS} voters, the most it may have"
                    )));
                }
                let lag = lag_of(&self.metrics(), node);
                if !matches!(lag, Some(l) if l <= autopilot::MAX_LAG) {
                    return Err(ConsensusError::membership(format!(
                        "{} has not caught up yet (it lags {} entries); try again shortly",
                        name(node),
                        lag.map_or("an unknown number of".to_string(), |l| l.to_string())
                    )));
                }
                if let Ok(mut h) = self.pilot.held_back.lock() {
                    h.remove(&node);
                }
                self.change(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
                    .await?;
                info!(node = name(node), "promoted to voter");
                Ok(format!("{} is a voter", name(node)))
            }
            AdminOp::Demote { node } => {
                if !voters.contains(&node) {
                    return Err(ConsensusError::membership(format!(
                        "{} is not a voter",
                        name(node)
                    )));
                }
                if voters.len() <= 1 {
                    return Err(ConsensusError::membership(
                        "the last voter cannot be demoted",
                    ));
                }
                if let Ok(mut h) = self.pilot.held_back.lock() {
                    h.insert(node);
                }
                self.change(ChangeMembers::RemoveVoters(BTreeSet::from([node])), true)
                    .await?;
                info!(node = name(node), "demoted to learner");
                Ok(format!(
                    "{} is a learner; the autopilot will not promote it again (promote it to undo)",
                    name(node)
                ))
            }
            AdminOp::Remove { node } | AdminOp::Leave { node } => {
                if matches!(op, AdminOp::Leave { .. }) {
                    self.mark_leaving(node).await?;
                }
                self.remove(node, &voters, &learners, &registry).await?;
                Ok(format!("{} is no longer a member", name(node)))
            }
            AdminOp::StepDown { .. } => Err(ConsensusError::internal("handled above")),
        }
    }

    pub(super) async fn mark_leaving(&self, node: NodeId) -> Result<(), ConsensusError> {
        if self.registry().nodes.contains_key(&node) {
            self.write_ok(Request::MarkLeaving { node }).await?;
        }
        Ok(())
    }

    pub(super) async fn remove(
        &self,
        node: NodeId,
        voters: &BTreeSet<NodeId>,
        learners: &BTreeSet<NodeId>,
        registry: &Registry,
    ) -> Result<(), ConsensusError> {
        if voters.contains(&node) {
            if voters.len() <= 1 {
                return Err(ConsensusError::membership(
                    "the last voter cannot be removed",
                ));
            }
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([node])), false)
                .await?;
        } else if !learners.contains(&node) && !registry.nodes.contains_key(&node) {
            return Err(ConsensusError::membership(format!(
                "{node} is not a member of this cluster"
            )));
        }
        // A learner goes as a node, read from the membership as it is now: a demotion that
        // committed after `voters` was read (the autopilot demotes a voter that is leaving)
        // made this one a learner, which RemoveVoters leaves in place.
        if self.voters_learners().1.contains(&node) {
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await?;
        }
        if registry.nodes.contains_key(&node) {
            self.write_ok(Request::RemoveNode { node }).await?;
        }
        if let Ok(mut h) = self.pilot.held_back.lock() {
            h.remove(&node);
        }
        info!(node = node.to_string(), "removed from the cluster");
        Ok(())
    }

    /// Hands leadership to `to` or the most caught-up other voter.
    pub(super) async fn step_down(&self, to: Option<NodeId>) -> Result<String, ConsensusError> {
        let _g = self.locks.handover.write().await;
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Err(not_leader());
        }
        let others: Vec<NodeId> = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id)
            .collect();
        let target = match to {
            Some(t) if others.contains(&t) => t,
            Some(t) => {
                return Err(ConsensusError::membership(format!(
                    "{t} is not another voter of this cluster"
                )));
            }
            None => others
                .iter()
                .copied()
                .min_by_key(|v| (lag_of(&m, *v).unwrap_or(u64::MAX), *v))
                .ok_or_else(|| {
                    ConsensusError::membership(
                        "no other voter to hand leadership to (add voters first)",
                    )
                })?,
        };
        let addr = m
            .membership_config
            .membership()
            .get_node(&target)
            .and_then(|n| n.addr.parse::<SocketAddr>().ok())
            .ok_or_else(|| ConsensusError::internal("the successor has no address"))?;
        info!(to = target.to_string(), "handing leadership over");
        self.raft.runtime_config().heartbeat(false);
        self.campaign.allow(false);
        let result = self.hand_over(target, addr).await;
        self.raft.runtime_config().heartbeat(true);
        self.campaign.allow(true);
        match result {
            Ok(new) => {
                info!(leader = new.to_string(), "leadership handed over");
                Ok(format!("leadership handed over to {new}"))
            }
            Err(e) => {
                warn!(error = %e, "leadership hand-over failed; still leading");
                Err(e)
            }
        }
    }

    pub(super) async fn hand_over(
        &self,
        target: NodeId,
        addr: SocketAddr,
    ) -> Result<NodeId, ConsensusError> {
        let started = Instant::now();
        // The successor must hold every entry, so that it wins the election.
        let caught_up = self
            .raft
            .wait(Some(Duration::from_secs(3)))
            .metrics(|m| lag_of(m, target) == Some(0), "successor caught up")
            .await;
        if caught_up.is_err() {
            return Err(ConsensusError::membership(format!(
                "{target} did not catch up within 3 s"
            )));
        }
        // With no heartbeats, the followers' leader lease runs out; then they grant votes.
        let lease_end = started + self.campaign.lease() + Duration::from_millis(25);
        tokio::time::sleep_until(lease_end.into()).await;
        let body = serde_json::to_vec(&Rpc::Elect).map_err(ConsensusError::internal)?;
        let answer = self
            .net
            .call(target, addr, &body, Duration::from_secs(2))
            .await
            .map_err(|e| ConsensusError::membership(format!("the successor: {e}")))?;
        match serde_json::from_slice::<Reply>(&answer) {
            Ok(Reply::Done { res: Ok(_) }) => {}
            Ok(Reply::Done { res: Err(e) }) => return Err(e),
            _ => return Err(ConsensusError::internal("the successor did not understand")),
        }
        let id = self.id;
        let m = self
            .raft
            .wait(Some(Duration::from_secs(3)))
            .metrics(
                move |m| m.current_leader.is_some_and(|l| l != id),
                "a new leader",
            )
            .await
            .map_err(|_| ConsensusError::membership("no new leader within 3 s"))?;
        Ok(m.current_leader.unwrap_or(target))
    }

    /// One autopilot round on the leader; true when a promotion waits only for a learner to
    /// catch up (look again soon).
    pub(super) async fn autopilot_round(&self) -> Result<bool, ConsensusError> {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Ok(false);
        }
        self.ensure_cluster().await?;
        let registry = self.registry();
        let mem = m.membership_config.membership();
        // A membership change in progress (joint config) is left to finish.
        if m.membership_config.membership().get_joint_config().len() > 1 {
            return Ok(false);
        }
        let now = Instant::now();
        let facts = Facts {
            leader: self.id,
            voters: mem.voter_ids().collect(),
            learners: mem.learner_ids().collect(),
            roles: registry.nodes.iter().map(|(id, n)| (*id, n.role)).collect(),
            leaving: registry
                .nodes
                .iter()
                .filter(|(_, n)| n.status == NodeStatus::Leaving)
                .map(|(id, _)| *id)
                .collect(),
            lag: mem.nodes().map(|(id, _)| (*id, lag_of(&m, *id))).collect(),
            target: usize::from(registry.settings.voter_target.max(1)),
            held_back: self
                .pilot
                .held_back
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default(),
            moved: mem
                .nodes()
                .filter_map(|(id, n)| {
                    let rec = registry.nodes.get(id)?;
                    (rec.raft_addr != n.addr).then(|| (*id, rec.raft_addr.clone()))
                })
                .collect(),
            failed_for: self
                .pilot
                .failed_since
                .lock()
                .map(|f| {
                    f.iter()
                        .map(|(id, t)| (*id, now.duration_since(*t)))
                        .collect()
                })
                .unwrap_or_default(),
            grace: self.pilot.grace.lock().map(|g| *g).unwrap_or(None),
        };
        let pending = autopilot::promotion_pending(&facts);
        let Some(action) = autopilot::next_action(&facts) else {
            return Ok(pending);
        };
        let _g = self.locks.handover.read().await;
        if !self.is_leader() {
            return Ok(false);
        }
        info!(action = ?action, "autopilot");
        let done = match action {
            Action::UpdateAddrs(addrs) => {
                let nodes = addrs
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode { addr }))
                    .collect();
                self.change(ChangeMembers::SetNodes(nodes), true).await
            }
            Action::Promote(ids) => self.change(ChangeMembers::AddVoterIds(ids), false).await,
            Action::Demote(id) => {
                self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                    .await
            }
            Action::Remove(id) => {
                let (voters, learners) = self.voters_learners();
                if !self.failure_confirmed(id, &voters).await {
                    self.counters
                        .removals_unconfirmed
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(node = %id, "no other voter confirms the failure yet; not removed");
                    return Ok(false);
                }
                self.remove(id, &voters, &learners, &registry).await
            }
        };
        done.map(|()| pending)
    }

    /// Whether a failure gossip reported is confirmed: the node itself does not answer the
    /// leader over QUIC (an authenticated answer cannot be forged, whatever gossip says: a
    /// forger announcing a newer incarnation that leaves and goes silent makes every peer's
    /// gossip hold the real node dead), and another voter's failure detector also holds it dead
    /// (a group of one voter has no other observer; its leader's word stands).
    pub(super) async fn failure_confirmed(&self, id: NodeId, voters: &BTreeSet<NodeId>) -> bool {
        let m = self.metrics();
        if let Some(addr) = m
            .membership_config
            .membership()
            .get_node(&id)
            .and_then(|n| n.addr.parse::<SocketAddr>().ok())
            && let Ok(body) = serde_json::to_vec(&Rpc::Suspects)
            && let Ok(answer) = self
                .net
                .call(id, addr, &body, Duration::from_millis(500))
                .await
            && matches!(
                serde_json::from_slice::<Reply>(&answer),
                Ok(Reply::Suspects { .. })
            )
        {
            debug!(node = %id, "gossip holds this node dead, but it answers the leader; not removed");
            return false;
        }
        let others: Vec<(NodeId, SocketAddr)> = voters
            .iter()
            .filter(|v| **v != self.id && **v != id)
            .filter_map(|v| {
                let addr = m
                    .membership_config
                    .membership()
                    .get_node(v)?
                    .addr
                    .parse()
                    .ok()?;
                Some((*v, addr))
            })
            .collect();
        if others.is_empty() {
            return voters.len() <= 1 || voters.iter().all(|v| *v == self.id || *v == id);
        }
        let Ok(body) = serde_json::to_vec(&Rpc::Suspects) else {
            return false;
        };
        // Asked in turn; the first that agrees is enough.
        for (v, addr) in others {
            let Ok(answer) = self
                .net
                .call(v, addr, &body, Duration::from_millis(500))
                .await
            else {
                continue;
            };
            if let Ok(Reply::Suspects { dead }) = serde_json::from_slice::<Reply>(&answer)
                && dead.contains(&id)
            {
                return true;
            }
        }
        false
    }
}

/// How soon the autopilot looks again while a promotion waits only for a learner to catch up
/// (a forming cluster's second and third voters, a replacement voter).
const PENDING_EVERY: Duration = Duration::from_millis(25);

/// Runs an autopilot round every `every`, at once when a node is admitted, and every
/// `PENDING_EVERY` while a promotion waits for a learner to catch up (rounds do nothing on
/// followers).
pub(super) async fn autopilot_loop(inner: Arc<Inner>, every: Duration) {
    loop {
        let soon = match inner.autopilot_round().await {
            Ok(soon) => soon,
            Err(e) => {
                debug!(error = %e, "autopilot round failed");
                false
            }
        };
        let wait = if soon {
            PENDING_EVERY.min(every)
        } else {
            every
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.pilot.wake.notified() => {}
        }
    }
}
