//! [`Consensus`]: one node of the Raft group, as the agent runs it.
//!
//! It starts in one of three ways: [`Consensus::bootstrap`] makes a new cluster (its CA, its
//! identity, a Raft group of this one voter), [`Consensus::join`] asks a member to be admitted,
//! and [`Consensus::open`] resumes a node whose directory holds a cluster. Once running, any node
//! takes writes, reads and membership changes and routes them to the leader over QUIC; the
//! leader refuses them at once when it cannot reach a majority. The leader also runs the
//! autopilot ([`crate::autopilot`]) and admits joiners: it checks the join, signs the joiner's
//! certificate request, records the node through Raft and adds it as a learner.
//!
//! **Leadership hand-over** (openraft 0.9 has no `transfer_leader`): the leader stops its
//! heartbeats and its own candidacy, waits until the chosen voter has every entry and until
//! the followers' leader lease has run out (`election_timeout_max`), then tells that voter to
//! campaign. Its log is the longest and it starts first, so it wins; the old leader becomes a
//! follower and resumes normal timers. Writes arriving meanwhile wait and then go to the new
//! leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tracing::{debug, info, warn};

use crate::autopilot::{self, Action, Facts};
use crate::files::{CLUSTER_FORMAT, ClusterFile, Files, FilesError};
use crate::network::RaftNet;
use crate::proto::{
    AdminOp, ConsensusError, JoinReply, JoinRequest, NodeInfo, Reply, Rpc, TokenProof, Written,
};
use crate::quic::{Handler, QuicError, QuicNet};
use crate::registry::{ClusterInfo, NodeRecord, NodeStatus, Registry, Request, Role, Settings};
use crate::tls::{self, Identity, JoinVerifier, TlsError, Trust};
use crate::{LogStore, StateMachineStore, TypeConfig, open_db};

type NodeId = u64;

/// How long a joiner waits for one seed's answer.
const JOIN_DEADLINE: Duration = Duration::from_secs(15);
/// How long a membership change may take.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a quorum check stays good for writes that follow it.
const QUORUM_FRESH: Duration = Duration::from_millis(100);
/// How long a restarted node waits for a leader before it may campaign itself.
const HOLD_ELECTION: Duration = Duration::from_secs(1);
/// Most voters a group may have.
const MAX_VOTERS: usize = 7;

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
        }
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

/// How a joiner trusts the cluster and proves itself to it.
#[derive(Clone, Debug)]
pub struct JoinCredentials {
    /// How the cluster's CA is trusted.
    pub trust: Trust,
    /// A join token's proof.
    pub token: Option<TokenProof>,
    /// The cluster key, when the joiner has one: it proves it holds it and demands the same of
    /// the member that admits it.
    pub key: Option<[u8; 32]>,
}

/// Whether joins without a token are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Any node that reaches a member may join (an open cluster on a trusted LAN).
    Open,
    /// Nodes that prove they hold the cluster key, or present a valid join token.
    KeyOrToken,
    /// Only nodes with a valid join token.
    TokenOnly,
}

/// HMAC-SHA256 under a 32-byte cluster key, hex: `purpose`, then each part length-prefixed.
fn hmac_hex(key: &[u8; 32], purpose: &str, parts: &[&[u8]]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    for p in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    hex::encode(ctx.sign().as_ref())
}

/// A joiner's proof that it holds the cluster key: bound to its node id, its certificate
/// request and the cluster name, so it cannot be replayed for another node or key.
pub fn key_proof(key: &[u8; 32], node_id: NodeId, csr_pem: &str, cluster_name: &str) -> String {
    hmac_hex(
        key,
        "quorate join/1",
        &[
            &node_id.to_be_bytes(),
            csr_pem.as_bytes(),
            cluster_name.as_bytes(),
        ],
    )
}

/// The admitting leader's proof that it holds the cluster key: bound to the certificate it
/// issued and the CA, so a rogue member without the key cannot admit anybody.
fn admit_proof(key: &[u8; 32], node_id: NodeId, cert_pem: &str, ca_pem: &str) -> String {
    hmac_hex(
        key,
        "quorate admit/1",
        &[
            &node_id.to_be_bytes(),
            cert_pem.as_bytes(),
            ca_pem.as_bytes(),
        ],
    )
}

/// Compares two secrets or proofs in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A member as `status` shows it: the registry's record and the Raft group's view together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// Name (registry).
    pub name: Option<String>,
    /// Role (registry).
    pub role: Option<Role>,
    /// `voter`, `learner`, or `none` (recorded but not in the group).
    pub suffrage: String,
    /// QUIC address (Raft's address book, else the registry's).
    pub raft_addr: String,
    /// Gossip address.
    pub gossip_addr: Option<String>,
    /// HTTP API address.
    pub api_addr: Option<String>,
    /// Highest log index known replicated to it (on the leader only).
    pub matched_index: Option<u64>,
    /// `active` or `leaving` (registry).
    pub status: Option<NodeStatus>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One node's view of the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// This node.
    pub node_id: NodeId,
    /// `leader`, `follower`, `learner`, `candidate` or `shutdown`.
    pub state: String,
    /// The leader this node knows.
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Highest log index committed and applied here.
    pub commit_index: Option<u64>,
    /// Highest log index here.
    pub last_log_index: Option<u64>,
    /// Target number of voters.
    pub voter_target: u8,
    /// Whether joins without a token are admitted (as this node knows).
    pub open: bool,
    /// Members.
    pub members: Vec<MemberView>,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    writes_forwarded: AtomicU64,
    writes_failed: AtomicU64,
    joins_admitted: AtomicU64,
    joins_refused: AtomicU64,
    joins_limited: AtomicU64,
    requests_refused: AtomicU64,
    membership_changes: AtomicU64,
}

