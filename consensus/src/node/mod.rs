//! [`Consensus`]: one node of the Raft group, as the agent runs it.
//!
//! It starts in one of three ways ([`start`]): [`Consensus::bootstrap`] makes a new cluster,
//! [`Consensus::join`] asks a member to be admitted ([`joiner`], answered by [`admit`] under
//! the rules of [`join`]), and [`Consensus::open`] resumes a node whose directory holds a
//! cluster. Once running, any node takes writes, reads and membership changes and routes them
//! to the leader over QUIC ([`route`]); the leader refuses them at once when it cannot reach a
//! majority ([`leader`]). The leader also runs the autopilot and the operator's membership
//! changes, including the leadership hand-over ([`membership`]). Requests from other nodes are
//! checked and dispatched by [`serve`]; a member keeps its own record current ([`upkeep`]);
//! [`status`] is what it shows of the group. [`state`] holds what they share.
//!
//! A voter campaigns only after a pre-vote that a majority granted ([`campaign`]).
//!
//! Module order, bottom up (each uses only those before it, but for the `Campaign` that
//! `state` holds): `batch`, `join`, `seal`, `state`, `leader`, `membership`, `admit`, `route`,
//! `campaign`, `serve`, `upkeep`, `status`; then the handle declared here
//! ([`Consensus`], [`ConsensusConfig`], [`StartError`]), which `start` and `joiner` build.

mod admit;
mod batch;
mod ca;
mod campaign;
mod join;
mod joiner;
mod leader;
mod membership;
mod route;
mod seal;
mod serve;
mod start;
mod state;
mod status;
mod trust;
mod upkeep;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Raft;
use prometheus_client::metrics::histogram::Histogram;
use tracing::warn;

pub use join::{
    AdmissionConfig, JoinCredentials, JoinPolicy, TokenSecret, key_proof, same, secret_hash,
    token_proof, token_proof_key,
};
pub use state::SecretsHandler;
pub use status::{Counts, MemberView, Status};

use route::{Done, Op};
use state::Inner;

use crate::TypeConfig;
use crate::files::{ClusterFile, FilesError};
use crate::proto::{AdminOp, ConsensusError, RegistryAt, Written};
use crate::quic::{NetMetrics, QuicError};
use crate::registry::{Registry, Request, RestorePlan};
use crate::tls::TlsError;

use quorate_base::NodeId;

/// How a node runs its part of the Raft group.
#[derive(Clone, Debug)]
pub struct ConsensusConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Its consensus directory (certificates, `cluster.json`, `raft.redb`).
    pub dir: PathBuf,
    /// Where QUIC listens.
    pub listen: SocketAddr,
    /// The QUIC address other nodes dial.
    pub advertise: SocketAddr,
    /// Raft timings; `None`: [`crate::raft_config`] (LAN).
    pub raft: Option<openraft::Config>,
    /// How long a write may wait to be committed.
    pub write_timeout: Duration,
    /// How often the leader's autopilot looks at the group.
    pub autopilot_every: Duration,
    /// How long the node certificates this node issues (as leader) are valid; members renew
    /// theirs once two thirds of it have passed.
    pub cert_lifetime: Duration,
    /// How joiners are admitted, from the first instant this node serves (rotations later
    /// through [`Consensus::set_admission`]).
    pub admission: AdmissionConfig,
    /// Where the state machine publishes its events (the agent's hub, which the HTTP API
    /// serves from before this node is a member).
    pub events: Arc<crate::EventHub>,
    /// How long a joiner waits for one seed's QUIC handshake (the join request itself is given
    /// longer): short when the seed may not serve yet (a forming node asked before it has
    /// formed the cluster), so that the next attempt is not held up by a lost first packet.
    pub join_dial_deadline: Duration,
}

impl ConsensusConfig {
    /// A configuration with LAN defaults.
    pub fn new(
        node_id: NodeId,
        dir: PathBuf,
        listen: SocketAddr,
        advertise: SocketAddr,
    ) -> ConsensusConfig {
        ConsensusConfig {
            node_id,
            dir,
            listen,
            advertise,
            raft: None,
            write_timeout: Duration::from_secs(5),
            autopilot_every: Duration::from_millis(250),
            cert_lifetime: crate::tls::DEFAULT_CERT_LIFETIME,
            admission: AdmissionConfig::default(),
            events: Arc::new(crate::EventHub::new()),
            join_dial_deadline: Duration::from_secs(15),
        }
    }
}

