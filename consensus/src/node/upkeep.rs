//! A member's upkeep of itself: its own registry record kept current (after a restart on
//! another address), its candidacy held back for a moment after a restart, no more
//! campaigning once it was removed from the group, its certificate renewed before it runs out
//! (same key, new certificate, no restart), the deny list kept in step with the registry
//! (a removed identity's connections are closed at once), the changes of leader it sees
//! counted, and the set of storage learners whose heartbeats may travel less often
//! ([`crate::network`]) kept in step with the membership and the registry.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use super::route::{Done, Op};
use super::state::Inner;
use crate::files::Files;
use crate::proto::ConsensusError;
use crate::registry::{NodeRecord, Registry, Request, Role};
use crate::tls;
use quorate_base::now_ms;

use quorate_base::NodeId;

/// How long a removed identity's open connections stay open for answers already on their way.
const CLOSE_REMOVED_AFTER: Duration = Duration::from_secs(2);

/// How long a restarted node waits for a leader before it may campaign itself.
pub(super) const HOLD_ELECTION: Duration = Duration::from_secs(1);

impl Inner {
    /// The registry record this node should have: its current addresses and name, its
    /// recorded labels (or its starting ones).
    pub(super) fn wanted_record(&self, registry: &Registry) -> Option<NodeRecord> {
        let old = registry.nodes.get(&self.id);
        let mut want = self.me.info.record(
            self.id,
            Some(self.me.key.clone()),
            &self.me.advertise.to_string(),
            old.map_or_else(now_ms, |o| o.joined_ms),
        );
        if let Some(o) = old {
            // A storage node stays one; the registry's labels win over the starting ones.
            if o.role == Role::Storage {
                want.role = Role::Storage;
            }
            want.labels = o.labels.clone();
        }
        match old {
            Some(o) if o == &want => None,
            _ => Some(want),
        }
    }

    /// Brings this node's own record up to date (once, through the leader).
    pub(super) async fn ensure_self_record(&self) -> Result<(), ConsensusError> {
        let registry = self.registry();
        if let Some(want) = self.wanted_record(&registry) {
            match self
                .route(Op::Write(Request::PutNode { node: want }))
                .await?
            {
                Done::Written(w) => w.outcome.map_err(ConsensusError::membership)?,
                _ => return Err(ConsensusError::internal("an answer to another request")),
            }
        }
        Ok(())
    }
}

/// Lets a node that started holding its candidacy campaign after [`HOLD_ELECTION`]: by then
/// a live leader's heartbeats have reached it (or the whole cluster restarted, and somebody has
/// to campaign).
pub(super) async fn release_election(inner: Arc<Inner>) {
    tokio::time::sleep(HOLD_ELECTION).await;
    inner.campaign.allow(true);
}