struct Inner {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: StateMachineStore,
    net: QuicNet,
    cluster: ClusterFile,
    ca_pem: String,
    ca_key: Option<String>,
    info: NodeInfo,
    advertise: SocketAddr,
    write_timeout: Duration,
    lease: Duration,
    handover: tokio::sync::RwLock<()>,
    changing: tokio::sync::Mutex<()>,
    initializing: tokio::sync::Mutex<()>,
    quorum_ok: Mutex<Option<Instant>>,
    held_back: Mutex<BTreeSet<NodeId>>,
    failed_since: Mutex<BTreeMap<NodeId, Instant>>,
    grace: Mutex<Option<Duration>>,
    policy: Mutex<JoinPolicy>,
    join_keys: Mutex<Vec<[u8; 32]>>,
    secrets: Mutex<BTreeMap<String, String>>,
    join_limit: JoinLimit,
    counters: Counters,
}

/// Refused join attempts per source address: after [`JoinLimit::BURST`] refusals within
/// [`JoinLimit::WINDOW`], further attempts from that address are refused unheard until the
/// window has passed. Bounded: at most [`JoinLimit::SOURCES`] addresses are remembered.
#[derive(Default)]
struct JoinLimit {
    failures: Mutex<BTreeMap<std::net::IpAddr, std::collections::VecDeque<Instant>>>,
}

impl JoinLimit {
    const BURST: usize = 5;
    const WINDOW: Duration = Duration::from_secs(60);
    const SOURCES: usize = 4096;

    /// How long `ip` must still wait, if it is blocked.
    fn blocked(&self, ip: std::net::IpAddr, now: Instant) -> Option<Duration> {
        let mut f = self.failures.lock().ok()?;
        let q = f.get_mut(&ip)?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= Self::BURST {
            q.front().map(|t| Self::WINDOW - now.duration_since(*t))
        } else {
            None
        }
    }

    fn failed(&self, ip: std::net::IpAddr, now: Instant) {
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        if f.len() >= Self::SOURCES && !f.contains_key(&ip) {
            // Forget the source whose last failure is oldest.
            if let Some(oldest) = f
                .iter()
                .min_by_key(|(_, q)| q.back().copied())
                .map(|(ip, _)| *ip)
            {
                f.remove(&oldest);
            }
        }
        let q = f.entry(ip).or_default();
        q.push_back(now);
        while q.len() > Self::BURST {
            q.pop_front();
        }
    }
}

