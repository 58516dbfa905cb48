//! The agent: the long-running node process behind `quorate agent`.
//!
//! It settles the node's identity and addresses (data dir, node id, name, advertised address,
//! see [`Resolved`]), then runs the layers (started in `layers`): gossip, mDNS discovery (whose
//! peers become gossip seeds), the HTTP API, and consensus, which `membership` makes this node
//! a member of: it resumes the cluster its data dir holds, or bootstraps one (`--bootstrap`,
//! `--dev`), or joins one (`--join`, `--peers`, zero-config). Once a member, `bridge` carries
//! facts between the layers (Raft's view into gossip and mDNS, gossip's failures to the
//! autopilot). This module holds the lifecycle: the start, the stop order, and the signals.
//! The agent never decides membership itself: Raft does.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use quorate_consensus::{AdminOp, StartError};
use quorate_discovery::DiscoveryError;
use tracing::{info, warn};

use crate::api::ConsensusCell;
use crate::config::{self, Config};
use crate::data_dir::{DataDir, DataDirError};
use crate::token::JoinToken;

mod bridge;
mod layers;
mod membership;

use layers::HttpParts;

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
    /// The gossip keyring could not be read or kept, or the configured cluster key is not one.
    #[error("{0}")]
    Keyring(String),
    /// The admin credential of the HTTP API could not be read or made in the data dir.
    #[error("cannot keep the admin credential: {0}")]
    AdminCredential(std::io::Error),
    /// The gossip generation of this start could not be recorded in the data dir.
    #[error("cannot record the gossip generation: {0}")]
    Generation(std::io::Error),
    /// The HTTP API could not start.
    #[error("http api: {0}")]
    Http(String),
    /// Waiting for signals failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signals(std::io::Error),
    /// Consensus could not start, or the cluster refused this node.
    #[error("consensus: {0}")]
    Consensus(#[from] StartError),
    /// The task that starts consensus and then bridges the layers stopped (it panicked or was
    /// cancelled).
    #[error("the consensus task ended unexpectedly: {0}")]
    ConsensusTask(String),
}

/// What mDNS shows, by node id (peers of every cluster; the agent filters).
pub type MdnsView = Arc<std::sync::Mutex<BTreeMap<crate::NodeId, quorate_discovery::Peer>>>;

/// The settings the agent runs with once every default is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The data directory in use.
    pub data_dir: PathBuf,
    /// The node name.
    pub name: String,
    /// The address other nodes reach this one at.
    pub advertise: IpAddr,
    gossip_port: u16,
    quic_port: u16,
    join: Option<JoinToken>,
}

impl Resolved {
    /// The gossip address other nodes reach this one at.
    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.gossip_port)
    }

    /// The QUIC address (Raft, joins, forwarding) other nodes reach this one at.
    pub fn quic_addr(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.quic_port)
    }

    /// The join token of `--join`, decoded once (`None` without one; a damaged token is
    /// refused by [`Config::validate`] and otherwise ignored, as if none was given).
    pub fn join_token(&self) -> Option<&JoinToken> {
        self.join.as_ref()
    }
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
            (None, false) => (DataDir::default_path().ok_or(AgentError::NoDataDir)?, None),
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
            gossip_port: config.gossip_port,
            quic_port: config.quic_port,
            join: config.join_token().and_then(Result::ok),
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
            .map_err(AgentError::AdminCredential)?;
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
            gossip = %c.gossip_listen(),
            quic = %c.quic_listen(),
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
                bridge::adopt_secrets(&gossip, &data_dir, &secrets);
                let _ = cell.set(node.clone());
                bridge::run(node, gossip, mdns, advert, grace).await;
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
                Err(e) => Err(AgentError::ConsensusTask(e.to_string())),
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
            let kept = self
                .data_dir
                .path()
                .join(format!("consensus.left-{}", quorate_base::now_ms() / 1000));
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

/// How the agent stops.
enum Stop {
    /// Still a member: a restart resumes.
    Member,
    /// It left the cluster.
    Left,
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
