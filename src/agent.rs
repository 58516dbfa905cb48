//! The agent: the long-running node process behind `quorate agent`.
//!
//! It settles the node's identity and addresses (data dir, node id, name, advertised address),
//! then runs the layers: gossip, mDNS discovery (whose peers become gossip seeds), the HTTP
//! API, and consensus: it resumes the cluster its data dir holds, or bootstraps one
//! (`--bootstrap`, `--dev`), or joins one through `--peers`. Once a member it publishes Raft's
//! view (state, leader, term, registry labels) into gossip and mDNS. It stops cleanly on
//! SIGINT or SIGTERM. The agent never decides membership itself: Raft does.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use std::net::Ipv4Addr;
use std::time::Duration;

use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};

use quorate_consensus::{
    AdminOp, Consensus, ConsensusConfig, JoinCredentials, JoinPolicy, NodeInfo, Settings,
    StartError, TokenProof, Trust,
};
use quorate_gossip::{Gossip, GossipConfig, Key, MemberStatus, NodeMeta};

use crate::bootstrap::{self, Decision};
use crate::token::JoinToken;

use crate::api::{ApiState, ConsensusCell};
use quorate_discovery::{
    Advert, AdvertRole, AdvertState, Advertisement, DiscoveryError, Interfaces, Mdns, MdnsConfig,
};
use tracing::{info, warn};

use crate::config::{self, Config, Role};
use crate::data_dir::{DataDir, DataDirError};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data dir was refused.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// No per-user data directory is known and none was configured.
    #[error("no home directory to keep data in; set --data-dir (or QUORATE_DATA_DIR)")]
    NoDataDir,
    /// The temporary data dir of dev mode could not be made.
    #[error("cannot create a temporary data dir for dev mode: {0}")]
    DevDataDir(std::io::Error),
    /// The host name cannot serve as the node name.
    #[error("the host name cannot be the node name ({0}); set --name")]
    HostName(String),
    /// No address to advertise was configured or found.
    #[error(
        "no non-loopback address to advertise was found ({0}); set --advertise, or use --dev on a single machine"
    )]
    NoAdvertise(String),
    /// mDNS discovery could not start.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// Gossip could not start.
    #[error(transparent)]
    Gossip(#[from] quorate_gossip::GossipError),
    /// The gossip keyring could not be read or kept.
    #[error("{0}")]
    Keyring(String),
    /// The HTTP API could not start.
    #[error("http api: {0}")]
    Http(String),
    /// Waiting for signals failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signals(std::io::Error),
    /// Consensus could not start, or the cluster refused this node.
    #[error("consensus: {0}")]
    Consensus(#[from] StartError),
}

/// The settings the agent runs with once every default is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The data directory in use.
    pub data_dir: PathBuf,
    /// The node name.
    pub name: String,
    /// The address other nodes reach this one at.
    pub advertise: IpAddr,
}

/// A started agent: identity settled, data dir locked.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    resolved: Resolved,
    data_dir: Arc<DataDir>,
    // Dropped last: dev mode's throw-away data dir is removed when the agent ends.
    _dev_dir: Option<tempfile::TempDir>,
}

