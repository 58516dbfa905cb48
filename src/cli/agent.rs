//! `quorate agent`: its flags, how they become the configuration's top layer
//! ([`AgentArgs::sources`]), and the command: load the configuration, set up logging, and run
//! the agent on a multi-threaded runtime until SIGINT or SIGTERM (or, with `--check-config`,
//! print the validated configuration and stop there).
//!
//! The agent itself is the library's (`quorate::agent::run`); the rules of the configuration
//! are `quorate::config`'s.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use quorate::config::{FlagValue, Sources};

use super::args::parse_txt_filter;
use quorate::Role;

pub(crate) const ABOUT: &str = "Run a quorate node (the long-running agent).

How the node comes to be a member, first match wins:
  - its data dir holds a cluster: it resumes it (it never forms or joins another);
  - --bootstrap (or --dev): it makes a new cluster, with itself as the first voter;
  - --join TOKEN: it joins the cluster the token names (made by `quorate token create`);
  - --peers IP[:PORT],...: it joins through those members;
  - nothing: zero configuration. Nodes of the same --cluster find each other by mDNS; once
    --bootstrap-expect voter-eligible nodes are seen, the lowest node id forms the cluster and
    the others join it. A node that sees a formed cluster joins it.
With the same --cluster-key on every node, gossip is sealed and joins are authenticated;
without, the cluster is open to any node on the LAN (the log says so).

Settings come from, lowest precedence first: built-in defaults, the config file (--config),
QUORATE_* environment variables (QUORATE_GOSSIP_PORT sets gossip_port), and these flags.
Unknown keys and invalid values are refused at start, naming the key and where it came from.
See packaging/quorate.toml for every key with its default.

