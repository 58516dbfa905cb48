//! [`Config`] and its sections: plain serde structs with documented fields and `Default`, the
//! rules that span several keys ([`Config::validate`]), and the accessors that derive a value
//! from keys in one place (the decoded join token, the listen addresses). Nothing here reads
//! a file or the environment.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::peers::PeerSpec;
use crate::token::{JoinToken, TokenError};

/// Default UDP port of gossip.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default UDP port of QUIC (Raft RPC, join handshake, forwarding); also the mDNS SRV port.
pub const DEFAULT_QUIC_PORT: u16 = 7947;
/// Default TCP address of the HTTP API (health, metrics, admin).
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7948);

pub use quorate_base::Role;

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything the agent can be told. Each field is a config key, a `QUORATE_*` variable and
/// (for the core options) a flag of `quorate agent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory of the node's state (node id, later the Raft log). Unset: the per-user data
    /// directory (`~/.local/share/quorate`), or a temporary directory removed on exit in dev mode.
    pub data_dir: Option<PathBuf>,
    /// The node's human-readable name, shown in listings. Unset: the host name.
    pub name: Option<String>,
    /// `voter` (management plane, may vote) or `storage` (storage plane, a learner for life).
    pub role: Role,
    /// Name of the cluster to form or join; nodes of other clusters are ignored.
    pub cluster: String,
    /// Address to listen on for gossip and QUIC. Default: all IPv4 addresses.
    pub bind: IpAddr,
    /// Address other nodes reach this one at. Unset: the first non-loopback address.
    pub advertise: Option<IpAddr>,
    /// UDP port of gossip.
    pub gossip_port: u16,
    /// UDP port of QUIC (Raft, join, forwarding); advertised as the mDNS SRV port.
    pub quic_port: u16,
    /// TCP address of the HTTP API. Keep it on loopback unless the network is trusted.
    pub http_addr: SocketAddr,
    /// Development mode: a single node on loopback with a throw-away data dir.
    pub dev: bool,
    /// Log filter, as `info` or `quorate=debug,warn`. Unset: `RUST_LOG`, else `info`.
    pub log: Option<String>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// mDNS discovery.
    pub discovery: DiscoveryConfig,
    /// Gossip.
    pub gossip: GossipSection,
    /// The cluster key: 32 bytes in base64 (`quorate keygen`). Seals gossip. Unset: open.
    pub cluster_key: Option<String>,
    /// User labels of this node, published in gossip: `{ zone = "a" }`.
    pub labels: BTreeMap<String, String>,
    /// Start a new cluster with this node as its first voter. Ignored once the data dir holds
    /// a cluster (a node never bootstraps a second one).
    pub bootstrap: bool,
    /// Peers to join through (or form with, see `bootstrap_expect`) when the data dir holds no
    /// cluster: QUIC addresses (`ip:port`, or `ip` for port 7947), DNS names (`host[:port]`:
    /// every A and AAAA record) or SRV records (`srv:_quorate._udp.NAME`: every target and
    /// port), resolved again at every attempt.
    pub peers: Vec<String>,
    /// A join token (`quorate token create`): join the cluster it names, in the role it grants.
    pub join: Option<String>,
    /// With no bootstrap or token: form a cluster once this many voter-eligible nodes of the
    /// same cluster name are seen forming, by mDNS or (with `peers`) by gossip with the peers
    /// found (the lowest node id forms it).
    pub bootstrap_expect: usize,
    /// On SIGTERM, leave the cluster (deregister) before stopping. Off: SIGTERM stops the
    /// agent and it stays a member (a restart resumes). `quorate leave` always deregisters.
    pub leave_on_terminate: bool,
    /// Event handlers, `TYPES=COMMAND` (`*=COMMAND` for every type): COMMAND runs with `sh -c`
    /// for each membership event of those types, the event as JSON on stdin and its fields in
    /// `QUORATE_EVENT_*` variables.
    pub on_event: Vec<String>,
    /// How long one handler command may run before it is killed.
    #[serde(with = "humantime_serde")]
    pub event_handler_timeout: std::time::Duration,
    /// Raft.
    pub raft: RaftSection,
}

