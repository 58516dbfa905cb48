//! The shared state of a running member ([`Inner`]), grouped by concern, and the few reads
//! every other module needs (metrics, leadership, the applied registry, replication lag).
//!
//! It holds no logic of its own: the leader's primitives are in [`super::leader`], the
//! admission rules in [`super::join`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft, RaftMetrics};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::warn;

use quorate_base::Role;

use super::batch::Batches;
use super::join::Admission;
use crate::authority::{Caller, Forbidden, Rule};
use crate::files::ClusterFile;
use crate::proto::{ConsensusError, NodeInfo};
use crate::quic::QuicNet;
use crate::registry::Registry;
use crate::tls::DenyList;
use crate::{LogStore, StateMachineStore, TypeConfig};

use quorate_base::NodeId;

#[derive(Default)]
pub(super) struct Counters {
    /// Changes of the leader this node knows (see [`super::upkeep::count_leader_changes`]).
    pub(super) leader_changes: AtomicU64,
    /// How long this node's client writes took to be committed and applied here.
    pub(super) commit_latency: CommitLatency,
    pub(super) writes: AtomicU64,
    pub(super) writes_forwarded: AtomicU64,
    pub(super) writes_failed: AtomicU64,
    pub(super) joins_admitted: AtomicU64,
    pub(super) joins_refused: AtomicU64,
    pub(super) joins_limited: AtomicU64,
    pub(super) requests_refused: AtomicU64,
    /// Refusals by the authority rules, in the order of [`Rule::ALL`].
    pub(super) refused_by_rule: [AtomicU64; Rule::ALL.len()],
    pub(super) membership_changes: AtomicU64,
    /// Leadership confirmations (heartbeats answered by a majority) run for reads and joins.
    pub(super) quorum_checks: AtomicU64,
    /// Elections this node started, each after a pre-vote a majority granted.
    pub(super) campaigns: AtomicU64,
    /// Pre-votes this node asked for that found no majority (so it did not campaign).
    pub(super) pre_votes_lost: AtomicU64,
    /// Certificates this node renewed for itself.
    pub(super) renewals: AtomicU64,
    /// Failure removals the autopilot held back because no other voter confirmed them.
    pub(super) removals_unconfirmed: AtomicU64,
}

/// The histogram of commit latency, in seconds: buckets from half a millisecond to about
/// eight seconds, doubling (a LAN commit takes milliseconds; the write deadline is seconds).
pub(super) struct CommitLatency(pub(super) Histogram);

impl Default for CommitLatency {
    fn default() -> Self {
        CommitLatency(Histogram::new(exponential_buckets(0.0005, 2.0, 15)))
    }
}

/// Who this node is: its cluster, its certificates' CAs, what it says about itself.
pub(super) struct Me {
    /// Its cluster as `cluster.json` said at start (the CA fingerprint in it is the start's:
    /// the current one is `ca`'s).
    pub(super) cluster: ClusterFile,
    /// The CAs it trusts, and their keys (voters hold them, storage nodes never do); changed
    /// by a CA rotation only.
    pub(super) ca: tokio::sync::watch::Sender<super::trust::CaSet>,
    /// Held while the CAs change (read, saved, taken up), so that two changes never
    /// interleave: the registry's, and a rotating voter's hand-over of the next CA's key.
    pub(super) ca_change: Mutex<()>,
    pub(super) info: NodeInfo,
    pub(super) advertise: SocketAddr,
    /// The fingerprint of this node's key: its identity, across certificate renewals.
    pub(super) key: String,
    /// How long the certificates this node issues (as leader) are valid.
    pub(super) cert_lifetime: Duration,
    /// Its consensus directory (certificates, keys).
    pub(super) dir: std::path::PathBuf,
}

/// What serialises the leader's work.
#[derive(Default)]
pub(super) struct Locks {
    /// Taken for writing by a leadership hand-over, for reading by everything that writes.
    pub(super) handover: tokio::sync::RwLock<()>,
    /// One membership change at a time from this node.
    pub(super) changing: tokio::sync::Mutex<()>,
    /// Learners admitted and waiting to be added (by id, with their Raft address): whoever
    /// takes `changing` next adds them all in one change (see `Inner::add_learner`).
    pub(super) learners: Batches<(NodeId, String), Result<(), ConsensusError>>,
    /// One recording of the cluster's identity at a time.
    pub(super) initializing: tokio::sync::Mutex<()>,
    /// Callers waiting for a fresh quorum check: whoever takes `confirming` next confirms the
    /// leadership once for all of them (see `Inner::check_quorum`).
    pub(super) quorum_checks: Batches<(), Result<(), ConsensusError>>,
    /// One quorum check at a time.
    pub(super) confirming: tokio::sync::Mutex<()>,
}