--check-config loads and validates the settings as a start would, prints them as JSON, and
exits without starting (for a config file, a container's environment, a Compose command).

Stops cleanly on SIGINT or SIGTERM (and stays a member; `quorate leave` deregisters).
Exit status: 0 after a clean stop, 1 when the node cannot start or run or the cluster refused
it, 2 for invalid arguments or configuration.

Under systemd (Type=notify) the agent reports READY=1 once it serves (gossip, mDNS and the HTTP
API run; it may still be forming or joining), STATUS= lines with its membership, STOPPING=1
when it stops, and WATCHDOG=1 keep-alives at half of WatchdogSec=.

Try it on one machine: quorate agent --dev";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// Read settings from this TOML file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Load and validate the configuration (file, environment, flags), print the effective
    /// settings as JSON (secrets shown as set, not printed) and exit without starting: 0
    /// valid, 2 invalid
    #[arg(long)]
    pub(crate) check_config: bool,

    /// Single node on loopback with a temporary data dir, for trying quorate out.
    #[arg(long)]
    pub(crate) dev: bool,

    /// Directory of the node's state [default: ~/.local/share/quorate; a temporary one in dev
    /// mode] [env: QUORATE_DATA_DIR] [key: data_dir]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Node name shown in listings [default: the host name] [env: QUORATE_NAME] [key: name]
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Role in the cluster [default: voter] [env: QUORATE_ROLE] [key: role]
    #[arg(long, value_enum, value_name = "ROLE")]
    pub(crate) role: Option<Role>,

    /// Cluster to form or join [default: default] [env: QUORATE_CLUSTER] [key: cluster]
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: Option<String>,

    /// Address to listen on for gossip and QUIC [default: 0.0.0.0; 127.0.0.1 in dev mode]
    /// [env: QUORATE_BIND] [key: bind]
    #[arg(long, value_name = "IP")]
    pub(crate) bind: Option<IpAddr>,

    /// Address other nodes reach this one at [default: the first non-loopback address]
    /// [env: QUORATE_ADVERTISE] [key: advertise]
    #[arg(long, value_name = "IP")]
    pub(crate) advertise: Option<IpAddr>,

    /// UDP port of gossip [default: 7946] [env: QUORATE_GOSSIP_PORT] [key: gossip_port]
    #[arg(long, value_name = "PORT")]
    pub(crate) gossip_port: Option<u16>,

    /// UDP port of QUIC: Raft, joins, forwarding [default: 7947] [env: QUORATE_QUIC_PORT]
    /// [key: quic_port]
    #[arg(long, value_name = "PORT")]
    pub(crate) quic_port: Option<u16>,

    /// TCP address of the HTTP API [default: 127.0.0.1:7948] [env: QUORATE_HTTP_ADDR]
    /// [key: http_addr]
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) http_addr: Option<SocketAddr>,

    /// Advertise and browse mDNS only on this interface (repeatable) [default: every
    /// interface] [env: QUORATE_DISCOVERY__INTERFACES, comma-separated] [key:
    /// discovery.interfaces]
    #[arg(long, value_name = "IFACE")]
    pub(crate) interface: Vec<String>,

    /// Never use this interface for mDNS (repeatable) [env:
    /// QUORATE_DISCOVERY__EXCLUDE_INTERFACES] [key: discovery.exclude_interfaces]
    #[arg(long, value_name = "IFACE")]
    pub(crate) exclude_interface: Vec<String>,

    /// Gossip seed addresses, ip:port, comma-separated [env: QUORATE_GOSSIP__SEEDS] [key:
    /// gossip.seeds]
    #[arg(long, value_name = "IP:PORT,...", value_delimiter = ',')]
    pub(crate) gossip_seeds: Vec<std::net::SocketAddr>,

    /// The cluster key, base64 of 32 bytes (`quorate keygen`); seals gossip [env:
    /// QUORATE_CLUSTER_KEY] [key: cluster_key]
    #[arg(long, value_name = "KEY")]
    pub(crate) cluster_key: Option<String>,

    /// A label of this node, KEY=VALUE (repeatable) [key: labels]
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_txt_filter)]
    pub(crate) label: Vec<(String, String)>,

    /// Start a new cluster with this node as its first voter (ignored once the data dir holds a
    /// cluster) [env: QUORATE_BOOTSTRAP] [key: bootstrap]
    #[arg(long)]
    pub(crate) bootstrap: bool,

    /// Join the cluster of these members: QUIC addresses ip:port (or ip for port 7947),
    /// comma-separated [env: QUORATE_PEERS] [key: peers]
    #[arg(
        long,
        value_name = "IP:PORT,...",
        value_delimiter = ',',
        conflicts_with = "bootstrap"
    )]
    pub(crate) peers: Vec<String>,

    /// Join the cluster a join token names, in the role it grants [env: QUORATE_JOIN] [key:
    /// join]
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["bootstrap", "dev"])]
    pub(crate) join: Option<String>,

    /// With no --bootstrap, --peers or --join: form a cluster once this many voter-eligible
    /// nodes are seen on mDNS [default: 3] [env: QUORATE_BOOTSTRAP_EXPECT] [key:
    /// bootstrap_expect]
    #[arg(long, value_name = "N")]
    pub(crate) bootstrap_expect: Option<usize>,

    /// Leave the cluster on SIGTERM before stopping [env: QUORATE_LEAVE_ON_TERMINATE] [key:
    /// leave_on_terminate]
    #[arg(long)]
    pub(crate) leave_on_terminate: bool,

    /// Voters a cluster bootstrapped here aims for: 1, 3, 5 or 7 [default: 3] [env:
    /// QUORATE_RAFT__VOTER_TARGET] [key: raft.voter_target]
    #[arg(long, value_name = "N")]
    pub(crate) voter_target: Option<u8>,

    /// Run COMMAND for each event of these types: TYPES=COMMAND, TYPES a comma list (joined,
    /// promoted, demoted, removed, left, failed, recovered, leader_changed, labels_changed,
    /// token_created, token_used, token_revoked) or * for all; the event is JSON on stdin and
    /// in QUORATE_EVENT_* variables (repeatable) [key: on_event]
    #[arg(long, value_name = "TYPES=COMMAND")]
    pub(crate) on_event: Vec<String>,

    /// Log format [default: text] [env: QUORATE_LOG_FORMAT] [key: log_format]. The log level
    /// comes from QUORATE_LOG (key: log), else RUST_LOG, else info (openraft: errors only).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormatArg>,
}