/// The `[raft]` section: the management plane's Raft group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// How many voters a cluster this node bootstraps aims for: 1, 3, 5 or 7. Voter-role
    /// learners are promoted while the voters are fewer.
    pub voter_target: u8,
    /// How long a registry write may wait to be committed before it fails.
    #[serde(with = "humantime_serde")]
    pub write_timeout: std::time::Duration,
    /// How long gossip's failure detector must hold a node dead (failed, or stopped without
    /// leaving) before the leader removes it, once another voter confirms. Voters are removed
    /// only when that leaves at least the target.
    #[serde(with = "humantime_serde")]
    pub failed_grace: std::time::Duration,
    /// How long the node certificates this node signs (as leader) are valid; every member
    /// renews its own once two thirds of it have passed, with no restart.
    #[serde(with = "humantime_serde")]
    pub cert_lifetime: std::time::Duration,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            voter_target: 3,
            write_timeout: std::time::Duration::from_secs(5),
            failed_grace: std::time::Duration::from_secs(120),
            cert_lifetime: quorate_consensus::tls::DEFAULT_CERT_LIFETIME,
        }
    }
}

/// A voter's gossip round when `gossip.interval` is unset: a failed node is reported after
/// about `phi_threshold` rounds (1.2 s).
pub const VOTER_GOSSIP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// A storage node's gossip round when `gossip.interval` is unset. Every gossip message
/// carries a digest of every node, so a cluster's gossip costs O(N²) per round; storage nodes
/// are most of N and their liveness decides nothing (voters' does), so they gossip five
/// times less often, and a failed storage node is reported after about 6 s instead of 1.2 s.
pub const STORAGE_GOSSIP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The `[gossip]` section: liveness and metadata by gossip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSection {
    /// Gossip addresses (`ip:port`) to contact at start, besides peers found by mDNS.
    pub seeds: Vec<String>,
    /// Period of a gossip round. Unset: [`VOTER_GOSSIP_INTERVAL`] on a voter,
    /// [`STORAGE_GOSSIP_INTERVAL`] on a storage node (see [`Config::gossip_interval`]).
    #[serde(with = "humantime_serde")]
    pub interval: Option<std::time::Duration>,
    /// A node is failed after this many mean heartbeat intervals of silence (phi accrual).
    pub phi_threshold: f64,
    /// How long a failed or left node stays listed before it is removed.
    #[serde(with = "humantime_serde")]
    pub reap_after: std::time::Duration,
}

impl Default for GossipSection {
    fn default() -> Self {
        GossipSection {
            seeds: Vec::new(),
            interval: None,
            phi_threshold: 6.0,
            reap_after: std::time::Duration::from_secs(3600),
        }
    }
}

/// The `[discovery]` section: how the node advertises itself and finds peers with mDNS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Advertise and browse with mDNS. Off: peers come only from flags and tokens.
    pub enabled: bool,
    /// DNS-SD service type: `_name._tcp.local.`, name of 1 to 15 letters, digits, hyphens.
    pub service_type: String,
    /// Interfaces to use, by name. Empty: every multicast-capable interface.
    pub interfaces: Vec<String>,
    /// Interfaces never to use, by name.
    pub exclude_interfaces: Vec<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: true,
            service_type: quorate_discovery::DEFAULT_SERVICE_TYPE.to_string(),
            interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: None,
            name: None,
            role: Role::Voter,
            cluster: "default".to_string(),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertise: None,
            gossip_port: DEFAULT_GOSSIP_PORT,
            quic_port: DEFAULT_QUIC_PORT,
            http_addr: DEFAULT_HTTP_ADDR,
            dev: false,
            log: None,
            log_format: LogFormat::Text,
            discovery: DiscoveryConfig::default(),
            gossip: GossipSection::default(),
            cluster_key: None,
            labels: BTreeMap::new(),
            bootstrap: false,
            peers: Vec::new(),
            join: None,
            bootstrap_expect: 3,
            leave_on_terminate: false,
            on_event: Vec::new(),
            event_handler_timeout: std::time::Duration::from_secs(60),
            raft: RaftSection::default(),
        }
    }
}

