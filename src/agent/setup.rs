//! The agent before it runs: what depends on the machine resolved (data dir, host name,
//! advertised address, see [`Resolved`]), the data dir opened and locked, the node id settled.
//! It starts nothing; the lifecycle is the parent module's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use quorate_consensus::{EventHub, StartError};
use quorate_discovery::DiscoveryError;

use crate::api::Membership;
use crate::config::{self, Config};
use crate::data_dir::{DataDir, DataDirError};
use crate::handlers::HandlerStats;
use crate::token::JoinToken;

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
    /// The configuration breaks a rule (the key and what is wrong).
    #[error("invalid configuration: {0}")]
    Config(String),
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
    pub(super) config: Config,
    pub(super) resolved: Resolved,
    pub(super) data_dir: Arc<DataDir>,
    /// This node's membership events: made here, so that they can be subscribed to before
    /// the node runs; consensus publishes into it once it starts.
    pub(super) events: Arc<EventHub>,
    /// What this node's event handlers did (for metrics).
    pub(super) handler_stats: Arc<HandlerStats>,
    /// The membership as this node sees it, once it is a member (the bridge keeps it).
    pub(super) membership: tokio::sync::watch::Sender<Option<Membership>>,
    // Dropped last: dev mode's throw-away data dir is removed when the agent ends.
    pub(super) dev_dir: Option<tempfile::TempDir>,
}

impl Agent {
    /// Resolves defaults, opens the data dir and settles the node id.
    ///
    /// The configuration is validated first (as [`crate::config::load`] does), so an
    /// application that builds a [`Config`] by hand gets the same refusals as the CLI.
    pub fn start(config: Config) -> Result<Agent, AgentError> {
        config
            .validate()
            .map_err(|i| AgentError::Config(format!("{}: {}", i.key, i.message)))?;
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
            events: Arc::new(EventHub::new()),
            handler_stats: Arc::default(),
            membership: tokio::sync::watch::Sender::new(None),
            dev_dir,
        })
    }

    /// The resolved settings.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// This node's membership events: subscribe between [`Agent::start`] and `run_until`
    /// to miss none (the decided ones from the log, replayed at start; the failure
    /// detector's local ones once the node is a member).
    pub fn events(&self) -> Arc<EventHub> {
        self.events.clone()
    }

    /// The membership as this node sees it: `None` until it is a member (and until the first
    /// look after this call, within half a second), then updated whenever a member joins, leaves, changes role, suffrage, labels or liveness, or the
    /// leader changes (checked twice a second). `changed().await` on the receiver wakes on
    /// each new view.
    pub fn membership(&self) -> tokio::sync::watch::Receiver<Option<Membership>> {
        self.membership.subscribe()
    }
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