impl AgentArgs {
    /// The layers above the defaults: the file named by --config, the environment, the flags.
    pub(crate) fn sources(&self, env: impl IntoIterator<Item = (String, String)>) -> Sources {
        let mut flags = Vec::new();
        let mut push = |flag: &'static str, key: &'static str, value: Option<config::Value>| {
            if let Some(value) = value {
                flags.push(FlagValue { flag, key, value });
            }
        };
        let s = |v: &dyn ToString| config::Value::from(v.to_string());
        push("--dev", "dev", self.dev.then(|| true.into()));
        push(
            "--data-dir",
            "data_dir",
            self.data_dir
                .as_ref()
                .map(|p| p.display().to_string().into()),
        );
        push("--name", "name", self.name.as_ref().map(|v| s(v)));
        push("--role", "role", self.role.map(|r| r.as_str().into()));
        push("--cluster", "cluster", self.cluster.as_ref().map(|v| s(v)));
        push("--bind", "bind", self.bind.as_ref().map(|v| s(v)));
        push(
            "--advertise",
            "advertise",
            self.advertise.as_ref().map(|v| s(v)),
        );
        push(
            "--gossip-port",
            "gossip_port",
            self.gossip_port.map(|p| i64::from(p).into()),
        );
        push(
            "--quic-port",
            "quic_port",
            self.quic_port.map(|p| i64::from(p).into()),
        );
        push(
            "--http-addr",
            "http_addr",
            self.http_addr.as_ref().map(|v| s(v)),
        );
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| config::Value::from(v.clone()));
        push("--interface", "discovery.interfaces", list(&self.interface));
        let seeds: Vec<String> = self.gossip_seeds.iter().map(ToString::to_string).collect();
        push("--gossip-seeds", "gossip.seeds", list(&seeds));
        push(
            "--cluster-key",
            "cluster_key",
            self.cluster_key.as_ref().map(|v| s(v)),
        );
        let labels: std::collections::HashMap<String, config::Value> = self
            .label
            .iter()
            .map(|(k, v)| (k.clone(), config::Value::from(v.as_str())))
            .collect();
        push(
            "--label",
            "labels",
            (!labels.is_empty()).then(|| config::Value::from(labels)),
        );
        push(
            "--exclude-interface",
            "discovery.exclude_interfaces",
            list(&self.exclude_interface),
        );
        push(
            "--bootstrap",
            "bootstrap",
            self.bootstrap.then(|| true.into()),
        );
        push("--peers", "peers", list(&self.peers));
        push("--join", "join", self.join.as_ref().map(|v| s(v)));
        push(
            "--bootstrap-expect",
            "bootstrap_expect",
            self.bootstrap_expect.map(|n| (n as i64).into()),
        );
        push(
            "--leave-on-terminate",
            "leave_on_terminate",
            self.leave_on_terminate.then(|| true.into()),
        );
        push(
            "--voter-target",
            "raft.voter_target",
            self.voter_target.map(|n| i64::from(n).into()),
        );
        push(
            "--on-event",
            "on_event",
            (!self.on_event.is_empty()).then(|| {
                config::Value::from(self.on_event.iter().map(|h| s(h)).collect::<Vec<_>>())
            }),
        );
        push(
            "--log-format",
            "log_format",
            self.log_format.map(|f| match f {
                LogFormatArg::Text => "text".into(),
                LogFormatArg::Json => "json".into(),
            }),
        );
        Sources {
            file: self.config.clone(),
            env: Sources::env_from(env),
            flags,
        }
    }
}

/// Runs the agent with the configuration from these flags, the environment and the file.
pub(crate) fn run(args: &AgentArgs) -> ExitCode {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = match quorate::config::load(&args.sources(env)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return match serde_json::to_value(&config).and_then(|mut v| {
            // Secrets are said to be set, never printed.
            for key in ["cluster_key", "join"] {
                if !v[key].is_null() {
                    v[key] = "(set, not shown)".into();
                }
            }
            serde_json::to_string_pretty(&v)
        }) {
            Ok(json) => {
                say!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    quorate::logging::init(
        config.log_format,
        config.log.as_deref(),
        rust_log.as_deref(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quorate::agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