/// The counter of refusals by `rule`.
fn refused_counter(rule: crate::authority::Rule) -> &'static str {
    use crate::authority::Rule;
    match rule {
        Rule::RaftByVoters => "refused_raft_by_voters",
        Rule::AdminByVoters => "refused_admin_by_voters",
        Rule::TokensByVoters => "refused_tokens_by_voters",
        Rule::OwnRecordOnly => "refused_own_record_only",
        Rule::JoinsByVoters => "refused_joins_by_voters",
        Rule::MembersOnly => "refused_members_only",
        Rule::RecordedKey => "refused_recorded_key",
    }
}

/// Why a node could not take part.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its files.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// Certificates.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// QUIC.
    #[error(transparent)]
    Quic(#[from] QuicError),
    /// Raft storage.
    #[error("raft storage: {0}")]
    Storage(String),
    /// Raft itself.
    #[error("raft: {0}")]
    Raft(String),
    /// The directory holds a cluster already.
    #[error(
        "this node belongs to cluster {cluster_name} ({cluster_id}) already; it never bootstraps or joins another (remove its consensus directory to start afresh)"
    )]
    AlreadyMember {
        /// Cluster id.
        cluster_id: String,
        /// Cluster name.
        cluster_name: String,
    },
    /// The directory holds Raft state but no cluster file.
    #[error("{0}")]
    Damaged(String),
    /// A member answered the join with a refusal.
    #[error("{0}")]
    JoinRefused(ConsensusError),
    /// No seed admitted the node.
    #[error("no member could admit this node: {}", attempts.join("; "))]
    JoinFailed {
        /// What each seed said.
        attempts: Vec<String>,
        /// Whether the only members reached presented another CA than the pinned one (the
        /// join token belongs to another cluster), the other seeds being unreachable.
        foreign: bool,
    },
    /// Forming the cluster failed.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

/// A running member of the Raft group.
pub struct Consensus {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Consensus {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The cluster this node belongs to, with the fingerprint of its current CA.
    pub fn cluster(&self) -> ClusterFile {
        ClusterFile {
            ca_fingerprint: self.inner.me.ca.borrow().current.fingerprint.clone(),
            ..self.inner.me.cluster.clone()
        }
    }

    /// The CA certificates this node trusts, PEM: the current CA's, then the next one's
    /// during a CA rotation.
    pub fn ca_pem(&self) -> String {
        self.inner.me.ca.borrow().trusted()
    }

    /// Whether this node holds a CA key (voters do).
    pub fn holds_ca_key(&self) -> bool {
        self.inner.me.ca.borrow().holds_key()
    }

    /// This node's membership events (decided ones from the log, and the local ones the
    /// agent publishes).
    pub fn events(&self) -> Arc<crate::EventHub> {
        self.inner.sm.events().clone()
    }

    /// The openraft handle (metrics, waiting).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The registry as applied on this node (not linearizable; see [`Consensus::read`]).
    pub fn local_registry(&self) -> Registry {
        self.inner.registry()
    }

    /// The index of the last log entry this node applied (`None` before the first): the
    /// registry changes only when it grows, so a caller that keeps a copy of
    /// [`Consensus::local_registry`] reads it again only when this has moved. Read it before
    /// the registry: the registry read after is at least as new.
    pub fn applied_index(&self) -> Option<u64> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// The leader this node knows of, and its current term, read without copying the rest of
    /// the metrics.
    pub fn leader_and_term(&self) -> (Option<NodeId>, u64) {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.current_term)
    }

    /// How joiners are admitted from now on (the leader's setting counts): the policy, the
    /// join keys, the secrets by role (never written to the log).
    pub fn set_admission(&self, admission: AdmissionConfig) {
        if let Ok(mut a) = self.inner.admission.config.lock() {
            *a = admission;
        }
    }