/// A key whose value breaks a rule, found by [`Config::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The offending key, as written in the config file.
    pub key: &'static str,
    /// Another key the rule involves (two ports that clash): the error names whichever of the
    /// two was set by the higher layer.
    pub other: Option<&'static str>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl Config {
    /// The event handlers, parsed (validated by [`Config::validate`], so none is dropped here
    /// for a config that passed it).
    pub fn handlers(&self) -> Vec<crate::handlers::HandlerSpec> {
        self.on_event
            .iter()
            .filter_map(|h| crate::handlers::HandlerSpec::parse(h).ok())
            .collect()
    }

    /// Checks the rules that types alone do not express.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key, message: String| {
            Err(Invalid {
                key,
                other: None,
                message,
            })
        };
        if let Some(name) = &self.name
            && let Err(why) = check_node_name(name)
        {
            return invalid("name", why);
        }
        if let Err(why) = check_cluster_name(&self.cluster) {
            return invalid("cluster", why);
        }
        for (key, port) in [
            ("gossip_port", self.gossip_port),
            ("quic_port", self.quic_port),
        ] {
            if port == 0 {
                return invalid(
                    key,
                    "port 0 is not allowed: give a port from 1 to 65535".into(),
                );
            }
        }
        if self.http_addr.port() == 0 {
            return invalid(
                "http_addr",
                "port 0 is not allowed: give a port from 1 to 65535".into(),
            );
        }
        if self.gossip_port == self.quic_port {
            return Err(Invalid {
                key: "quic_port",
                other: Some("gossip_port"),
                message: format!(
                    "gossip and QUIC both use UDP and cannot share port {}",
                    self.quic_port
                ),
            });
        }
        if self.bind.is_multicast() {
            return invalid("bind", format!("{} is a multicast address", self.bind));
        }
        if let Some(adv) = self.advertise
            && (adv.is_unspecified() || adv.is_multicast())
        {
            return invalid(
                "advertise",
                format!("{adv} cannot be reached by other nodes: give a unicast address"),
            );
        }
        if let Some(data_dir) = &self.data_dir
            && data_dir.as_os_str().is_empty()
        {
            return invalid("data_dir", "an empty path is not a directory".into());
        }
        if let Some(filter) = &self.log
            && let Err(e) = tracing_subscriber::EnvFilter::builder().parse(filter)
        {
            return invalid(
                "log",
                format!("{filter:?} is not a log filter ({e}); try `info` or `quorate=debug`"),
            );
        }
        if let Err(why) = quorate_discovery::check_service_type(&self.discovery.service_type) {
            return invalid("discovery.service_type", why);
        }
        for (key, list) in [
            ("discovery.interfaces", &self.discovery.interfaces),
            (
                "discovery.exclude_interfaces",
                &self.discovery.exclude_interfaces,
            ),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|n| n.is_empty() || n.len() > 15 || n.contains(['/', ' ']))
            {
                return invalid(key, format!("{bad:?} is not an interface name"));
            }
        }
        if let Some(bad) = self
            .gossip
            .seeds
            .iter()
            .find(|s| s.parse::<SocketAddr>().is_err())
        {
            return invalid("gossip.seeds", format!("{bad:?} is not an ip:port address"));
        }
        let interval = self.gossip_interval();
        if interval < std::time::Duration::from_millis(20)
            || interval > std::time::Duration::from_secs(10)
        {
            return invalid(
                "gossip.interval",
                format!("{interval:?} is outside 20ms to 10s"),
            );
        }
        if !(self.gossip.phi_threshold.is_finite() && self.gossip.phi_threshold >= 2.0) {
            return invalid(
                "gossip.phi_threshold",
                "give a number of at least 2 (lower flaps on a busy LAN)".into(),
            );
        }
        if self.gossip.reap_after < std::time::Duration::from_secs(1) {
            return invalid("gossip.reap_after", "give at least 1s".into());
        }
        if let Some(key) = &self.cluster_key
            && let Err(e) = quorate_gossip::Key::from_base64(key)
        {
            return invalid(
                "cluster_key",
                format!("{e}; make one with `quorate keygen`"),
            );
        }
        for (k, v) in &self.labels {
            let ok = !k.is_empty()
                && k.len() <= 63
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
            if !ok {
                return invalid(
                    "labels",
                    format!("label name {k:?}: 1 to 63 letters, digits, '-', '_', '.', '/'"),
                );
            }
            if v.len() > 255 || v.chars().any(char::is_control) {
                return invalid(
                    "labels",
                    format!("label {k:?}: a value has at most 255 bytes and no control characters"),
                );
            }
        }
        if let Some(Err(e)) = self
            .peers
            .iter()
            .map(|p| parse_peer(p, DEFAULT_QUIC_PORT))
            .find(Result::is_err)
        {
            return invalid("peers", e);
        }
        if self.bootstrap && !self.peers.is_empty() {
            return Err(Invalid {
                key: "peers",
                other: Some("bootstrap"),
                message: "bootstrap starts a new cluster and peers join an existing one: give one of them".into(),
            });
        }
        if self.dev && !self.peers.is_empty() {
            return Err(Invalid {
                key: "peers",
                other: Some("dev"),
                message: "dev mode forms its own single-node cluster on loopback; peers join another: give one of them".into(),
            });
        }
        if let Some(token) = self.join_token() {
            if let Err(e) = token {
                return invalid("join", e.to_string());
            }
            for (other, set) in [("bootstrap", self.bootstrap), ("dev", self.dev)] {
                if set {
                    return Err(Invalid {
                        key: "join",
                        other: Some(other),
                        message: format!(
                            "a join token joins an existing cluster and {other} forms a new one: give one of them"
                        ),
                    });
                }
            }
        }
        if !(1..=9).contains(&self.bootstrap_expect) {
            return invalid(
                "bootstrap_expect",
                format!("{} nodes: give 1 to 9", self.bootstrap_expect),
            );
        }
        if let Some(Err(e)) = self
            .on_event
            .iter()
            .map(|h| crate::handlers::HandlerSpec::parse(h))
            .find(Result::is_err)
        {
            return invalid("on_event", e.to_string());
        }
        let ht = self.event_handler_timeout;
        if ht < std::time::Duration::from_millis(100) || ht > std::time::Duration::from_secs(3600) {
            return invalid(
                "event_handler_timeout",
                format!("{ht:?} is outside 100ms to 1h"),
            );
        }
        if self.raft.failed_grace < std::time::Duration::from_secs(1) {
            return invalid("raft.failed_grace", "give at least 1s".into());
        }
        if self.raft.cert_lifetime < std::time::Duration::from_secs(10)
            || self.raft.cert_lifetime > std::time::Duration::from_secs(10 * 366 * 86400)
        {
            return invalid("raft.cert_lifetime", "give 10s to 10 years".into());
        }
        if ![1, 3, 5, 7].contains(&self.raft.voter_target) {
            return invalid(
                "raft.voter_target",
                format!("{} voters: give 1, 3, 5 or 7", self.raft.voter_target),
            );
        }
        let wt = self.raft.write_timeout;
        if wt < std::time::Duration::from_millis(100) || wt > std::time::Duration::from_secs(60) {
            return invalid(
                "raft.write_timeout",
                format!("{wt:?} is outside 100ms to 60s"),
            );
        }
        if self.dev {
            let outside = [
                ("bind", self.bind),
                ("advertise", self.advertise.unwrap_or(self.bind)),
                ("http_addr", self.http_addr.ip()),
            ]
            .into_iter()
            .find(|(_, ip)| !ip.is_loopback());
            if let Some((key, ip)) = outside {
                return invalid(
                    key,
                    format!("dev mode keeps to loopback, and {ip} is not a loopback address"),
                );
            }
        }
        Ok(())
    }
}