/// A running member of the Raft group.
pub struct Consensus {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// SHA-256 of a token secret, hex: what the registry keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

fn lag_of(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<u64> {
    let last = m.last_log_index.unwrap_or(0);
    if id == m.id {
        return Some(0);
    }
    let matched = m.replication.as_ref()?.get(&id)?.as_ref().map(|l| l.index);
    Some(last.saturating_sub(matched.unwrap_or(0)))
}

impl Consensus {
    /// The cluster a directory belongs to, if any.
    pub fn stored(dir: &std::path::Path) -> Result<Option<ClusterFile>, StartError> {
        Ok(Files::open(dir)?.cluster()?)
    }

    fn refuse_if_member(files: &Files) -> Result<(), StartError> {
        if let Some(c) = files.cluster()? {
            return Err(StartError::AlreadyMember {
                cluster_id: c.cluster_id,
                cluster_name: c.cluster_name,
            });
        }
        if files.raft_db().exists() {
            return Err(StartError::Damaged(format!(
                "{} holds Raft state but no cluster.json (a bootstrap or join that did not finish); remove the directory to start afresh",
                files.dir().display()
            )));
        }
        Ok(())
    }

    /// Makes a new cluster named `cluster_name` with this node as its one voter, and records
    /// the cluster, the settings and the node in the registry.
    pub async fn bootstrap(
        config: ConsensusConfig,
        info: NodeInfo,
        cluster_name: &str,
        settings: Settings,
    ) -> Result<Consensus, StartError> {
        let files = Files::open(&config.dir)?;
        Self::refuse_if_member(&files)?;
        if info.role != Role::Voter {
            return Err(StartError::Bootstrap(
                "a storage node cannot bootstrap a cluster: it never votes".into(),
            ));
        }
        let cluster_id = format!("{:016x}", rand::random::<u64>() | 1);
        let (ca_pem, ca_key) = tls::new_ca(&cluster_id)?;
        let (cert_pem, key_pem) = tls::issue_node_cert(&ca_pem, &ca_key, config.node_id)?;
        let identity = Identity {
            ca_pem: ca_pem.clone(),
            cert_pem,
            key_pem,
        };
        files.save_identity(&identity, Some(&ca_key))?;
        files.save_cluster(&ClusterFile {
            format: CLUSTER_FORMAT,
            cluster_id: cluster_id.clone(),
            cluster_name: cluster_name.to_string(),
            ca_fingerprint: tls::ca_fingerprint(&ca_pem)?,
            node_id: config.node_id,
            role: Role::Voter,
            bootstrapped: true,
        })?;
        let node = Self::start(config.clone(), info, false).await?;
        let members = BTreeMap::from([(
            config.node_id,
            BasicNode {
                addr: config.advertise.to_string(),
            },
        )]);
        if let Err(e) = node.inner.raft.initialize(members).await {
            node.shutdown().await;
            return Err(StartError::Bootstrap(e.to_string()));
        }
        let leader = node
            .inner
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader == Some(m.id), "leadership")
            .await;
        if let Err(e) = leader {
            node.shutdown().await;
            return Err(StartError::Bootstrap(format!(
                "this node did not become the leader of its new cluster: {e}"
            )));
        }
        let recorded = async {
            node.inner.ensure_cluster().await?;
            node.inner.write_ok(Request::SetSettings { settings }).await
        };
        if let Err(e) = recorded.await {
            node.shutdown().await;
            return Err(StartError::Bootstrap(e.to_string()));
        }
        if let Err(e) = node.inner.ensure_self_record().await {
            node.shutdown().await;
            return Err(StartError::Bootstrap(e.to_string()));
        }
        info!(cluster_id = %cluster_id, cluster = cluster_name, "cluster bootstrapped");
        Ok(node)
    }

    /// Asks the members at `seeds`, in turn, to admit this node. Returns the running node and
    /// the secrets the cluster handed over.
    pub async fn join(
        config: ConsensusConfig,
        info: NodeInfo,
        cluster_name: &str,
        seeds: &[SocketAddr],
        credentials: JoinCredentials,
    ) -> Result<(Consensus, BTreeMap<String, String>), StartError> {
        let JoinCredentials { trust, token, key } = credentials;
        let files = Files::open(&config.dir)?;
        Self::refuse_if_member(&files)?;
        let (csr_pem, key_pem) = tls::node_request(config.node_id)?;
        let verifier = JoinVerifier::new(trust);
        let net = QuicNet::joiner(SocketAddr::new(config.listen.ip(), 0), &verifier)?;
        let request = Rpc::Join {
            join: JoinRequest {
                node_id: config.node_id,
                raft_addr: config.advertise.to_string(),
                node: info.clone(),
                key_proof: key.map(|k| key_proof(&k, config.node_id, &csr_pem, cluster_name)),
                csr_pem,
                token,
                cluster_name: cluster_name.to_string(),
            },
        };
        let body = serde_json::to_vec(&request).map_err(|e| StartError::Raft(e.to_string()))?;
        let mut attempts = Vec::new();
        let mut foreign = 0;
        let mut answered = 0;
        let mut admitted = None;
        for seed in seeds {
            let answer = match net.call_addr(*seed, &body, JOIN_DEADLINE).await {
                Ok(a) => a,
                Err(e) => {
                    let text = e.to_string();
                    if text.contains(tls::FOREIGN_CA) {
                        foreign += 1;
                    }
                    attempts.push(text);
                    continue;
                }
            };
            answered += 1;
            match serde_json::from_slice::<Reply>(&answer) {
                Ok(Reply::Joined { res: Ok(reply) }) => {
                    admitted = Some(reply);
                    break;
                }
                Ok(Reply::Joined {
                    res: Err(e @ ConsensusError::JoinRefused { .. }),
                }) => {
                    net.close();
                    return Err(StartError::JoinRefused(e));
                }
                Ok(Reply::Joined { res: Err(e) }) => attempts.push(format!("{seed}: {e}")),
                Ok(Reply::Refused { reason }) => attempts.push(format!("{seed}: {reason}")),
                Ok(_) => attempts.push(format!("{seed}: an answer to another request")),
                Err(e) => attempts.push(format!("{seed}: unreadable answer ({e})")),
            }
        }
        net.close();
        let Some(reply) = admitted else {
            if attempts.is_empty() {
                attempts.push("no seed addresses".into());
            }
            // Only members of other clusters answered (the rest could not be reached).
            let foreign = foreign > 0 && answered == 0;
            return Err(StartError::JoinFailed { attempts, foreign });
        };
        // The CA in the answer must be the one the handshake verified the member against.
        let verified = verifier
            .accepted_ca()
            .map(|der| tls::der_fingerprint(der.as_ref()));
        let answered = tls::ca_fingerprint(&reply.ca_pem)?;
        if verified.as_deref() != Some(answered.as_str()) {
            return Err(StartError::JoinRefused(ConsensusError::JoinRefused {
                message: "the member answered with another CA than the one it presented".into(),
            }));
        }
        tls::check_node_cert(&reply.cert_pem, &key_pem, config.node_id)?;
        if let Some(k) = key {
            let expected = admit_proof(&k, config.node_id, &reply.cert_pem, &reply.ca_pem);
            if !reply
                .key_proof
                .as_deref()
                .is_some_and(|p| same(p, &expected))
            {
                return Err(StartError::JoinRefused(ConsensusError::JoinRefused {
                    message: "the member that answered does not hold the cluster key: not our cluster, or an impostor".into(),
                }));
            }
        }
        let identity = Identity {
            ca_pem: reply.ca_pem.clone(),
            cert_pem: reply.cert_pem.clone(),
            key_pem,
        };
        let ca_key = match info.role {
            Role::Voter => reply.ca_key_pem.as_deref(),
            Role::Storage => None,
        };
        files.save_identity(&identity, ca_key)?;
        files.save_cluster(&ClusterFile {
            format: CLUSTER_FORMAT,
            cluster_id: reply.cluster_id.clone(),
            cluster_name: reply.cluster_name.clone(),
            ca_fingerprint: answered,
            node_id: config.node_id,
            role: info.role,
            bootstrapped: false,
        })?;
        info!(cluster_id = %reply.cluster_id, cluster = %reply.cluster_name, leader = format!("{:016x}", reply.leader_id), role = ?info.role, "admitted to the cluster");
        // A new member has no stale term to disrupt the group with: no hold.
        let node = Self::start(config, info, false).await?;
        Ok((node, reply.secrets))
    }

    /// Resumes a node whose directory holds a cluster.
    pub async fn open(config: ConsensusConfig, info: NodeInfo) -> Result<Consensus, StartError> {
        Self::start(config, info, true).await
    }

    /// Starts Raft on the node's files. With `hold`, the node does not campaign for
    /// [`HOLD_ELECTION`]: a voter that restarts while the cluster has a leader would otherwise
    /// campaign before the leader's heartbeats reach it, disrupt the group with a higher term,
    /// be refused for its shorter log, and carry openraft's "seen a greater log" penalty (two
    /// election timeouts more) into the next failover.
    async fn start(
        config: ConsensusConfig,
        info: NodeInfo,
        hold: bool,
    ) -> Result<Consensus, StartError> {
        let files = Files::open(&config.dir)?;
        let Some(cluster) = files.cluster()? else {
            return Err(StartError::Damaged(format!(
                "{} holds no cluster; bootstrap or join one",
                files.dir().display()
            )));
        };
        if cluster.node_id != config.node_id {
            return Err(StartError::Damaged(format!(
                "{} belongs to node {:016x}, not {:016x}",
                files.dir().display(),
                cluster.node_id,
                config.node_id
            )));
        }
        let identity = files.identity()?;
        tls::check_node_cert(&identity.cert_pem, &identity.key_pem, config.node_id)?;
        let ca_key = files.ca_key()?;
        let raft_config = match &config.raft {
            Some(c) => c.clone(),
            None => crate::raft_config(&cluster.cluster_name)
                .map_err(|e| StartError::Raft(e.to_string()))?,
        };
        let lease = Duration::from_millis(raft_config.election_timeout_max);
        let net = QuicNet::bind(config.listen, &identity)?;
        let db = open_db(&files.raft_db()).map_err(|e| StartError::Storage(e.to_string()))?;
        let sm =
            StateMachineStore::open(db.clone()).map_err(|e| StartError::Storage(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            RaftNet::new(net.clone()),
            LogStore::new(db),
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let inner = Arc::new(Inner {
            id: config.node_id,
            raft,
            sm,
            net: net.clone(),
            ca_pem: identity.ca_pem.clone(),
            cluster,
            ca_key,
            info,
            advertise: config.advertise,
            write_timeout: config.write_timeout,
            lease,
            handover: tokio::sync::RwLock::new(()),
            changing: tokio::sync::Mutex::new(()),
            initializing: tokio::sync::Mutex::new(()),
            quorum_ok: Mutex::new(None),
            held_back: Mutex::default(),
            failed_since: Mutex::default(),
            grace: Mutex::new(None),
            policy: Mutex::new(JoinPolicy::Open),
            join_keys: Mutex::default(),
            secrets: Mutex::default(),
            join_limit: JoinLimit::default(),
            counters: Counters::default(),
        });
        let serve = net.serve(inner.clone());
        if hold {
            inner.raft.runtime_config().elect(false);
        }
        let pilot = tokio::spawn(autopilot_loop(inner.clone(), config.autopilot_every));
        let gate = tokio::spawn(release_election(inner.clone()));
        let keeper = tokio::spawn(keep_record(inner.clone()));
        Ok(Consensus {
            inner,
            tasks: vec![serve, pilot, keeper, gate],
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &ClusterFile {
        &self.inner.cluster
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.inner.ca_pem
    }

    /// Whether this node holds the CA key (voters do).
    pub fn holds_ca_key(&self) -> bool {
        self.inner.ca_key.is_some()
    }

    /// The openraft handle (metrics, waiting).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The registry as applied on this node (not linearizable; see [`Consensus::read`]).
    pub fn local_registry(&self) -> Registry {
        self.inner.registry()
    }

    /// Sets whether joins without a token are admitted (the leader's setting counts).
    pub fn set_join_policy(&self, policy: JoinPolicy) {
        if let Ok(mut p) = self.inner.policy.lock() {
            *p = policy;
        }
    }

    /// The cluster keys a joiner may prove it holds (and the leader proves back with the
    /// first), for [`JoinPolicy::KeyOrToken`].
    pub fn set_join_keys(&self, keys: Vec<[u8; 32]>) {
        if let Ok(mut k) = self.inner.join_keys.lock() {
            *k = keys;
        }
    }

    /// Secrets handed to every joiner (the gossip key); never to the log.
    pub fn set_join_secrets(&self, secrets: BTreeMap<String, String>) {
        if let Ok(mut s) = self.inner.secrets.lock() {
            *s = secrets;
        }
    }

    /// Tells the autopilot which nodes gossip reports failed, and since when; the others are
    /// alive. `grace`: how long before a failed node is removed (`None`: never).
    pub fn set_failed(&self, failed: BTreeMap<NodeId, Instant>, grace: Option<Duration>) {
        if let Ok(mut f) = self.inner.failed_since.lock() {
            *f = failed;
        }
        if let Ok(mut g) = self.inner.grace.lock() {
            *g = grace;
        }
    }

    /// Writes to the registry through the leader. Once it is committed, waits (briefly) until
    /// this node has applied it too, so that a read here right after sees the write.
    pub async fn write(&self, req: Request) -> Result<Written, ConsensusError> {
        match self.inner.route(Op::Write(req)).await? {
            Done::Written(w) => {
                let _ = self
                    .inner
                    .raft
                    .wait(Some(Duration::from_secs(2)))
                    .applied_index_at_least(Some(w.index), "the write applied here")
                    .await;
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

    /// A membership change, through the leader.
    pub async fn admin(&self, op: AdminOp) -> Result<String, ConsensusError> {
        match self.inner.route(Op::Admin(op)).await? {
            Done::Message(m) => Ok(m),
            _ => Err(ConsensusError::internal("an answer to another request")),
        }
    }

    /// This node's view of the group.
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Counters of this node's consensus and QUIC traffic.
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: BTreeMap<&'static str, u64> = [
            ("raft_writes", g(&c.writes)),
            ("raft_writes_forwarded", g(&c.writes_forwarded)),
            ("raft_writes_failed", g(&c.writes_failed)),
            ("joins_admitted", g(&c.joins_admitted)),
            ("joins_refused", g(&c.joins_refused)),
            ("joins_rate_limited", g(&c.joins_limited)),
            ("requests_refused", g(&c.requests_refused)),
            ("membership_changes", g(&c.membership_changes)),
        ]
        .into_iter()
        .collect();
        out.extend(self.inner.net.metrics().snapshot());
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

/// What can be routed to the leader.
#[derive(Clone)]
enum Op {
    Write(Request),
    Read,
    Admin(AdminOp),
    Join(JoinRequest),
}

enum Done {
    Written(Written),
    Registry(Registry),
    Message(String),
    Joined(JoinReply),
}

impl Op {
    fn rpc(&self) -> Rpc {
        match self {
            Op::Write(req) => Rpc::Write { req: req.clone() },
            Op::Read => Rpc::Read,
            Op::Admin(op) => Rpc::Admin { op: op.clone() },
            Op::Join(join) => Rpc::Join { join: join.clone() },
        }
    }
}

fn done_of(reply: Reply) -> Result<Done, ConsensusError> {
    match reply {
        Reply::Written { res } => res.map(Done::Written),
        Reply::Registry { res } => res.map(Done::Registry),
        Reply::Done { res } => res.map(Done::Message),
        Reply::Joined { res } => res.map(Done::Joined),
        Reply::Refused { reason } => Err(ConsensusError::internal(format!(
            "the leader refused the request: {reason}"
        ))),
        _ => Err(ConsensusError::internal("an answer to another request")),
    }
}

fn reply_of(done: Result<Done, ConsensusError>, op: &Op) -> Reply {
    match (op, done) {
        (Op::Write(_), Ok(Done::Written(w))) => Reply::Written { res: Ok(w) },
        (Op::Write(_), Err(e)) => Reply::Written { res: Err(e) },
        (Op::Read, Ok(Done::Registry(r))) => Reply::Registry { res: Ok(r) },
        (Op::Read, Err(e)) => Reply::Registry { res: Err(e) },
        (Op::Admin(_), Ok(Done::Message(m))) => Reply::Done { res: Ok(m) },
        (Op::Admin(_), Err(e)) => Reply::Done { res: Err(e) },
        (Op::Join(_), Ok(Done::Joined(j))) => Reply::Joined { res: Ok(j) },
        (Op::Join(_), Err(e)) => Reply::Joined { res: Err(e) },
        _ => Reply::Refused {
            reason: "internal: mismatched answer".into(),
        },
    }
}

/// Marker error: "not the leader (any more); route again".
fn not_leader() -> ConsensusError {
    ConsensusError::NoLeader
}

impl Inner {
    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Checked on every write: reads the watch without cloning the metrics.
    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    fn registry(&self) -> Registry {
        self.sm
            .data()
            .read()
            .map(|d| d.registry.clone())
            .unwrap_or_default()
    }

    /// Sends `op` to the leader (or runs it here when this node leads), retrying while the
    /// leadership moves, until the write deadline.
    async fn route(&self, op: Op) -> Result<Done, ConsensusError> {
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
    async fn local(&self, op: &Op) -> Result<Done, ConsensusError> {
        match op {
            Op::Write(req) => self.write_local(req.clone()).await.map(Done::Written),
            Op::Read => {
                let _g = self.handover.read().await;
                self.check_quorum(true).await?;
                Ok(Done::Registry(self.registry()))
            }
            Op::Admin(a) => self.admin_local(a.clone()).await.map(Done::Message),
            Op::Join(j) => self.join_local(j.clone()).await.map(Done::Joined),
        }
    }

    /// Confirms that this node leads with a majority behind it, at most every
    /// [`QUORUM_FRESH`] (always when `fresh`). A check that fails is tried again for up to a
    /// second (a fresh leader may still be dialing its followers) before the answer is no.
    async fn check_quorum(&self, fresh: bool) -> Result<(), ConsensusError> {
        if !fresh
            && let Ok(q) = self.quorum_ok.lock()
            && q.is_some_and(|t| t.elapsed() < QUORUM_FRESH)
        {
            return Ok(());
        }
        let until = Instant::now() + Duration::from_secs(1);
        loop {
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

    async fn write_local(&self, req: Request) -> Result<Written, ConsensusError> {
        let _g = self.handover.read().await;
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

    async fn change(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Result<(), ConsensusError> {
        // One change at a time from this node; one already under way (the autopilot's, an
        // operator's) is waited for, not failed on.
        let _one = self.changing.lock().await;
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

    async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), ConsensusError> {
        self.change(
            ChangeMembers::AddNodes(BTreeMap::from([(id, BasicNode { addr })])),
            true,
        )
        .await
    }

    /// Writes on the leader and insists the registry accepted.
    async fn write_ok(&self, req: Request) -> Result<(), ConsensusError> {
        let w = self.write_local(req).await?;
        w.outcome.map_err(ConsensusError::membership)
    }

    fn voters_learners(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let m = self.metrics();
        let mem = m.membership_config.membership();
        (mem.voter_ids().collect(), mem.learner_ids().collect())
    }

    async fn admin_local(&self, op: AdminOp) -> Result<String, ConsensusError> {
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
        let _g = self.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        self.check_quorum(true).await?;
        let (voters, learners) = self.voters_learners();
        let registry = self.registry();
        let name = |id: NodeId| format!("{id:016x}");
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
                if let Ok(mut h) = self.held_back.lock() {
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
                if let Ok(mut h) = self.held_back.lock() {
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

    async fn mark_leaving(&self, node: NodeId) -> Result<(), ConsensusError> {
        if self.registry().nodes.contains_key(&node) {
            self.write_ok(Request::MarkLeaving { node }).await?;
        }
        Ok(())
    }

    async fn remove(
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
        } else if learners.contains(&node) {
            self.change(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await?;
        } else if !registry.nodes.contains_key(&node) {
            return Err(ConsensusError::membership(format!(
                "{node:016x} is not a member of this cluster"
            )));
        }
        if registry.nodes.contains_key(&node) {
            self.write_ok(Request::RemoveNode { node }).await?;
        }
        if let Ok(mut h) = self.held_back.lock() {
            h.remove(&node);
        }
        info!(node = format!("{node:016x}"), "removed from the cluster");
        Ok(())
    }

    /// Hands leadership to `to` or the most caught-up other voter.
    async fn step_down(&self, to: Option<NodeId>) -> Result<String, ConsensusError> {
        let _g = self.handover.write().await;
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
                    "{t:016x} is not another voter of this cluster"
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
        info!(to = format!("{target:016x}"), "handing leadership over");
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let result = self.hand_over(target, addr).await;
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        match result {
            Ok(new) => {
                info!(leader = format!("{new:016x}"), "leadership handed over");
                Ok(format!("leadership handed over to {new:016x}"))
            }
            Err(e) => {
                warn!(error = %e, "leadership hand-over failed; still leading");
                Err(e)
            }
        }
    }

    async fn hand_over(&self, target: NodeId, addr: SocketAddr) -> Result<NodeId, ConsensusError> {
        let started = Instant::now();
        // The successor must hold every entry, so that it wins the election.
        let caught_up = self
            .raft
            .wait(Some(Duration::from_secs(3)))
            .metrics(|m| lag_of(m, target) == Some(0), "successor caught up")
            .await;
        if caught_up.is_err() {
            return Err(ConsensusError::membership(format!(
                "{target:016x} did not catch up within 3 s"
            )));
        }
        // With no heartbeats, the followers' leader lease runs out; then they grant votes.
        let lease_end = started + self.lease + Duration::from_millis(25);
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

    /// Admits a joiner (on the leader).
    async fn join_local(&self, j: JoinRequest) -> Result<JoinReply, ConsensusError> {
        let _g = self.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        let result = self.admit(j).await;
        match &result {
            Ok(_) => self.counters.joins_admitted.fetch_add(1, Ordering::Relaxed),
            Err(ConsensusError::JoinRefused { .. }) => {
                self.counters.joins_refused.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => 0,
        };
        result
    }

    async fn admit(&self, j: JoinRequest) -> Result<JoinReply, ConsensusError> {
        let refuse = |m: String| ConsensusError::JoinRefused { message: m };
        self.check_quorum(true).await?;
        let registry = self.registry();
        let cluster = registry.cluster.clone().ok_or(ConsensusError::NoLeader)?;
        if j.cluster_name != cluster.name {
            return Err(refuse(format!(
                "this is cluster {:?}, not {:?}",
                cluster.name, j.cluster_name
            )));
        }
        if j.node_id == 0 {
            return Err(refuse("node id 0 is not a node id".into()));
        }
        let ca_key = self.ca_key.as_ref().ok_or_else(|| {
            ConsensusError::internal("the leader holds no CA key and cannot sign certificates")
        })?;
        let cert_pem = tls::sign_node_request(&self.ca_pem, ca_key, &j.csr_pem, j.node_id)
            .map_err(|e| refuse(e.to_string()))?;
        let now = now_ms();
        let put = Request::PutNode {
            node: j.node.record(j.node_id, &j.raft_addr, now),
        };
        registry.check(&put).map_err(|r| refuse(format!("{r}")))?;
        let policy = self
            .policy
            .lock()
            .map(|p| *p)
            .unwrap_or(JoinPolicy::TokenOnly);
        let keys = self.join_keys.lock().map(|k| k.clone()).unwrap_or_default();
        let proven_key = j.key_proof.as_ref().and_then(|proof| {
            keys.iter()
                .find(|k| same(&key_proof(k, j.node_id, &j.csr_pem, &j.cluster_name), proof))
                .copied()
        });
        if j.key_proof.is_some() && proven_key.is_none() {
            return Err(refuse(
                "the joiner's cluster key is not this cluster's (check --cluster-key on both sides)".into(),
            ));
        }
        match (&j.token, policy) {
            (None, JoinPolicy::KeyOrToken) if proven_key.is_some() => {}
            (None, JoinPolicy::KeyOrToken) => {
                return Err(refuse(
                    "this cluster is sealed with a cluster key: join with the same --cluster-key, or with a join token (quorate token create on a member)".into(),
                ));
            }
            (Some(t), _) => {
                let used = self
                    .write_local(Request::UseToken {
                        id: t.id.clone(),
                        secret_hash: secret_hash(&t.secret),
                        role: j.node.role,
                        at_ms: now,
                    })
                    .await?;
                used.outcome.map_err(|r| refuse(r.to_string()))?;
            }
            (None, JoinPolicy::Open) => {}
            (None, JoinPolicy::TokenOnly) => {
                return Err(refuse(
                    "this cluster admits nodes with a join token only (quorate token create on a member)".into(),
                ));
            }
        }
        self.write_local(put)
            .await?
            .outcome
            .map_err(|r| refuse(r.to_string()))?;
        let m = self.metrics();
        let mem = m.membership_config.membership();
        match mem.get_node(&j.node_id) {
            Some(n) if n.addr == j.raft_addr => {}
            Some(_) => {
                self.change(
                    ChangeMembers::SetNodes(BTreeMap::from([(
                        j.node_id,
                        BasicNode {
                            addr: j.raft_addr.clone(),
                        },
                    )])),
                    true,
                )
                .await?
            }
            None => self.add_learner(j.node_id, j.raft_addr.clone()).await?,
        }
        info!(node = format!("{:016x}", j.node_id), name = %j.node.name, role = ?j.node.role, token = j.token.as_ref().map(|t| t.id.as_str()), key = proven_key.is_some(), "node admitted as a learner");
        let key_proof = proven_key.map(|k| admit_proof(&k, j.node_id, &cert_pem, &self.ca_pem));
        Ok(JoinReply {
            cluster_id: cluster.id,
            cluster_name: cluster.name,
            ca_pem: self.ca_pem.clone(),
            cert_pem,
            ca_key_pem: (j.node.role == Role::Voter).then(|| ca_key.clone()),
            key_proof,
            secrets: self.secrets.lock().map(|s| s.clone()).unwrap_or_default(),
            leader_id: self.id,
        })
    }

    /// Records the cluster's identity (and settings) when this node bootstrapped it and the
    /// registry lacks it (also after a crash half way through a bootstrap).
    async fn ensure_cluster(&self) -> Result<(), ConsensusError> {
        if self.registry().cluster.is_some() || !self.cluster.bootstrapped {
            return Ok(());
        }
        let _one = self.initializing.lock().await;
        if self.registry().cluster.is_some() {
            return Ok(());
        }
        let w = self
            .write_local(Request::InitCluster {
                cluster: ClusterInfo {
                    id: self.cluster.cluster_id.clone(),
                    name: self.cluster.cluster_name.clone(),
                    created_ms: now_ms(),
                },
            })
            .await?;
        match w.outcome {
            Ok(()) => Ok(()),
            Err(crate::Refusal::AlreadyInitialized { id }) if id == self.cluster.cluster_id => {
                Ok(())
            }
            Err(r) => Err(ConsensusError::membership(r)),
        }
    }

    /// The registry record this node should have: its current addresses and name, its
    /// recorded labels (or its starting ones).
    fn wanted_record(&self, registry: &Registry) -> Option<NodeRecord> {
        let old = registry.nodes.get(&self.id);
        let mut want = self.info.record(
            self.id,
            &self.advertise.to_string(),
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
    async fn ensure_self_record(&self) -> Result<(), ConsensusError> {
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

    fn status(&self) -> Status {
        let m = self.metrics();
        let registry = self.registry();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let mut ids: BTreeSet<NodeId> = mem.nodes().map(|(id, _)| *id).collect();
        ids.extend(registry.nodes.keys().copied());
        let members = ids
            .into_iter()
            .map(|id| {
                let rec = registry.nodes.get(&id);
                let raft_addr = mem
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .or_else(|| rec.map(|r| r.raft_addr.clone()))
                    .unwrap_or_default();
                let suffrage = if voters.contains(&id) {
                    "voter"
                } else if mem.get_node(&id).is_some() {
                    "learner"
                } else {
                    "none"
                };
                MemberView {
                    id,
                    name: rec.map(|r| r.name.clone()),
                    role: rec.map(|r| r.role),
                    suffrage: suffrage.to_string(),
                    raft_addr,
                    gossip_addr: rec.map(|r| r.gossip_addr.clone()),
                    api_addr: rec.map(|r| r.api_addr.clone()),
                    matched_index: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten().map(|l| l.index))
                        .or_else(|| {
                            (id == m.id && m.current_leader == Some(m.id))
                                .then_some(m.last_log_index)
                                .flatten()
                        }),
                    status: rec.map(|r| r.status),
                    labels: rec.map(|r| r.labels.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
        };
        Status {
            cluster_id: self.cluster.cluster_id.clone(),
            cluster_name: self.cluster.cluster_name.clone(),
            node_id: self.id,
            state: state.to_string(),
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            voter_target: registry.settings.voter_target,
            open: self
                .policy
                .lock()
                .map(|p| *p == JoinPolicy::Open)
                .unwrap_or(false),
            members,
        }
    }

    /// One autopilot round on the leader.
    async fn autopilot_round(&self) -> Result<(), ConsensusError> {
        let m = self.metrics();
        if m.current_leader != Some(self.id) {
            return Ok(());
        }
        self.ensure_cluster().await?;
        let registry = self.registry();
        let mem = m.membership_config.membership();
        // A membership change in progress (joint config) is left to finish.
        if m.membership_config.membership().get_joint_config().len() > 1 {
            return Ok(());
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
            held_back: self.held_back.lock().map(|h| h.clone()).unwrap_or_default(),
            moved: mem
                .nodes()
                .filter_map(|(id, n)| {
                    let rec = registry.nodes.get(id)?;
                    (rec.raft_addr != n.addr).then(|| (*id, rec.raft_addr.clone()))
                })
                .collect(),
            failed_for: self
                .failed_since
                .lock()
                .map(|f| {
                    f.iter()
                        .map(|(id, t)| (*id, now.duration_since(*t)))
                        .collect()
                })
                .unwrap_or_default(),
            grace: self.grace.lock().map(|g| *g).unwrap_or(None),
        };
        let Some(action) = autopilot::next_action(&facts) else {
            return Ok(());
        };
        let _g = self.handover.read().await;
        if !self.is_leader() {
            return Ok(());
        }
        info!(action = ?action, "autopilot");
        match action {
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
                self.remove(id, &voters, &learners, &registry).await
            }
        }
    }
}

/// Lets a node that started holding its candidacy campaign after [`HOLD_ELECTION`]: by then
/// a live leader's heartbeats have reached it (or the whole cluster restarted, and somebody has
/// to campaign).
async fn release_election(inner: Arc<Inner>) {
    tokio::time::sleep(HOLD_ELECTION).await;
    inner.raft.runtime_config().elect(true);
}

async fn autopilot_loop(inner: Arc<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = inner.autopilot_round().await {
            debug!(error = %e, "autopilot round failed");
        }
    }
}

/// Keeps this node's own registry record current (after a restart on another address), and
/// stops campaigning once this node was removed from the group.
async fn keep_record(inner: Arc<Inner>) {
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

impl Handler for Inner {
    async fn handle(&self, peer: Option<NodeId>, remote: SocketAddr, request: Vec<u8>) -> Vec<u8> {
        let reply = match serde_json::from_slice::<Rpc>(&request) {
            Err(e) => {
                self.counters
                    .requests_refused
                    .fetch_add(1, Ordering::Relaxed);
                debug!(peer = %remote, error = %e, "malformed request");
                Reply::Refused {
                    reason: format!("malformed request: {e}"),
                }
            }
            Ok(rpc) => self.dispatch(peer, remote, rpc).await,
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }
}

impl Inner {
    async fn dispatch(&self, peer: Option<NodeId>, remote: SocketAddr, rpc: Rpc) -> Reply {
        let Some(peer) = peer else {
            return match rpc {
                Rpc::Join { join } => {
                    let ip = remote.ip();
                    if let Some(wait) = self.join_limit.blocked(ip, Instant::now()) {
                        self.counters.joins_limited.fetch_add(1, Ordering::Relaxed);
                        return Reply::Joined {
                            res: Err(ConsensusError::JoinRefused {
                                message: format!(
                                    "too many refused join attempts from {ip}; try again in {} s",
                                    wait.as_secs().max(1)
                                ),
                            }),
                        };
                    }
                    let node = join.node_id;
                    let op = Op::Join(join);
                    let done = self.route(op.clone()).await;
                    if let Err(ConsensusError::JoinRefused { message }) = &done {
                        self.join_limit.failed(ip, Instant::now());
                        warn!(source = %remote, node = format!("{node:016x}"), reason = %message, "join refused");
                    }
                    reply_of(done, &op)
                }
                _ => {
                    self.counters
                        .requests_refused
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %remote, "request without a member certificate refused");
                    Reply::Refused {
                        reason: "only members of this cluster may make this request".into(),
                    }
                }
            };
        };
        let claimed = match &rpc {
            Rpc::AppendEntries { req } => Some(req.vote.leader_id().voted_for()),
            Rpc::Vote { req } => Some(req.vote.leader_id().voted_for()),
            Rpc::InstallSnapshot { req } => Some(req.vote.leader_id().voted_for()),
            _ => None,
        };
        if let Some(claimed) = claimed
            && claimed != Some(peer)
        {
            self.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(peer = format!("{peer:016x}"), claimed = ?claimed, "a raft request claims another node than its certificate; refused");
            return Reply::Refused {
                reason: "the request's node is not the certificate's node".into(),
            };
        }
        match rpc {
            Rpc::AppendEntries { req } => Reply::AppendEntries {
                res: self.raft.append_entries(req).await,
            },
            Rpc::Vote { req } => Reply::Vote {
                res: self.raft.vote(req).await,
            },
            Rpc::InstallSnapshot { req } => Reply::InstallSnapshot {
                res: self.raft.install_snapshot(req).await,
            },
            Rpc::Elect => {
                let m = self.metrics();
                if m.current_leader != Some(peer) {
                    return Reply::Done {
                        res: Err(ConsensusError::membership(
                            "only the current leader may hand leadership over",
                        )),
                    };
                }
                let res = self
                    .raft
                    .trigger()
                    .elect()
                    .await
                    .map(|_| "campaigning".to_string())
                    .map_err(|_| ConsensusError::ShuttingDown);
                Reply::Done { res }
            }
            // Forwarded requests are served only by the leader: a member that forwarded them
            // routes again when told there is no leader here.
            Rpc::Write { req } => {
                let op = Op::Write(req);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Read => reply_of(self.local_if_leader(&Op::Read).await, &Op::Read),
            Rpc::Admin { op } => {
                let op = Op::Admin(op);
                reply_of(self.local_if_leader(&op).await, &op)
            }
            Rpc::Join { join } => {
                let op = Op::Join(join);
                reply_of(self.local_if_leader(&op).await, &op)
            }
        }
    }

    async fn local_if_leader(&self, op: &Op) -> Result<Done, ConsensusError> {
        if !self.is_leader() {
            return Err(not_leader());
        }
        self.local(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_blocked_after_a_burst_of_refusals_until_the_window_passes() {
        let l = JoinLimit::default();
        let ip: std::net::IpAddr = [10, 0, 0, 9].into();
        let other: std::net::IpAddr = [10, 0, 0, 8].into();
        let t0 = Instant::now();
        for i in 0..JoinLimit::BURST {
            assert_eq!(l.blocked(ip, t0), None, "after {i} refusals");
            l.failed(ip, t0 + Duration::from_millis(i as u64));
        }
        assert!(l.blocked(ip, t0 + Duration::from_secs(1)).is_some());
        assert_eq!(l.blocked(other, t0), None, "other sources are not affected");
        assert_eq!(
            l.blocked(ip, t0 + JoinLimit::WINDOW + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn key_proofs_bind_the_node_the_request_and_the_key() {
        let k = [1u8; 32];
        let p = key_proof(&k, 7, "csr", "c");
        assert!(same(&p, &key_proof(&k, 7, "csr", "c")));
        assert!(!same(&p, &key_proof(&k, 8, "csr", "c")));
        assert!(!same(&p, &key_proof(&k, 7, "csr2", "c")));
        assert!(!same(&p, &key_proof(&[2u8; 32], 7, "csr", "c")));
        assert_ne!(
            p,
            admit_proof(&k, 7, "csr", "c"),
            "join and admit proofs differ"
        );
    }
}