    /// What takes the keys a voter hands this node (a cluster-wide key rotation): without
    /// one, such requests are refused. The consensus layer checks only that a voter-role
    /// member sent them; what they mean is the caller's.
    pub fn on_secrets(&self, handler: SecretsHandler) {
        if let Ok(mut h) = self.inner.secrets.write() {
            *h = Some(handler);
        }
    }

    /// Hands member `node` a change of the keys its role holds, over its own mutually
    /// authenticated connection (the certificate must name `node`); returns what the member
    /// says it did. Only a voter-role node may, and the member checks that it is one.
    pub async fn send_secrets(
        &self,
        node: NodeId,
        secrets: BTreeMap<String, String>,
    ) -> Result<String, ConsensusError> {
        if self.inner.role() != quorate_base::Role::Voter {
            return Err(ConsensusError::membership(
                "only a voter hands keys to other nodes",
            ));
        }
        let raft_addr = self
            .inner
            .record(node, |n| n.raft_addr.clone())
            .ok_or_else(|| {
                ConsensusError::membership(format!("node {node} is not recorded in the registry"))
            })?;
        let addr: SocketAddr = raft_addr.parse().map_err(|_| {
            ConsensusError::membership(format!("node {node} has no valid address ({raft_addr})"))
        })?;
        let body = serde_json::to_vec(&crate::proto::Rpc::Secrets { secrets })
            .map_err(|e| ConsensusError::internal(e.to_string()))?;
        let answer = self
            .inner
            .net
            .call(node, addr, &body, Duration::from_secs(5))
            .await
            .map_err(|e| ConsensusError::membership(format!("node {node}: {e}")))?;
        match serde_json::from_slice::<crate::proto::Reply>(&answer) {
            Ok(crate::proto::Reply::Done { res }) => res,
            Ok(crate::proto::Reply::Refused { reason }) => Err(ConsensusError::membership(
                format!("node {node} refused: {reason}"),
            )),
            _ => Err(ConsensusError::membership(format!(
                "node {node} gave an answer to another request"
            ))),
        }
    }