/// What the autopilot is told from outside Raft.
#[derive(Default)]
pub(super) struct PilotInput {
    /// Voters an operator demoted: not promoted again until promoted by hand.
    pub(super) held_back: Mutex<BTreeSet<NodeId>>,
    /// Nodes gossip reports failed, and since when.
    pub(super) failed_since: Mutex<BTreeMap<NodeId, Instant>>,
    /// How long a failed node may stay (`None`: forever).
    pub(super) grace: Mutex<Option<Duration>>,
    /// Woken when a node is admitted, so that a round looks at it at once.
    pub(super) wake: tokio::sync::Notify,
}

/// A running member's state, shared by its tasks and the request handler.
pub(super) struct Inner {
    pub(super) id: NodeId,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) sm: StateMachineStore,
    /// A clone of the log store Raft writes, for the committed index it records.
    pub(super) log: LogStore,
    pub(super) net: QuicNet,
    pub(super) me: Me,
    /// How long a write may wait to be committed.
    pub(super) write_timeout: Duration,
    /// When this node campaigns (see [`super::campaign`]).
    pub(super) campaign: super::campaign::Campaign,
    pub(super) locks: Locks,
    /// When a quorum was last confirmed.
    pub(super) quorum_ok: Mutex<Option<Instant>>,
    pub(super) pilot: PilotInput,
    pub(super) admission: Admission,
    /// Identities removed from the cluster, as the registry applied here lists them; the
    /// handshake refuses them.
    pub(super) deny: DenyList,
    /// What Raft's answers are checked against ([`crate::network`]), and their refusals.
    pub(super) answers: crate::AnswerGuard,
    /// What takes the keys a voter hands this node ([`super::Consensus::on_secrets`]).
    pub(super) secrets: std::sync::RwLock<Option<SecretsHandler>>,
    pub(super) counters: Counters,
}

/// Takes the keys a voter hands this node: the voter's id and the change; answers what was
/// done, or why not.
pub type SecretsHandler = std::sync::Arc<
    dyn Fn(NodeId, std::collections::BTreeMap<String, String>) -> Result<String, String>
        + Send
        + Sync,
>;

pub(super) fn lag_of(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<u64> {
    let last = m.last_log_index.unwrap_or(0);
    if id == m.id {
        return Some(0);
    }
    let matched = m.replication.as_ref()?.get(&id)?.as_ref().map(|l| l.index);
    Some(last.saturating_sub(matched.unwrap_or(0)))
}

/// Marker error: "not the leader (any more); route again".
pub(super) fn not_leader() -> ConsensusError {
    ConsensusError::NoLeader
}

impl Inner {
    pub(super) fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Checked on every write: reads the watch without cloning the metrics.
    pub(super) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    pub(super) fn registry(&self) -> Registry {
        self.sm
            .data()
            .read()
            .map(|d| d.registry.clone())
            .unwrap_or_default()
    }

    /// What `f` reads of the registry's record of node `id`, if it records it: one record
    /// read in place, not a registry copy.
    pub(super) fn record<T>(
        &self,
        id: NodeId,
        f: impl FnOnce(&crate::registry::NodeRecord) -> T,
    ) -> Option<T> {
        self.sm
            .data()
            .read()
            .ok()
            .and_then(|d| d.registry.nodes.get(&id).map(f))
    }

    /// The role the registry records for node `id`, if it records it.
    pub(super) fn recorded_role(&self, id: NodeId) -> Option<Role> {
        self.record(id, |n| n.role)
    }

    /// The caller `peer`'s certificate makes, as far as the registry applied here agrees
    /// ([`Caller::of_cert`]).
    pub(super) fn caller_of(
        &self,
        peer: &crate::quic::PeerCert,
    ) -> Result<Caller, crate::authority::Forbidden> {
        use crate::authority::Recorded;
        let data = self.sm.data();
        let Ok(d) = data.read() else {
            return Ok(Caller::of(peer.id, None, None));
        };
        let recorded = match d.registry.nodes.get(&peer.id) {
            Some(n) => Recorded::Node {
                role: n.role,
                key: n.key.as_deref(),
            },
            None if d.registry.cluster.is_none() => Recorded::Nothing,
            None => Recorded::Absent,
        };
        Caller::of_cert(peer.id, peer.role, &peer.key, recorded)
    }

    /// This node's role: the registry's record, else the one it started with.
    pub(super) fn role(&self) -> Role {
        self.recorded_role(self.id).unwrap_or(self.me.info.role)
    }

    /// This node as the caller of its own requests.
    pub(super) fn me_as_caller(&self) -> Caller {
        Caller::of(self.id, Some(self.role()), None)
    }

    /// Counts and logs a refusal by the authority rules.
    pub(super) fn refused(&self, caller: Caller, what: &str, f: &Forbidden) {
        self.counters
            .requests_refused
            .fetch_add(1, Ordering::Relaxed);
        if let Some(i) = Rule::ALL.iter().position(|r| *r == f.rule) {
            self.counters.refused_by_rule[i].fetch_add(1, Ordering::Relaxed);
        }
        warn!(caller = %caller.id, role = ?caller.role, request = what, rule = %f.rule, reason = %f.message, "request refused");
    }

    pub(super) fn voters_learners(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let m = self.metrics();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    }
}
