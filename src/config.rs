//! The agent's configuration: one plain struct, layered from four places.
//!
//! Precedence, lowest first: built-in defaults < the config file (`--config FILE`) < `QUORATE_*`
//! environment variables < command-line flags. Every layer is checked on its own before the
//! layers are merged, so an unknown key or a value of the wrong type is reported with the place
//! it came from (the file's path, the variable's name or the flag). After the merge,
//! [`Config::validate`] checks what depends on several keys at once, and the error names the
//! layer that set the offending key.
//!
//! This module reads nothing by itself: the caller hands it the file path, the environment
//! variables and the flags ([`Sources`]), which keeps loading testable without touching the
//! process environment.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::path::PathBuf;

use config::Source as _;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that set config keys (`QUORATE_GOSSIP_PORT`).
pub const ENV_PREFIX: &str = "QUORATE_";

/// Default UDP port of gossip.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default UDP port of QUIC (Raft RPC, join handshake, forwarding); also the mDNS SRV port.
pub const DEFAULT_QUIC_PORT: u16 = 7947;
/// Default TCP address of the HTTP API (health, metrics, admin).
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7948);

/// The part a node plays in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Management plane: eligible to vote in the Raft group.
    #[default]
    Voter,
    /// Storage plane: a Raft learner for life, never a voter.
    Storage,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Voter => "voter",
            Role::Storage => "storage",
        })
    }
}

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
    /// QUIC addresses (`ip:port`, or `ip` for port 7947) of members to join through when the
    /// data dir holds no cluster.
    pub peers: Vec<String>,
    /// A join token (`quorate token create`): join the cluster it names, in the role it grants.
    pub join: Option<String>,
    /// With no bootstrap, peers or token: form a cluster once this many voter-eligible nodes
    /// of the same cluster name are seen by mDNS (the lowest node id forms it).
    pub bootstrap_expect: usize,
    /// On SIGTERM, leave the cluster (deregister) before stopping. Off: SIGTERM stops the
    /// agent and it stays a member (a restart resumes). `quorate leave` always deregisters.
    pub leave_on_terminate: bool,
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
    /// How long gossip must report a node failed (or left without deregistering) before the
    /// leader removes it. Voters are removed only when that leaves at least the target.
    #[serde(with = "humantime_serde")]
    pub failed_grace: std::time::Duration,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            voter_target: 3,
            write_timeout: std::time::Duration::from_secs(5),
            failed_grace: std::time::Duration::from_secs(120),
        }
    }
}

/// The `[gossip]` section: liveness and metadata by gossip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSection {
    /// Gossip addresses (`ip:port`) to contact at start, besides peers found by mDNS.
    pub seeds: Vec<String>,
    /// Period of a gossip round.
    #[serde(with = "humantime_serde")]
    pub interval: std::time::Duration,
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
            interval: std::time::Duration::from_millis(200),
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
        let interval = self.gossip.interval;
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
        if let Some(bad) = self.peers.iter().find(|p| parse_peer(p, 1).is_none()) {
            return invalid(
                "peers",
                format!("{bad:?} is not an ip:port (or ip) address"),
            );
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
        if let Some(token) = &self.join {
            if let Err(e) = crate::token::JoinToken::decode(token) {
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
        if self.raft.failed_grace < std::time::Duration::from_secs(1) {
            return invalid("raft.failed_grace", "give at least 1s".into());
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

/// A peer address: `ip:port`, or `ip` with `default_port`.
pub fn parse_peer(text: &str, default_port: u16) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, default_port))
        })
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast())
}

impl Config {
    /// The peers to join through, as addresses.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.peers
            .iter()
            .filter_map(|p| parse_peer(p, DEFAULT_QUIC_PORT))
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

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the configuration was refused. Each message names the key and where it came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("cannot read {origin}: {message}")]
    Unreadable {
        /// The file.
        origin: Origin,
        /// The reader's or parser's words.
        message: String,
    },
    /// A key that no setting has.
    #[error("{origin}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        /// Where it was found.
        origin: Origin,
        /// The unknown key.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type or breaking a rule.
    #[error("{origin}: invalid value for `{key}`: {message}")]
    InvalidValue {
        /// The layer that set the value.
        origin: Origin,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A command-line flag that sets a config key.
#[derive(Clone, Debug)]
pub struct FlagValue {
    /// The flag as typed, e.g. `--gossip-port`.
    pub flag: &'static str,
    /// The config key it sets, e.g. `gossip_port`.
    pub key: &'static str,
    /// The value, already type-checked by the argument parser.
    pub value: config::Value,
}

/// The layers above the defaults, as the caller found them.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The config file, if one was named.
    pub file: Option<PathBuf>,
    /// Environment variables; only those starting with [`ENV_PREFIX`] are read.
    pub env: BTreeMap<String, String>,
    /// Flags given on the command line.
    pub flags: Vec<FlagValue>,
}