    /// [`Consensus::send_secrets`] of one change, named `name` (what a rotation step hands a
    /// member); `Err` says why the member did not take it.
    pub async fn send_secret(&self, node: NodeId, name: &str, value: String) -> Result<(), String> {
        self.send_secrets(node, BTreeMap::from([(name.to_string(), value)]))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The role the registry applied here records for node `id`, if it records it.
    pub fn recorded_role(&self, id: NodeId) -> Option<quorate_base::Role> {
        self.inner.recorded_role(id)
    }

    /// This node's role (the registry's record, else the one it started with).
    pub fn role(&self) -> quorate_base::Role {
        self.inner.role()
    }

    /// Tells the autopilot which nodes gossip reports failed, and since when; the others are
    /// alive. `grace`: how long before a failed node is removed (`None`: never).
    pub fn set_failed(&self, failed: BTreeMap<NodeId, Instant>, grace: Option<Duration>) {
        if let Ok(mut f) = self.inner.pilot.failed_since.lock() {
            *f = failed;
        }
        if let Ok(mut g) = self.inner.pilot.grace.lock() {
            *g = grace;
        }
    }

    /// Writes to the registry through the leader. Once it is committed, waits (briefly) until
    /// this node has applied it too, so that a read here right after sees the write.
    ///
    /// The time from the call until the write is applied here is recorded in
    /// [`Consensus::commit_latency`].
    pub async fn write(&self, req: Request) -> Result<Written, ConsensusError> {
        let started = Instant::now();
        match self.inner.route(Op::Write(req)).await? {
            Done::Written(w) => {
                let applied = self
                    .inner
                    .raft
                    .wait(Some(Duration::from_secs(2)))
                    .applied_index_at_least(Some(w.index), "the write applied here")
                    .await;
                if applied.is_ok() {
                    let took = started.elapsed().as_secs_f64();
                    self.inner.counters.commit_latency.0.observe(took);
                }
                Ok(w)
            }
            _ => Err(ConsensusError::internal("an answer to another request")),
        }
    }

    /// Reads the registry linearizably (through the leader).
    pub async fn read(&self) -> Result<Registry, ConsensusError> {
        match self.inner.route(Op::Read).await? {
            Done::Registry(r) => Ok(r),
            _ => Err(ConsensusError::internal("an answer to another request")),
        }
    }

    /// Reads the whole registry (join tokens included) linearizably, through the leader, with
    /// the log position it reflects: what a backup holds. Voter-role nodes only.
    pub async fn snapshot(&self) -> Result<RegistryAt, ConsensusError> {
        match self.inner.route(Op::Snapshot).await? {
            Done::Snapshot(r) => Ok(r),
            _ => Err(ConsensusError::internal("an answer to another request")),
        }
    }

    /// Restores a snapshot's registry through Raft ([`Request::Restore`]); `force` restores
    /// the snapshot of another cluster. The plan is what the registry the leader held just
    /// before the write makes of the snapshot (a node recorded in between would be reported
    /// among neither); the write's outcome says whether it was applied.
    pub async fn restore(
        &self,
        snapshot: Registry,
        force: bool,
    ) -> Result<(RestorePlan, Written), ConsensusError> {
        let now = self.read().await?;
        let plan = now.restore_plan(&snapshot);
        let written = self
            .write(Request::Restore {
                snapshot: crate::registry::Carried(Box::new(snapshot)),
                force,
            })
            .await?;
        Ok((plan, written))
    }

    /// A membership change, through the leader.
    pub async fn admin(&self, op: AdminOp) -> Result<String, ConsensusError> {
        let leaving = matches!(op, AdminOp::Leave { node } if node == self.inner.id);
        match self.inner.route(Op::Admin(op)).await {
            Ok(Done::Message(m)) => Ok(m),
            Ok(_) => Err(ConsensusError::internal("an answer to another request")),
            // This node asked to leave and the answer was lost to its own removal (its
            // connections close and its certificate is refused from then on): it has left.
            Err(ConsensusError::Removed) if leaving => {
                Ok(format!("{} is no longer a member", self.inner.id))
            }
            Err(e) => Err(e),
        }
    }

    /// This node's view of the group.
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// What this node has counted since it started, read at once.
    pub fn counts(&self) -> Counts {
        self.inner.counts()
    }

    /// The counters of this node's QUIC endpoint.
    pub fn net_metrics(&self) -> Arc<NetMetrics> {
        self.inner.net.metrics()
    }

    /// How long this node's client writes ([`Consensus::write`]) took from the call until
    /// they were committed and applied here, in seconds.
    pub fn commit_latency(&self) -> &Histogram {
        &self.inner.counters.commit_latency.0
    }

    /// Counters of this node's consensus and QUIC traffic, by name.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        let c = self.counts();
        let mut out: BTreeMap<&'static str, u64> = [
            ("raft_writes", c.writes),
            ("raft_writes_forwarded", c.writes_forwarded),
            ("raft_writes_failed", c.writes_failed),
            ("joins_admitted", c.joins_admitted),
            ("joins_refused", c.joins_refused),
            ("joins_rate_limited", c.joins_rate_limited),
            ("requests_refused", c.requests_refused),
            ("membership_changes", c.membership_changes),
            ("quorum_checks", c.quorum_checks),
            ("campaigns", c.campaigns),
            ("pre_votes_lost", c.pre_votes_lost),
            ("certificates_renewed", c.certificates_renewed),
            ("removals_unconfirmed", c.removals_unconfirmed),
        ]
        .into_iter()
        .collect();
        for (rule, n) in &c.refused_by_rule {
            out.insert(refused_counter(*rule), *n);
        }
        out.extend(self.inner.net.metrics().snapshot());
        out.extend(self.inner.sm.events().counters());
        let m = self.inner.raft.metrics().borrow().clone();
        out.insert("raft_term", m.current_term);
        out.insert("raft_last_log_index", m.last_log_index.unwrap_or(0));
        out.insert(
            "raft_applied_index",
            m.last_applied.map(|l| l.index).unwrap_or(0),
        );
        out.insert("raft_is_leader", u64::from(m.current_leader == Some(m.id)));
        out
    }

    /// Stops Raft and QUIC; the QUIC port is free when this returns.
    pub async fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.inner.raft.shutdown().await {
            warn!(error = %e, "raft did not stop cleanly");
        }
        self.inner.net.close();
        for t in &self.tasks {
            while !t.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.inner.net.wait_idle(Duration::from_secs(1)).await;
    }
}
