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

use std::sync::{Arc, OnceLock};

use quorate_consensus::{Consensus, ConsensusConfig, NodeInfo, Settings, StartError, Trust};
use quorate_gossip::{Gossip, GossipConfig, Key, NodeMeta};

use crate::api::ApiState;
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

/// Where the running consensus node is, once there is one.
pub type ConsensusCell = Arc<OnceLock<Arc<Consensus>>>;

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
        let gossip = Arc::new(self.start_gossip().await?);
        let mdns = if c.discovery.enabled {
            Some(Arc::new(self.start_discovery(gossip.clone())?))
        } else {
            None
        };
        let consensus: ConsensusCell = Arc::default();
        let (http_stop, http_done) = self
            .start_http(
                gossip.clone(),
                mdns.as_ref().map(|m| m.stats()),
                consensus.clone(),
            )
            .await?;
        info!(
            advertise = %r.advertise,
            gossip = %SocketAddr::new(c.bind, c.gossip_port),
            quic = %SocketAddr::new(c.bind, c.quic_port),
            http = %c.http_addr,
            "agent running"
        );
        let plan = self.consensus_plan();
        let starter = {
            let cell = consensus.clone();
            let gossip = gossip.clone();
            let mdns = mdns.clone();
            let advert = self.advertisement();
            tokio::spawn(async move {
                let node = plan.start().await?;
                let _ = cell.set(node.clone());
                publish(node, gossip, mdns, advert).await;
                Ok::<(), AgentError>(())
            })
        };
        let outcome = tokio::select! {
            signal = shutdown => {
                info!(signal, "shutting down");
                Ok(())
            }
            started = starter => match started {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(()),
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
        outcome
    }
}

/// How this agent takes part in consensus, decided from its data dir and configuration.
struct ConsensusPlan {
    config: ConsensusConfig,
    info: NodeInfo,
    cluster: String,
    bootstrap: bool,
    voter_target: u8,
    peers: Vec<SocketAddr>,
}

impl ConsensusPlan {
    /// Resumes the stored cluster, or bootstraps, or joins (retrying until a member answers);
    /// with none of these, waits for one of them to be configured.
    async fn start(self) -> Result<Arc<Consensus>, AgentError> {
        if let Some(stored) = Consensus::stored(&self.config.dir)? {
            if self.bootstrap || !self.peers.is_empty() {
                info!(cluster = %stored.cluster_name, cluster_id = %stored.cluster_id, "this node belongs to a cluster already; --bootstrap and --peers are ignored");
            }
            let node = Consensus::open(self.config, self.info).await?;
            info!(cluster = %stored.cluster_name, cluster_id = %stored.cluster_id, "resumed cluster membership");
            return Ok(Arc::new(node));
        }
        if self.bootstrap {
            let settings = Settings {
                voter_target: self.voter_target,
                ..Settings::default()
            };
            let node =
                Consensus::bootstrap(self.config, self.info, &self.cluster, settings).await?;
            warn!(
                cluster = %self.cluster,
                "the cluster is open: any node that reaches a member over QUIC may join it; use it only on a trusted network"
            );
            return Ok(Arc::new(node));
        }
        if self.peers.is_empty() {
            info!(
                "not a member of a cluster: start one with --bootstrap, or join one with --peers"
            );
            return std::future::pending().await;
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            match Consensus::join(
                self.config.clone(),
                self.info.clone(),
                &self.cluster,
                &self.peers,
                Trust::FirstUse,
                None,
            )
            .await
            {
                Ok((node, _secrets)) => return Ok(Arc::new(node)),
                Err(e @ StartError::JoinRefused(_)) => return Err(e.into()),
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "join failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Publishes Raft's view into gossip (state, leader, term, this node's registry labels) and
/// into the mDNS advertisement (state member, CA fingerprint), whenever it changes.
async fn publish(
    node: Arc<Consensus>,
    gossip: Arc<Gossip>,
    mdns: Option<Arc<Mdns>>,
    advert: Option<Advertisement>,
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
    loop {
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Agent {
    /// What consensus needs from the configuration.
    fn consensus_plan(&self) -> ConsensusPlan {
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
            bootstrap: c.bootstrap || c.dev,
            voter_target: if c.dev { 1 } else { c.raft.voter_target },
            peers: c.peer_addrs(),
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
        gossip: Arc<Gossip>,
        discovery: Option<Arc<quorate_discovery::Stats>>,
        consensus: ConsensusCell,
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
            gossip,
            data_dir: self.data_dir.clone(),
            discovery,
            consensus,
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

    /// Advertises this node on mDNS, logs the peers it hears of, and hands the gossip address
    /// of each peer of this cluster to gossip as a seed.
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

    fn start_discovery(&self, gossip: Arc<Gossip>) -> Result<Mdns, AgentError> {
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
                info!(event = ev.kind(), peer = %p.id, name = %p.name, cluster = %p.cluster, addrs = ?p.addrs, "mdns peer");
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