impl Sources {
    /// Collects the `QUORATE_*` variables out of an environment listing.
    pub fn env_from(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
        vars.into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect()
    }
}

/// One layer, parsed on its own, with the keys it sets.
struct Layer {
    origin: Origin,
    config: config::Config,
    keys: BTreeSet<String>,
}

/// Builds the configuration from defaults and the given sources, and validates it.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let known = known_keys();
    let mut layers = Vec::new();

    if let Some(path) = &sources.file {
        let origin = Origin::File(path.clone());
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") | None => config::FileFormat::Toml,
            Some(other) => {
                return Err(ConfigError::Unreadable {
                    origin,
                    message: format!(
                        "unsupported file type .{other}: write the config in TOML (.toml)"
                    ),
                });
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let built = config::Config::builder()
            .add_source(config::File::from_str(&text, format))
            .build()
            .map_err(|e| ConfigError::Unreadable {
                origin: origin.clone(),
                message: one_line(&e.to_string()),
            })?;
        layers.push(layer(origin, built, &known)?);
    }

    for (var, value) in &sources.env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let origin = Origin::Env(var.clone());
        if rest.is_empty() {
            return Err(ConfigError::UnknownKey {
                origin,
                key: String::new(),
                suggestion: None,
            });
        }
        let key = env_key(var);
        let value = if LIST_KEYS.contains(&key.as_str()) {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect();
            config::Value::from(items)
        } else {
            config::Value::from(value.as_str())
        };
        let built = config::Config::builder()
            .set_override(&key, value)
            .and_then(|b| b.build())
            .map_err(|e| ConfigError::InvalidValue {
                origin: origin.clone(),
                key: key.clone(),
                message: e.to_string(),
            })?;
        layers.push(layer(origin, built, &known)?);
    }

    for flag in &sources.flags {
        let built = config::Config::builder()
            .set_override(flag.key, flag.value.clone())
            .and_then(|b| b.build())
            .map_err(|e| ConfigError::InvalidValue {
                origin: Origin::Flag(flag.flag.to_string()),
                key: flag.key.to_string(),
                message: e.to_string(),
            })?;
        layers.push(layer(Origin::Flag(flag.flag.to_string()), built, &known)?);
    }

    let mut merged = config::Config::builder();
    for l in &layers {
        merged = merged.add_source(l.config.clone());
    }
    let origin_of = |key: &str| {
        layers
            .iter()
            .rev()
            .find(|l| l.keys.contains(key))
            .map(|l| l.origin.clone())
            .unwrap_or(Origin::Default)
    };
    let mut cfg: Config = merged
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::InvalidValue {
            origin: Origin::Default,
            key: String::new(),
            message: e.to_string(),
        })?;

    if cfg.dev {
        // Dev mode keeps to loopback unless told otherwise (and validate refuses otherwise).
        if origin_of("bind") == Origin::Default {
            cfg.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
        }
        if origin_of("advertise") == Origin::Default {
            cfg.advertise = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    }

    cfg.validate().map_err(|inv| {
        // Blame whichever involved key the highest layer set.
        let rank = |key: &str| layers.iter().rposition(|l| l.keys.contains(key));
        let key = match inv.other {
            Some(other) if rank(other) > rank(inv.key) => other,
            _ => inv.key,
        };
        ConfigError::InvalidValue {
            origin: origin_of(key),
            key: key.to_string(),
            message: inv.message,
        }
    })?;
    Ok(cfg)
}

