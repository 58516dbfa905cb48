//! Command-line interface of the `quorate` binary.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use quorate::config::{FlagValue, Sources};

/// quorate: cluster membership for LANs.
///
/// Nodes find each other with mDNS, track liveness with gossip, and decide membership with
/// Raft: a small group of voters (3, 5 or 7) forms the management plane; storage-plane nodes
/// follow as non-voting learners.
#[derive(Debug, Parser)]
#[command(
    name = "quorate",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a quorate node (the long-running agent).
    #[command(long_about = AGENT_ABOUT)]
    Agent(AgentArgs),
}

const AGENT_ABOUT: &str = "Run a quorate node (the long-running agent).

Settings come from, lowest precedence first: built-in defaults, the config file (--config),
QUORATE_* environment variables (QUORATE_GOSSIP_PORT sets gossip_port), and these flags.
Unknown keys and invalid values are refused at start, naming the key and where it came from.
See packaging/quorate.toml for every key with its default.

Stops cleanly on SIGINT or SIGTERM. Exit status: 0 after a clean stop, 1 when the node cannot
start or run, 2 for invalid arguments or configuration.

Try it on one machine: quorate agent --dev";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RoleArg {
    /// Management plane: may vote in the Raft group.
    Voter,
    /// Storage plane: a non-voting learner for life.
    Storage,
}

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
    pub(crate) role: Option<RoleArg>,

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

    /// Log format [default: text] [env: QUORATE_LOG_FORMAT] [key: log_format]. The log level
    /// comes from QUORATE_LOG (key: log), else RUST_LOG, else info.
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
        push(
            "--role",
            "role",
            self.role.map(|r| match r {
                RoleArg::Voter => "voter".into(),
                RoleArg::Storage => "storage".into(),
            }),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let cli = Cli::try_parse_from([
            "quorate",
            "agent",
            "--dev",
            "--data-dir",
            "/tmp/q",
            "--name",
            "n1",
            "--role",
            "storage",
            "--cluster",
            "c1",
            "--bind",
            "127.0.0.1",
            "--advertise",
            "127.0.0.2",
            "--gossip-port",
            "1001",
            "--quic-port",
            "1002",
            "--http-addr",
            "127.0.0.1:1003",
            "--log-format",
            "json",
        ])
        .expect("parse");
        let Command::Agent(args) = cli.command;
        let cfg = quorate::config::load(&args.sources(Vec::new())).expect("valid");
        assert!(cfg.dev);
        assert_eq!(cfg.data_dir, Some(PathBuf::from("/tmp/q")));
        assert_eq!(cfg.name.as_deref(), Some("n1"));
        assert_eq!(cfg.role, quorate::Role::Storage);
        assert_eq!(cfg.cluster, "c1");
        assert_eq!(cfg.bind.to_string(), "127.0.0.1");
        assert_eq!(
            cfg.advertise.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.2")
        );
        assert_eq!((cfg.gossip_port, cfg.quic_port), (1001, 1002));
        assert_eq!(cfg.http_addr.to_string(), "127.0.0.1:1003");
        assert_eq!(cfg.log_format, quorate::LogFormat::Json);
    }
}