impl Agent {
    /// Resolves defaults, opens the data dir and settles the node id.
    pub fn start(config: Config) -> Result<Agent, AgentError> {
        let (data_dir_path, dev_dir) = match (&config.data_dir, config.dev) {
            (Some(p), _) => (p.clone(), None),
            (None, true) => {
                let tmp = tempfile::Builder::new()
                    .prefix("quorate-dev-")
                    .tempdir()
                    .map_err(AgentError::DevDataDir)?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
            (None, false) => (default_data_dir().ok_or(AgentError::NoDataDir)?, None),
        };
        let name = match &config.name {
            Some(n) => n.clone(),
            None => {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                config::check_node_name(&host).map_err(AgentError::HostName)?;
                host
            }
        };
        let advertise = match config.advertise {
            Some(ip) => ip,
            None => first_non_loopback().map_err(AgentError::NoAdvertise)?,
        };
        let data_dir = DataDir::open(&data_dir_path)?;
        let resolved = Resolved {
            data_dir: data_dir_path,
            name,
            advertise,
        };
        Ok(Agent {
            config,
            resolved,
            data_dir: Arc::new(data_dir),
            _dev_dir: dev_dir,
        })
    }

    /// The resolved settings.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// Runs until `shutdown` completes, then stops cleanly.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<(), AgentError> {
        let c = &self.config;
        let r = &self.resolved;
        info!(
            node_id = %self.data_dir.node_id(),
            name = %r.name,
            role = %c.role,
            cluster = %c.cluster,
            data_dir = %r.data_dir.display(),
            first_start = self.data_dir.created(),
            "node identity ready"
        );
        if self._dev_dir.is_some() {
            warn!(data_dir = %r.data_dir.display(), "dev mode: state is kept in a temporary directory and removed on exit");
        }
        let admin_token = self
            .data_dir
            .admin_token()
            .map_err(|e| AgentError::Keyring(format!("cannot keep the admin credential: {e}")))?;
        info!(file = %self.data_dir.path().join(crate::ADMIN_TOKEN_FILE).display(), "admin credential ready: the CLI reads it on this machine (or give it --admin-token)");
        if self._dev_dir.is_some() {
            warn!(
                "dev mode: to make changes with the CLI, point it at the temporary data dir: export QUORATE_DATA_DIR={}",
                r.data_dir.display()
            );
        }
        let gossip = Arc::new(self.start_gossip().await?);
        let view: MdnsView = Arc::default();
        let mdns = if c.discovery.enabled {
            Some(Arc::new(
                self.start_discovery(gossip.clone(), view.clone())?,
            ))
        } else {
            None
        };
        let consensus: ConsensusCell = Arc::default();
        let leave = Arc::new(tokio::sync::Notify::new());
        let (http_stop, http_done) = self
            .start_http(HttpParts {
                gossip: gossip.clone(),
                discovery: mdns.as_ref().map(|m| m.stats()),
                consensus: consensus.clone(),
                admin_token,
                leave: leave.clone(),
            })
            .await?;
        info!(
            advertise = %r.advertise,
            gossip = %SocketAddr::new(c.bind, c.gossip_port),
            quic = %SocketAddr::new(c.bind, c.quic_port),
            http = %c.http_addr,
            "agent running"
        );
        let plan = self.consensus_plan(&gossip, view);
        let starter = {
            let cell = consensus.clone();
            let gossip = gossip.clone();
            let mdns = mdns.clone();
            let advert = self.advertisement();
            let data_dir = self.data_dir.clone();
            let grace = c.raft.failed_grace;
            tokio::spawn(async move {
                let (node, secrets) = plan.start().await?;
                adopt_secrets(&gossip, &data_dir, &secrets);
                let _ = cell.set(node.clone());
                publish(node, gossip, mdns, advert, grace).await;
                Ok::<(), AgentError>(())
            })
        };
        let outcome = tokio::select! {
            signal = shutdown => {
                info!(signal, "shutting down");
                if signal == "SIGTERM" && c.leave_on_terminate {
                    match consensus.get() {
                        Some(node) => match node.admin(AdminOp::Leave { node: node.id() }).await {
                            Ok(m) => {
                                info!(message = %m, "left the cluster (leave_on_terminate)");
                                Ok(Stop::Left)
                            }
                            Err(e) => {
                                warn!(error = %e, "could not leave the cluster; stopping as a member");
                                Ok(Stop::Member)
                            }
                        },
                        None => Ok(Stop::Member),
                    }
                } else {
                    Ok(Stop::Member)
                }
            }
            () = leave.notified() => {
                info!("left the cluster (quorate leave); stopping");
                Ok(Stop::Left)
            }
            started = starter => match started {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(Stop::Member),
                Err(e) => Err(AgentError::Http(format!("consensus task ended: {e}"))),
            },
        };
        if let Err(e) = &outcome {
            warn!(error = %e, "stopping");
        }
        if let Some(node) = consensus.get() {
            node.shutdown().await;
            info!("consensus stopped");
        }
        if matches!(outcome, Ok(Stop::Left)) {
            // This node is no longer a member: keep its old state aside, so that a restart
            // starts afresh (and may join again) instead of resuming a membership it gave up.
            let dir = self.data_dir.path().join("consensus");
            let kept = self.data_dir.path().join(format!(
                "consensus.left-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ));
            match std::fs::rename(&dir, &kept) {
                Ok(()) => {
                    info!(kept = %kept.display(), "the cluster state of this node was set aside; a restart starts afresh")
                }
                Err(e) => warn!(error = %e, "could not set the cluster state aside"),
            }
        }
        if let Some(mdns) = mdns {
            match mdns.shutdown(Duration::from_secs(2)).await {
                Ok(()) => info!("mdns goodbye sent"),
                Err(e) => warn!(error = %e, "mdns goodbye not confirmed"),
            }
        }
        gossip.leave().await;
        info!("left gossip");
        let _ = http_stop.send(());
        let _ = http_done.await;
        drop(self.data_dir);
        info!("agent stopped");
        outcome.map(|_| ())
    }
}

/// What the HTTP API shares with the agent.
struct HttpParts {
    gossip: Arc<Gossip>,
    discovery: Option<Arc<quorate_discovery::Stats>>,
    consensus: ConsensusCell,
    admin_token: String,
    leave: Arc<tokio::sync::Notify>,
}

/// How the agent stops.
enum Stop {
    /// Still a member: a restart resumes.
    Member,
    /// It left the cluster.
    Left,
}

/// What mDNS shows, by node id (peers of every cluster; the agent filters).
pub type MdnsView = Arc<std::sync::Mutex<BTreeMap<String, quorate_discovery::Peer>>>;

/// How this agent comes to be a member.
enum Mode {
    /// `--bootstrap` or `--dev`: make the cluster.
    Bootstrap,
    /// `--peers`: join through these members (an open cluster, or one sealed with our key).
    Peers(Vec<SocketAddr>),
    /// `--join TOKEN`: join the cluster the token names.
    Token {
        token: JoinToken,
        peers: Vec<SocketAddr>,
    },
    /// Nothing given: find the cluster (or the nodes to form it with) by mDNS.
    ZeroConfig { discovery: bool },
}

/// How this agent takes part in consensus, decided from its data dir and configuration.
struct ConsensusPlan {
    config: ConsensusConfig,
    info: NodeInfo,
    cluster: String,
    mode: Mode,
    voter_target: u8,
    expect: usize,
    key: Option<[u8; 32]>,
    view: MdnsView,
}

/// How long the view of forming nodes must stay unchanged before the lowest bootstraps.
const SETTLE: Duration = Duration::from_secs(1);

impl ConsensusPlan {
    fn credentials(&self, trust: Trust, token: Option<TokenProof>) -> JoinCredentials {
        JoinCredentials {
            trust,
            token,
            key: self.key,
        }
    }

    /// Resumes the stored cluster, or bootstraps, or joins, as the configuration says;
    /// returns the running node and the secrets a join handed over.
    async fn start(self) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        if let Some(stored) = Consensus::stored(&self.config.dir)? {
            if !matches!(self.mode, Mode::ZeroConfig { .. }) {
                info!(cluster = %stored.cluster_name, cluster_id = %stored.cluster_id, "this node belongs to a cluster already; --bootstrap, --peers and --join are ignored");
            }
            let node = Consensus::open(self.config, self.info).await?;
            info!(cluster = %stored.cluster_name, cluster_id = %stored.cluster_id, "resumed cluster membership");
            return Ok((Arc::new(node), BTreeMap::new()));
        }
        match &self.mode {
            Mode::Bootstrap => self.bootstrap().await,
            Mode::Peers(peers) => {
                let peers = peers.clone();
                self.join_loop("--peers", || (peers.clone(), Trust::FirstUse, None))
                    .await
            }
            Mode::Token { token, peers } => {
                let token = token.clone();
                let peers = peers.clone();
                let view = self.view.clone();
                let cluster = self.cluster.clone();
                self.join_loop("the join token", move || {
                    let ca = token.ca_hex();
                    let mut seeds = peers.clone();
                    seeds.extend(token.addrs.iter().copied());
                    seeds.extend(members_with_ca(&view, &cluster, &ca));
                    seeds.dedup();
                    let proof = TokenProof {
                        id: token.id_hex(),
                        secret: token.secret_hex(),
                    };
                    (seeds, Trust::Pinned(ca), Some(proof))
                })
                .await
            }
            Mode::ZeroConfig { discovery } => {
                if !discovery {
                    info!(
                        "not a member of a cluster, and mDNS discovery is off: give --bootstrap, --peers or --join"
                    );
                    return std::future::pending().await;
                }
                self.zero_config().await
            }
        }
    }

    async fn bootstrap(self) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let settings = Settings {
            voter_target: self.voter_target,
            ..Settings::default()
        };
        let node = Consensus::bootstrap(self.config, self.info, &self.cluster, settings).await?;
        if self.key.is_none() {
            warn!(
                cluster = %self.cluster,
                "the cluster is open (no cluster key): any node that reaches a member may join it without a token; use it only on a trusted network, or give every node --cluster-key"
            );
        }
        Ok((Arc::new(node), BTreeMap::new()))
    }