/// Checks one layer alone: unknown keys first, then the types of the values it sets.
fn layer(
    origin: Origin,
    config: config::Config,
    known: &BTreeSet<String>,
) -> Result<Layer, ConfigError> {
    let map = config.collect().map_err(|e| ConfigError::Unreadable {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    let mut keys = BTreeSet::new();
    flatten_keys("", &map, &mut keys);
    if let Some(unknown) = keys.iter().find(|k| !known.contains(*k)) {
        let suggestion = known
            .iter()
            .map(|k| (strsim::jaro_winkler(unknown, k), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.clone());
        return Err(ConfigError::UnknownKey {
            origin,
            key: unknown.clone(),
            suggestion,
        });
    }
    if let Err(e) = config.clone().try_deserialize::<Config>() {
        let (key, message) = match e {
            config::ConfigError::Type {
                key,
                unexpected,
                expected,
                ..
            } => (
                key.unwrap_or_default(),
                format!("expected {expected}, found {unexpected}"),
            ),
            other => {
                // Enum and address parse errors arrive as messages; the layer's single key (for
                // env and flags) or the first key names the culprit well enough.
                let key = if keys.len() == 1 {
                    keys.iter().next().cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                (key, strip_key_suffix(&other.to_string()))
            }
        };
        let key = if key.is_empty() {
            keys.iter().next().cloned().unwrap_or_default()
        } else {
            key
        };
        let message = match CHOICES.iter().find(|(k, _)| *k == key) {
            Some((_, choices)) => match config.get_string(&key) {
                Ok(found) => format!("expected {choices}, found {found:?}"),
                Err(_) => format!("expected {choices}"),
            },
            None => message,
        };
        return Err(ConfigError::InvalidValue {
            origin,
            key,
            message,
        });
    }
    Ok(Layer {
        origin,
        config,
        keys,
    })
}

/// Parser errors draw the offending line over several lines; an operator's log wants one.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let drawing = |l: &&str| {
        l.starts_with('|') || l.starts_with('^') || l.starts_with(|c: char| c.is_ascii_digit())
    };
    match lines.rfind(|l| !drawing(l)) {
        Some(last) => format!("{first}: {last}"),
        None => first.to_string(),
    }
}

/// Keys that hold lists; their environment variables are comma-separated.
const LIST_KEYS: &[&str] = &[
    "peers",
    "discovery.interfaces",
    "discovery.exclude_interfaces",
    "gossip.seeds",
];

/// Keys that hold maps: their inner keys are free-form.
const MAP_KEYS: &[&str] = &["labels"];

/// Keys whose values are one of a few words, for a better message than the deserializer's.
const CHOICES: &[(&str, &str)] = &[
    ("role", "`voter` or `storage`"),
    ("log_format", "`text` or `json`"),
];

/// The config crate appends " for key `x`" and an origin to some messages; we say those ourselves.
fn strip_key_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn flatten_keys(
    prefix: &str,
    map: &config::Map<String, config::Value>,
    out: &mut BTreeSet<String>,
) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &v.kind {
            _ if MAP_KEYS.contains(&key.as_str()) => {
                out.insert(key);
            }
            config::ValueKind::Table(inner) if !inner.is_empty() => flatten_keys(&key, inner, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

/// Every key [`Config`] accepts, as dotted paths.
fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = v {
            for (k, inner) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match inner {
                    serde_json::Value::Object(_) if !MAP_KEYS.contains(&key.as_str()) => {
                        walk(&key, inner, out)
                    }
                    _ => {
                        out.insert(key);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    // Serializing plain data with derived impls cannot fail.
    if let Ok(v) = serde_json::to_value(Config::default()) {
        walk("", &v, &mut out);
    }
    out
}

/// The config key an environment variable sets: `QUORATE_GOSSIP_PORT` -> `gossip_port`.
fn env_key(var: &str) -> String {
    var.strip_prefix(ENV_PREFIX)
        .unwrap_or(var)
        .to_lowercase()
        .replace("__", ".")
}

/// The environment variable that sets a config key: `gossip_port` -> `QUORATE_GOSSIP_PORT`.
pub fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp file");
        f.write_all(contents.as_bytes()).expect("write temp file");
        f
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flag(flag: &'static str, key: &'static str, value: impl Into<config::Value>) -> FlagValue {
        FlagValue {
            flag,
            key,
            value: value.into(),
        }
    }

    #[test]
    fn no_sources_gives_the_defaults() {
        assert_eq!(load(&Sources::default()), Ok(Config::default()));
    }

    #[test]
    fn layers_stack_file_then_env_then_flags() {
        let f = file(
            "gossip_port = 8001\nquic_port = 8002\ncluster = \"from-file\"\nname = \"file-name\"\n",
        );
        let sources = Sources {
            file: Some(f.path().to_path_buf()),
            env: env(&[
                ("QUORATE_QUIC_PORT", "9002"),
                ("QUORATE_CLUSTER", "from-env"),
            ]),
            flags: vec![flag("--cluster", "cluster", "from-flag")],
        };
        let cfg = load(&sources).expect("valid layers");
        assert_eq!(cfg.gossip_port, 8001, "file beats default");
        assert_eq!(cfg.quic_port, 9002, "env beats file");
        assert_eq!(cfg.cluster, "from-flag", "flag beats env");
        assert_eq!(cfg.name.as_deref(), Some("file-name"));
        assert_eq!(
            cfg.http_addr, DEFAULT_HTTP_ADDR,
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn unknown_key_in_file_names_file_key_and_suggestion() {
        let f = file("gosip_port = 8001\n");
        let err = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        match &err {
            ConfigError::UnknownKey {
                origin: Origin::File(p),
                key,
                suggestion,
            } => {
                assert_eq!(p, f.path());
                assert_eq!(key, "gosip_port");
                assert_eq!(suggestion.as_deref(), Some("gossip_port"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().contains("did you mean `gossip_port`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_env_variable_is_named() {
        let err = load(&Sources {
            env: env(&[("QUORATE_GOSIP_PORT", "1")]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::UnknownKey {
                origin: Origin::Env("QUORATE_GOSIP_PORT".into()),
                key: "gosip_port".into(),
                suggestion: Some("gossip_port".into()),
            }
        );
    }

    #[test]
    fn wrong_types_are_named_with_their_source() {
        let f = file("gossip_port = \"lots\"\n");
        let err = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { origin: Origin::File(_), key, .. } if key == "gossip_port"),
            "{err:?}"
        );

        let err = load(&Sources {
            env: env(&[("QUORATE_GOSSIP_PORT", "70000")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { origin: Origin::Env(v), key, .. } if v == "QUORATE_GOSSIP_PORT" && key == "gossip_port"),
            "{err:?}"
        );

        let err = load(&Sources {
            env: env(&[("QUORATE_ROLE", "boss")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "role"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("expected `voter` or `storage`, found \"boss\""),
            "{err}"
        );
        assert!(err.to_string().contains("QUORATE_ROLE"), "{err}");

        let err = load(&Sources {
            env: env(&[("QUORATE_BIND", "not-an-ip")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "bind"),
            "{err:?}"
        );
    }

    #[test]
    fn broken_toml_is_unreadable_with_the_path() {
        let f = file("gossip_port = = 3\n");
        let err = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::Unreadable {
                    origin: Origin::File(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&f.path().display().to_string()),
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 1, "one line: {err}");
    }

    #[test]
    fn missing_file_is_unreadable() {
        let err = load(&Sources {
            file: Some("/nonexistent/quorate.toml".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/quorate.toml"),
            "{err}"
        );
    }

    #[test]
    fn rule_violations_name_the_layer_that_set_the_key() {
        let f = file("gossip_port = 7000\n");
        let err = load(&Sources {
            file: Some(f.path().to_path_buf()),
            flags: vec![flag("--quic-port", "quic_port", 7000)],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::InvalidValue {
                origin: Origin::Flag("--quic-port".into()),
                key: "quic_port".into(),
                message: "gossip and QUIC both use UDP and cannot share port 7000".into(),
            }
        );

        let err = load(&Sources {
            env: env(&[("QUORATE_GOSSIP_PORT", "0")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { origin: Origin::Env(_), key, .. } if key == "gossip_port"),
            "{err:?}"
        );

        let err = load(&Sources {
            env: env(&[("QUORATE_CLUSTER", "no spaces")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "cluster"),
            "{err:?}"
        );

        let err = load(&Sources {
            env: env(&[("QUORATE_LOG", "info,,=[")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "log"),
            "{err:?}"
        );
    }

    #[test]
    fn dev_mode_moves_to_loopback_and_refuses_other_addresses() {
        let cfg = load(&Sources {
            flags: vec![flag("--dev", "dev", true)],
            ..Default::default()
        })
        .expect("dev");
        assert_eq!(cfg.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(cfg.advertise, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));

        let err = load(&Sources {
            flags: vec![
                flag("--dev", "dev", true),
                flag("--bind", "bind", "0.0.0.0"),
            ],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { origin: Origin::Flag(f), key, .. } if f == "--bind" && key == "bind"),
            "{err:?}"
        );
    }

    #[test]
    fn discovery_section_from_file_env_and_checks() {
        let f = file(
            "[discovery]\nservice_type = \"_mycluster._tcp.local.\"\nexclude_interfaces = [\"docker0\"]\n",
        );
        let cfg = load(&Sources {
            file: Some(f.path().to_path_buf()),
            env: env(&[("QUORATE_DISCOVERY__INTERFACES", "eth0,eth1")]),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(cfg.discovery.service_type, "_mycluster._tcp.local.");
        assert_eq!(cfg.discovery.interfaces, vec!["eth0", "eth1"]);
        assert_eq!(cfg.discovery.exclude_interfaces, vec!["docker0"]);

        let err = load(&Sources {
            env: env(&[(
                "QUORATE_DISCOVERY__SERVICE_TYPE",
                "_much-too-long-name._tcp.local.",
            )]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { origin: Origin::Env(_), key, .. } if key == "discovery.service_type"),
            "{err:?}"
        );
        let f = file("[discovery]\nservise_type = \"x\"\n");
        let err = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key, .. } if key == "discovery.servise_type"),
            "{err:?}"
        );
    }

    #[test]
    fn gossip_section_labels_and_cluster_key() {
        let f = file(
            "cluster_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n[labels]\nzone = \"a\"\n[gossip]\ninterval = \"100ms\"\nseeds = [\"10.0.0.1:7946\"]\n",
        );
        let cfg = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(cfg.gossip.interval, std::time::Duration::from_millis(100));
        assert_eq!(cfg.gossip.seeds, vec!["10.0.0.1:7946"]);
        assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
        let cfg = load(&Sources {
            env: env(&[("QUORATE_GOSSIP__SEEDS", "10.0.0.1:7946, 10.0.0.2:7946")]),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(cfg.gossip.seeds.len(), 2);
        for (var, value, key) in [
            ("QUORATE_GOSSIP__SEEDS", "10.0.0.1", "gossip.seeds"),
            ("QUORATE_GOSSIP__INTERVAL", "soon", "gossip.interval"),
            ("QUORATE_GOSSIP__INTERVAL", "1ms", "gossip.interval"),
            ("QUORATE_CLUSTER_KEY", "short", "cluster_key"),
        ] {
            let err = load(&Sources {
                env: env(&[(var, value)]),
                ..Default::default()
            })
            .unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, .. } if k == key),
                "{var}={value}: {err:?}"
            );
        }
        let f = file("[labels]\n\"bad key\" = \"x\"\n");
        let err = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "labels"),
            "{err:?}"
        );
    }

    #[test]
    fn env_var_and_key_names_map_both_ways() {
        assert_eq!(env_var("gossip_port"), "QUORATE_GOSSIP_PORT");
        assert_eq!(env_key("QUORATE_GOSSIP_PORT"), "gossip_port");
        assert_eq!(env_var("a.b_c"), "QUORATE_A__B_C");
        assert_eq!(env_key("QUORATE_A__B_C"), "a.b_c");
    }

    #[test]
    fn the_packaged_example_config_loads_and_lists_every_key() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/quorate.toml");
        let text = std::fs::read_to_string(&path).expect("packaging/quorate.toml");
        load(&Sources {
            file: Some(path),
            ..Default::default()
        })
        .expect("example config is valid");
        for key in known_keys() {
            let (section, leaf) = key.rsplit_once('.').unwrap_or(("", &key));
            let documented = if MAP_KEYS.contains(&key.as_str()) {
                text.contains(&format!("[{key}]"))
            } else {
                text.contains(&format!("{leaf} ="))
                    && (section.is_empty() || text.contains(&format!("[{section}]")))
            };
            assert!(
                documented,
                "packaging/quorate.toml does not document `{key}`"
            );
        }
    }
}