/// Keeps this node's own registry record current (after a restart on another address), and
/// stops campaigning once this node was removed from the group.
pub(super) async fn keep_record(inner: Arc<Inner>) {
    let mut done = false;
    let mut was_member = false;
    loop {
        let m = inner.metrics();
        let member = m
            .membership_config
            .membership()
            .get_node(&inner.id)
            .is_some();
        if member {
            was_member = true;
        } else if was_member && m.current_leader.is_some() {
            warn!("this node was removed from the cluster; it no longer takes part in elections");
            inner.campaign.allow(false);
            was_member = false;
        }
        if !done && m.current_leader.is_some() && member {
            match inner.ensure_self_record().await {
                Ok(()) => done = true,
                Err(e) => debug!(error = %e, "own registry record not updated yet"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps the deny list in step with the registry's removed identities, and closes the
/// connections of each identity newly removed.
pub(super) async fn follow_removals(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    let mut last = None;
    // Removed nodes whose open connections close at a moment (within this task, so that a
    // node shut down holds no handle on its endpoint).
    let mut closing: Vec<(tokio::time::Instant, NodeId)> = Vec::new();
    loop {
        let changed = inner.sm.data().read().ok().and_then(|d| {
            (last.as_ref() != Some(&d.registry.removed)).then(|| d.registry.removed.clone())
        });
        if let Some(removed) = changed {
            for id in inner.deny.set(removed.clone()) {
                // New handshakes are refused at once; open connections close a moment later,
                // so that answers already on their way (to a node that asked to leave) arrive.
                closing.push((tokio::time::Instant::now() + CLOSE_REMOVED_AFTER, id));
                if id == inner.id {
                    warn!(
                        "this node's identity was removed from the cluster; it takes no further part"
                    );
                } else {
                    info!(node = %id, "identity removed: its connections are closed and its certificate refused");
                }
            }
            last = Some(removed);
        }
        let now = tokio::time::Instant::now();
        closing.retain(|(at, id)| {
            let due = *at <= now;
            if due {
                inner.net.close_peer(*id);
            }
            !due
        });
        let wake = closing.iter().map(|(at, _)| *at).min();
        let changed = match wake {
            Some(at) => match tokio::time::timeout_at(at, metrics.changed()).await {
                Ok(r) => r,
                Err(_) => continue,
            },
            None => metrics.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

/// The leader this node knows now, if it differs from the last one it knew (`last`): the
/// first leader learnt counts as a change; a spell without a known leader (an election) does
/// not, nor does the same leader coming back after it.
pub(super) fn new_leader(last: Option<NodeId>, now: Option<NodeId>) -> Option<NodeId> {
    now.filter(|l| Some(*l) != last)
}

/// Counts the changes of the leader this node knows, from Raft's metrics as they change.
pub(super) async fn count_leader_changes(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    let mut last = None;
    loop {
        let now = metrics.borrow_and_update().current_leader;
        if let Some(l) = new_leader(last, now) {
            inner
                .counters
                .leader_changes
                .fetch_add(1, Ordering::Relaxed);
            last = Some(l);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// The learners of `membership` that `registry` records as storage nodes: the targets whose
/// heartbeats may travel once per [`crate::LEARNER_BEAT`]. A voter of any configuration (a
/// joint one included) is never one.
pub(super) fn quiet_targets(
    membership: &openraft::Membership<NodeId, openraft::BasicNode>,
    registry: &Registry,
) -> std::collections::BTreeSet<NodeId> {
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .learner_ids()
        .filter(|id| !voters.contains(id))
        .filter(|id| {
            registry
                .nodes
                .get(id)
                .is_some_and(|n| n.role == Role::Storage)
        })
        .collect()
}

/// Keeps `quiet` in step with Raft's effective membership and the registry, and the answer
/// guard with the membership's voters and this node's term, looking again whenever any may
/// have changed (a new membership, a new entry applied, a new term).
pub(super) async fn follow_quiet_targets(inner: Arc<Inner>, quiet: crate::QuietTargets) {
    let mut metrics = inner.raft.metrics();
    let mut seen = None;
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            inner.answers.set_term(m.current_term);
            let key = (
                m.membership_config.log_id().map(|l| l.index),
                m.last_applied.map(|l| l.index),
            );
            (seen != Some(key)).then(|| (key, m.membership_config.membership().clone()))
        };
        if let Some((key, membership)) = now {
            inner.answers.set_voters(membership.voter_ids().collect());
            if let Ok(d) = inner.sm.data().read() {
                let targets = quiet_targets(&membership, &d.registry);
                // Storage learners: heartbeats at a slower rate, and links that outlast a
                // stall of a few seconds.
                inner.net.set_patient(targets.clone());
                quiet.set(targets);
            }
            seen = Some(key);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal: once two
/// thirds of its life have passed, counted from its signing ([`tls::CLOCK_SKEW`] after its
/// `notBefore`).
pub(super) fn renewal_due(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let issued = not_before + tls::CLOCK_SKEW;
    let life = not_after.duration_since(issued).unwrap_or(Duration::ZERO);
    issued + life * 2 / 3
}

/// Renews this node's certificate once it is due, through the leader, with the same key;
/// serves and dials with the new one from then on. Retries with backoff when it fails.
pub(super) async fn renew_certificate(inner: Arc<Inner>) {
    loop {
        let wait = match renew_once(&inner).await {
            Ok(wait) => wait,
            Err(e) => {
                warn!(error = %e, "certificate not renewed yet; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Renews if due (or a CA rotation asks for it); returns how long to wait before looking
/// again.
async fn renew_once(inner: &Inner) -> Result<Duration, String> {
    let files = Files::open(&inner.me.dir).map_err(|e| e.to_string())?;
    let identity = files.identity().map_err(|e| e.to_string())?;
    let facts = tls::cert_facts_pem(&identity.cert_pem).map_err(|e| e.to_string())?;
    let due = renewal_due(facts.not_before, facts.not_after);
    let now = SystemTime::now();
    if let Ok(left) = due.duration_since(now)
        && !inner.renewal_for_rotation(&identity.cert_pem)
    {
        // Look again at the due time, or every half minute (clocks move, tests shorten lives).
        return Ok(left.min(Duration::from_secs(30)));
    }
    inner.renew_now().await?;
    Ok(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_change_is_a_known_leader_other_than_the_last_one() {
        let (a, b) = (NodeId::from(1u64), NodeId::from(2u64));
        assert_eq!(
            new_leader(None, Some(a)),
            Some(a),
            "the first leader counts"
        );
        assert_eq!(new_leader(Some(a), Some(a)), None);
        assert_eq!(
            new_leader(Some(a), None),
            None,
            "an election is not a change"
        );
        assert_eq!(new_leader(Some(a), Some(b)), Some(b));
        assert_eq!(new_leader(None, None), None);
    }

    #[test]
    fn only_storage_learners_are_quiet_targets() {
        use crate::registry::tests::node;
        use std::collections::{BTreeMap, BTreeSet};
        let id = NodeId::new;
        let mut registry = Registry::default();
        for (n, role) in [
            (1, Role::Voter),
            (2, Role::Voter),
            (3, Role::Storage),
            (4, Role::Voter),
            (5, Role::Storage),
        ] {
            registry.nodes.insert(id(n), node(n, role));
        }
        let nodes: BTreeMap<NodeId, openraft::BasicNode> = (1..=6)
            .map(|n| (id(n), openraft::BasicNode::new("10.0.0.1:7947")))
            .collect();
        // 1 and 2 vote; 3 is a storage learner; 4 a voter-role learner (to be promoted); 5 a
        // storage node still voting in the old half of a joint configuration; 6 unrecorded.
        let joint = openraft::Membership::new(
            vec![
                BTreeSet::from([id(1), id(2), id(5)]),
                BTreeSet::from([id(1), id(2)]),
            ],
            nodes,
        );
        assert_eq!(quiet_targets(&joint, &registry), BTreeSet::from([id(3)]));
    }

    #[test]
    fn a_certificate_is_renewed_at_two_thirds_of_its_life() {
        let signed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let due = renewal_due(signed - tls::CLOCK_SKEW, signed + Duration::from_secs(90));
        assert_eq!(due, signed + Duration::from_secs(60));
    }
}
