//! A member's upkeep of itself: its own registry record kept current (after a restart on
//! another address), its candidacy held back for a moment after a restart, and no more
//! campaigning once it was removed from the group.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::route::{Done, Op};
use super::state::{Inner, now_ms};
use crate::proto::ConsensusError;
use crate::registry::{NodeRecord, Registry, Request, Role};

/// How long a restarted node waits for a leader before it may campaign itself.
pub(super) const HOLD_ELECTION: Duration = Duration::from_secs(1);

impl Inner {
    /// The registry record this node should have: its current addresses and name, its
    /// recorded labels (or its starting ones).
    pub(super) fn wanted_record(&self, registry: &Registry) -> Option<NodeRecord> {
        let old = registry.nodes.get(&self.id);
        let mut want = self.me.info.record(
            self.id,
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
    inner.raft.runtime_config().elect(true);
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
            inner.raft.runtime_config().elect(false);
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