/// A `--peers` entry: `ip:port`, `ip` (with `default_port`), `host[:port]` (its A and AAAA
/// records) or `srv:NAME` (its SRV targets); the error says what is wrong with it.
pub fn parse_peer(text: &str, default_port: u16) -> Result<PeerSpec, String> {
    PeerSpec::parse(text, default_port)
}

impl Config {
    /// The join token `join` holds, decoded (`None` when no token is configured). The one
    /// place the token is decoded: [`Config::validate`] refuses a damaged one.
    pub fn join_token(&self) -> Option<Result<JoinToken, TokenError>> {
        self.join.as_deref().map(JoinToken::decode)
    }

    /// The period of a gossip round: `gossip.interval`, else the role's default
    /// ([`VOTER_GOSSIP_INTERVAL`], [`STORAGE_GOSSIP_INTERVAL`]).
    pub fn gossip_interval(&self) -> std::time::Duration {
        self.gossip.interval.unwrap_or(match self.role {
            Role::Voter => VOTER_GOSSIP_INTERVAL,
            Role::Storage => STORAGE_GOSSIP_INTERVAL,
        })
    }

    /// Where gossip listens: `bind` and `gossip_port`.
    pub fn gossip_listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.gossip_port)
    }

    /// Where QUIC listens: `bind` and `quic_port`.
    pub fn quic_listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.quic_port)
    }

    /// The peers to join through, parsed (names are resolved at each attempt, by the agent).
    pub fn peer_specs(&self) -> Vec<PeerSpec> {
        self.peers
            .iter()
            .filter_map(|p| parse_peer(p, DEFAULT_QUIC_PORT).ok())
            .collect()
    }
}

/// Node names appear in mDNS instance names (at most 63 bytes) and in listings.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "a node name has 1 to 63 bytes, {:?} has {}",
            name,
            name.len()
        ));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(format!(
            "{name:?} has control characters or leading or trailing spaces"
        ));
    }
    Ok(())
}

/// Cluster names travel in every mDNS advertisement, so they are short and plain.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 32 || !name.chars().all(ok_char) {
        return Err(format!(
            "a cluster name has 1 to 32 letters, digits, '-', '_' or '.'; got {name:?}"
        ));
    }
    Ok(())
}