    /// Joins through the seeds `seeds_now` gives at each attempt, retrying with backoff while
    /// no member answers; a refusal, or a cluster that is not the one the token names, ends it.
    async fn join_loop(
        &self,
        via: &str,
        seeds_now: impl Fn() -> (Vec<SocketAddr>, Trust, Option<TokenProof>),
    ) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let mut backoff = Duration::from_millis(250);
        let mut foreign_rounds = 0;
        for attempt in 0.. {
            let (seeds, trust, token) = seeds_now();
            if seeds.is_empty() {
                if attempt == 0 {
                    info!(
                        via,
                        "looking for a member of the cluster on mDNS; give --peers if mDNS does not reach it"
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            match Consensus::join(
                self.config.clone(),
                self.info.clone(),
                &self.cluster,
                &seeds,
                self.credentials(trust, token),
            )
            .await
            {
                Ok((node, secrets)) => return Ok((Arc::new(node), secrets)),
                Err(e @ StartError::JoinRefused(_)) => return Err(e.into()),
                Err(StartError::JoinFailed { attempts, foreign }) => {
                    foreign_rounds = if foreign { foreign_rounds + 1 } else { 0 };
                    if foreign_rounds >= 3 {
                        return Err(AgentError::Consensus(StartError::JoinRefused(
                            quorate_consensus::ConsensusError::JoinRefused {
                                message: format!(
                                    "the join token belongs to another cluster: every member reached presents another CA than the token's ({})",
                                    attempts.join("; ")
                                ),
                            },
                        )));
                    }
                    warn!(via, attempts = ?attempts, retry_in = ?backoff, "join failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the join loop ends only by returning")
    }

    /// Zero configuration: wait until mDNS shows a formed cluster to join, or enough forming
    /// voters for the lowest of them to make one.
    async fn zero_config(self) -> Result<(Arc<Consensus>, BTreeMap<String, String>), AgentError> {
        let me = self.config.node_id;
        let voter = self.info.role == quorate_consensus::Role::Voter;
        let started = std::time::Instant::now();
        let mut forming_seen: BTreeSet<u64> = BTreeSet::new();
        let mut since = started;
        let mut said = String::new();
        let mut backoff = Duration::from_millis(250);
        loop {
            let peers = seen_peers(&self.view, &self.cluster, me);
            let forming: BTreeSet<u64> = peers
                .iter()
                .filter(|p| p.voter && !p.member)
                .map(|p| p.id)
                .collect();
            if forming != forming_seen {
                forming_seen = forming;
                since = std::time::Instant::now();
            }
            let stable = since.elapsed().min(started.elapsed());
            match bootstrap::decide(me, voter, &peers, self.expect, stable, SETTLE) {
                Decision::Wait(why) => {
                    if why != said {
                        info!(reason = %why, "zero-config: waiting");
                        said = why;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Decision::Bootstrap => {
                    info!(
                        expect = self.expect,
                        "zero-config: this node has the lowest id of the forming voters and forms the cluster"
                    );
                    return self.bootstrap().await;
                }
                Decision::Join { ca, seeds } => {
                    info!(ca = %ca, seeds = ?seeds, "zero-config: joining the formed cluster");
                    match Consensus::join(
                        self.config.clone(),
                        self.info.clone(),
                        &self.cluster,
                        &seeds,
                        self.credentials(Trust::Pinned(ca.clone()), None),
                    )
                    .await
                    {
                        Ok((node, secrets)) => return Ok((Arc::new(node), secrets)),
                        // Nobody asked for this cluster by name: a refusal (another cluster
                        // key, say) is reported and retried slowly, not fatal.
                        Err(e @ StartError::JoinRefused(_)) => {
                            warn!(error = %e, ca = %ca, retry_in = "30s", "zero-config: the formed cluster refused this node; is --cluster-key the same on every node?");
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        Err(e @ StartError::JoinFailed { .. }) => {
                            warn!(error = %e, retry_in = ?backoff, "zero-config: join failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// The peers of `cluster` that mDNS shows, other than `me`, as the bootstrap decision needs them.
fn seen_peers(view: &MdnsView, cluster: &str, me: u64) -> Vec<bootstrap::Seen> {
    let Ok(v) = view.lock() else {
        return Vec::new();
    };
    v.values()
        .filter(|p| p.cluster == cluster)
        .filter_map(|p| {
            let id = u64::from_str_radix(&p.id, 16).ok()?;
            (id != me).then(|| bootstrap::Seen {
                id,
                voter: p.role == AdvertRole::Voter,
                member: p.state == AdvertState::Member,
                quic: p.preferred_addr().map(|ip| SocketAddr::new(ip, p.port)),
                ca: p.ca.clone(),
            })
        })
        .collect()
}

/// QUIC addresses of members of `cluster` whose advertised CA prefix matches `ca`.
fn members_with_ca(view: &MdnsView, cluster: &str, ca: &str) -> Vec<SocketAddr> {
    let Ok(v) = view.lock() else {
        return Vec::new();
    };
    v.values()
        .filter(|p| p.cluster == cluster && p.state == AdvertState::Member)
        .filter(|p| {
            p.ca.as_deref()
                .is_some_and(|pre| pre.len() >= 16 && ca.starts_with(pre))
        })
        .filter_map(|p| p.preferred_addr().map(|ip| SocketAddr::new(ip, p.port)))
        .collect()
}

/// A node that joined a sealed cluster while its own gossip was open takes the cluster's keys.
fn adopt_secrets(gossip: &Gossip, data_dir: &DataDir, secrets: &BTreeMap<String, String>) {
    let Some(list) = secrets.get(GOSSIP_KEYS_SECRET) else {
        return;
    };
    let keys: Vec<Key> = serde_json::from_str::<Vec<String>>(list)
        .unwrap_or_default()
        .iter()
        .filter_map(|k| Key::from_base64(k).ok())
        .collect();
    if keys.is_empty() || !gossip.keys().is_empty() {
        return;
    }
    let stored: Vec<String> = keys.iter().map(Key::to_base64).collect();
    match gossip.adopt_keys(keys) {
        Ok(()) => {
            if let Err(e) = data_dir.save_keyring(&stored) {
                warn!(error = %e, "the cluster's gossip keys could not be saved in the data dir");
            }
            info!("gossip sealed with the cluster's keys");
        }
        Err(e) => warn!(error = %e, "could not take the cluster's gossip keys"),
    }
}

/// The join secret that carries the gossip keyring (base64 keys, primary first, as JSON).
const GOSSIP_KEYS_SECRET: &str = "gossip_keys";

/// Publishes Raft's view into gossip (state, leader, term, this node's registry labels) and
/// into the mDNS advertisement (state member, CA fingerprint), whenever it changes; keeps the
/// join policy, keys and secrets in step with the gossip keyring; tells the autopilot which
/// nodes gossip reports failed; seeds gossip with the registry's members.
async fn publish(
    node: Arc<Consensus>,
    gossip: Arc<Gossip>,
    mdns: Option<Arc<Mdns>>,
    advert: Option<Advertisement>,
    grace: Duration,
) {
    if let (Some(mdns), Some(mut ad)) = (mdns.as_ref(), advert) {
        ad.advert.state = AdvertState::Member;
        ad.advert.ca = Some(node.cluster().ca_fingerprint[..16].to_string());
        match mdns.advertise(&ad) {
            Ok(_) => info!("mdns advertisement says member"),
            Err(e) => warn!(error = %e, "mdns advertisement not updated"),
        }
    }
    let mut published: Option<NodeMeta> = None;
    let mut failed_since: BTreeMap<u64, std::time::Instant> = BTreeMap::new();
    let mut seeded: BTreeSet<SocketAddr> = BTreeSet::new();
    loop {
        // Join policy and secrets follow the keyring (rotations included).
        let keys = gossip.keys();
        node.set_join_policy(if keys.is_empty() {
            JoinPolicy::Open
        } else {
            JoinPolicy::KeyOrToken
        });
        node.set_join_keys(keys.iter().map(|k| *k.as_bytes()).collect());
        let list: Vec<String> = keys.iter().map(Key::to_base64).collect();
        node.set_join_secrets(BTreeMap::from([(
            GOSSIP_KEYS_SECRET.to_string(),
            serde_json::to_string(&list).unwrap_or_default(),
        )]));

        let status = node.status();
        let mut meta = gossip.meta().await;
        meta.cluster_state = "member".to_string();
        meta.raft_leader = status.leader_id.map(|l| format!("{l:016x}"));
        meta.raft_term = Some(status.term);
        if let Some(me) = status.members.iter().find(|m| m.id == status.node_id)
            && me.name.is_some()
        {
            meta.labels = me.labels.clone();
        }
        if published.as_ref() != Some(&meta) {
            gossip.set_meta(meta.clone()).await;
            published = Some(meta);
        }

        // Failures as gossip reports them (failed, or gone without deregistering).
        let now = std::time::Instant::now();
        let mut down = BTreeSet::new();
        for m in gossip.members() {
            if matches!(m.status, MemberStatus::Failed | MemberStatus::Left)
                && let Ok(id) = u64::from_str_radix(&m.id, 16)
            {
                down.insert(id);
            }
        }
        failed_since.retain(|id, _| down.contains(id));
        for id in down {
            failed_since.entry(id).or_insert(now);
        }
        node.set_failed(failed_since.clone(), Some(grace));

        // Every member's gossip address is a seed (mDNS may not reach them all).
        let fresh: Vec<SocketAddr> = node
            .local_registry()
            .nodes
            .values()
            .filter(|n| n.id != status.node_id)
            .filter_map(|n| n.gossip_addr.parse().ok())
            .filter(|a| !seeded.contains(a))
            .collect();
        if !fresh.is_empty() {
            seeded.extend(fresh.iter().copied());
            gossip.add_seeds(fresh);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Agent {
    /// What consensus needs from the configuration.
    fn consensus_plan(&self, gossip: &Gossip, view: MdnsView) -> ConsensusPlan {
        let c = &self.config;
        let r = &self.resolved;
        let id = self.data_dir.node_id().get();
        let mut config = ConsensusConfig::new(
            id,
            self.data_dir.path().join("consensus"),
            SocketAddr::new(c.bind, c.quic_port),
            SocketAddr::new(r.advertise, c.quic_port),
        );
        config.write_timeout = c.raft.write_timeout;
        let mode = if c.bootstrap || c.dev {
            Mode::Bootstrap
        } else if let Some(token) = c.join.as_deref().and_then(|t| JoinToken::decode(t).ok()) {
            Mode::Token {
                token,
                peers: c.peer_addrs(),
            }
        } else if !c.peers.is_empty() {
            Mode::Peers(c.peer_addrs())
        } else {
            Mode::ZeroConfig {
                discovery: c.discovery.enabled,
            }
        };
        ConsensusPlan {
            config,
            info: NodeInfo {
                name: r.name.clone(),
                role: match c.role {
                    Role::Voter => quorate_consensus::Role::Voter,
                    Role::Storage => quorate_consensus::Role::Storage,
                },
                gossip_addr: SocketAddr::new(r.advertise, c.gossip_port).to_string(),
                api_addr: c.http_addr.to_string(),
                labels: c.labels.clone(),
            },
            cluster: c.cluster.clone(),
            mode,
            voter_target: if c.dev { 1 } else { c.raft.voter_target },
            expect: c.bootstrap_expect,
            key: gossip.keys().first().map(|k| *k.as_bytes()),
            view,
        }
    }

    /// The keys to seal gossip with: the data dir's keyring if it has one, else the configured
    /// cluster key (which then starts the keyring), else none (open).
    fn gossip_keys(&self) -> Result<Vec<Key>, AgentError> {
        let stored = self.data_dir.load_keyring()?;
        let configured = self.config.cluster_key.as_deref();
        let keys = match (stored, configured) {
            (Some(list), configured) => {
                let keys = list
                    .iter()
                    .map(|k| Key::from_base64(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        AgentError::Keyring(format!(
                            "the data dir's gossip keyring is damaged: {e}"
                        ))
                    })?;
                if let Some(c) = configured.and_then(|c| Key::from_base64(c).ok())
                    && !keys.contains(&c)
                {
                    warn!(
                        "cluster_key is not in this node's keyring and is ignored: the keyring in the data dir wins; rotate keys with `quorate keyring`"
                    );
                }
                keys
            }
            (None, Some(c)) => {
                let key = Key::from_base64(c).map_err(|e| AgentError::Keyring(e.to_string()))?;
                self.data_dir
                    .save_keyring(&[key.to_base64()])
                    .map_err(|e| {
                        AgentError::Keyring(format!("cannot save the gossip keyring: {e}"))
                    })?;
                vec![key]
            }
            (None, None) => Vec::new(),
        };
        Ok(keys)
    }

    /// Starts gossip with this node's metadata.
    async fn start_gossip(&self) -> Result<Gossip, AgentError> {
        let c = &self.config;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let generation = self.data_dir.next_generation(now_ms).map_err(|e| {
            AgentError::Keyring(format!("cannot record the gossip generation: {e}"))
        })?;
        let listen = SocketAddr::new(c.bind, c.gossip_port);
        let advertise = SocketAddr::new(self.resolved.advertise, c.gossip_port);
        let mut config = GossipConfig::lan(
            self.data_dir.node_id().to_string(),
            c.cluster.clone(),
            listen,
            advertise,
        );
        config.generation = generation;
        config.seeds = c
            .gossip
            .seeds
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        config.interval = c.gossip.interval;
        config.phi_threshold = c.gossip.phi_threshold;
        config.reap_after = c.gossip.reap_after;
        config.keys = self.gossip_keys()?;
        let meta = NodeMeta {
            name: self.resolved.name.clone(),
            role: c.role.to_string(),
            quic_addr: Some(SocketAddr::new(self.resolved.advertise, c.quic_port)),
            api_addr: Some(c.http_addr),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_state: "forming".to_string(),
            raft_leader: None,
            raft_term: None,
            labels: c.labels.clone(),
        };
        Ok(Gossip::start(config, meta).await?)
    }

    /// Serves the HTTP API until told to stop.
    async fn start_http(
        &self,
        parts: HttpParts,
    ) -> Result<
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
        AgentError,
    > {
        let addr = self.config.http_addr;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AgentError::Http(format!("cannot listen on {addr}: {e}; set --http-addr"))
        })?;
        let state = ApiState {
            node_id: self.data_dir.node_id().to_string(),
            gossip: parts.gossip,
            data_dir: self.data_dir.clone(),
            discovery: parts.discovery,
            consensus: parts.consensus,
            admin_token: Arc::new(parts.admin_token),
            leave: parts.leave,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = crate::api::router(state);
        let done = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                warn!(error = %e, "http api stopped with an error");
            }
        });
        Ok((stop, done))
    }

    /// This node's mDNS advertisement while it is forming (`None` when discovery is off).
    fn advertisement(&self) -> Option<Advertisement> {
        let c = &self.config;
        if !c.discovery.enabled {
            return None;
        }
        let id = self.data_dir.node_id().to_string();
        // Advertise what the node listens on: a fixed address when one is configured (or in
        // dev mode), else every address of the selected interfaces, kept current by mDNS.
        let addrs = if c.dev {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else if c.advertise.is_some() {
            vec![self.resolved.advertise]
        } else if !c.bind.is_unspecified() {
            vec![c.bind]
        } else {
            Vec::new()
        };
        let advert = Advert {
            id: id.clone(),
            cluster: c.cluster.clone(),
            role: match c.role {
                Role::Voter => AdvertRole::Voter,
                Role::Storage => AdvertRole::Storage,
            },
            gossip_port: c.gossip_port,
            api_port: c.http_addr.port(),
            state: AdvertState::Forming,
            ca: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        Some(Advertisement {
            instance: self.resolved.name.clone(),
            host: format!("q-{id}.local."),
            port: c.quic_port,
            addrs,
            advert,
        })
    }

    /// Advertises this node on mDNS, keeps `view` (what mDNS shows), logs the peers it hears
    /// of, and hands the gossip address of each peer of this cluster to gossip as a seed.
    fn start_discovery(&self, gossip: Arc<Gossip>, view: MdnsView) -> Result<Mdns, AgentError> {
        let c = &self.config;
        let id = self.data_dir.node_id().to_string();
        let present: Vec<String> = if_addrs::get_if_addrs()
            .map(|v| v.into_iter().map(|i| i.name).collect())
            .unwrap_or_default();
        for name in c
            .discovery
            .interfaces
            .iter()
            .filter(|n| !present.contains(n))
        {
            warn!(interface = %name, "configured mdns interface is not present; nothing is advertised on it until it appears");
        }
        let mdns = Mdns::start(MdnsConfig {
            service_type: c.discovery.service_type.clone(),
            interfaces: Interfaces {
                include: c.discovery.interfaces.clone(),
                exclude: c.discovery.exclude_interfaces.clone(),
                loopback_only: c.dev,
            },
            // Liveness is gossip's job; mDNS entries go on goodbye or TTL expiry.
            verify_every: None,
            verify_timeout: Duration::from_secs(3),
        })?;
        let ad = self
            .advertisement()
            .ok_or_else(|| DiscoveryError::Daemon("nothing to advertise".into()))?;
        let fullname = mdns.advertise(&ad)?;
        info!(instance = %fullname, service_type = %c.discovery.service_type, "advertising on mdns");
        let mut events = mdns.browse(Some(id))?;
        let cluster = c.cluster.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let p = ev.peer();
                info!(event = ev.kind(), peer = %p.id, name = %p.name, cluster = %p.cluster, state = ?p.state, addrs = ?p.addrs, "mdns peer");
                if let Ok(mut v) = view.lock() {
                    match &ev {
                        quorate_discovery::PeerEvent::Lost(_) => {
                            v.remove(&p.id);
                        }
                        _ => {
                            v.insert(p.id.clone(), p.clone());
                        }
                    }
                }
                if p.cluster == cluster && !matches!(ev, quorate_discovery::PeerEvent::Lost(_)) {
                    gossip.add_seeds(
                        p.addrs
                            .iter()
                            .filter(|a| a.is_ipv4())
                            .map(|a| SocketAddr::new(*a, p.gossip_port)),
                    );
                }
            }
        });
        Ok(mdns)
    }
}

/// Waits for SIGINT or SIGTERM and says which arrived.
pub async fn shutdown_signal() -> Result<&'static str, AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// Starts the agent and runs it until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AgentError> {
    // Install the handlers before anything slow, so an early signal is not lost.
    let signals = tokio::spawn(shutdown_signal());
    let agent = Agent::start(config)?;
    agent
        .run_until(async move {
            match signals.await {
                Ok(Ok(name)) => name,
                _ => "signal handler failure",
            }
        })
        .await
}

/// `~/.local/share/quorate` (or `$XDG_DATA_HOME/quorate`) for the running user.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "quorate").map(|d| d.data_dir().to_path_buf())
}

/// The first usable address of this machine that is not loopback: IPv4 before IPv6, and
/// link-local addresses last.
fn first_non_loopback() -> Result<IpAddr, String> {
    let ifaces = if_addrs::get_if_addrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    let rank = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) if !v4.is_link_local() => 0,
        IpAddr::V6(v6) if !v6.is_unicast_link_local() => 1,
        IpAddr::V4(_) => 2,
        IpAddr::V6(_) => 3,
    };
    ifaces
        .iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast())
        .filter(|ip| rank(ip) < 3) // an IPv6 link-local address needs a scope to be reached
        .min_by_key(|ip| rank(ip))
        .ok_or_else(|| "only loopback interfaces are up".to_string())
}
