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
    Agent(Box<AgentArgs>),
    /// Find quorate nodes on the local network with mDNS.
    #[command(long_about = DISCOVER_ABOUT)]
    Discover(DiscoverArgs),
    /// List the members the local agent knows by gossip, with their liveness.
    #[command(long_about = MEMBERS_ABOUT)]
    Members(MembersArgs),
    /// Show or rotate the gossip keyring of the local agent.
    #[command(long_about = KEYRING_ABOUT)]
    Keyring(KeyringArgs),
    /// Print a new random cluster key (32 bytes, base64).
    Keygen,
    /// Show the Raft group and the membership registry as the local agent sees them.
    #[command(long_about = STATUS_ABOUT)]
    Status(StatusArgs),
    /// Set or remove labels of the local node in the registry (a Raft write).
    #[command(long_about = LABEL_ABOUT)]
    Label(LabelArgs),
    /// Ask the leader to hand leadership over to another voter.
    #[command(long_about = STEP_DOWN_ABOUT)]
    StepDown(AdminArgs),
    /// Make a caught-up learner of the voter role a voter.
    Promote(NodeArgs),
    /// Make a voter a learner (the autopilot will not promote it again by itself).
    Demote(NodeArgs),
    /// Take a node out of the cluster: out of the Raft group and the registry.
    Remove(NodeArgs),
    /// Create, list or revoke join tokens.
    #[command(long_about = TOKEN_ABOUT)]
    Token(TokenArgs),
    /// Leave the cluster: deregister this node (a leader hands over first), then stop the agent.
    #[command(long_about = LEAVE_ABOUT)]
    Leave(AdminArgs),
}

const TOKEN_ABOUT: &str = "Create, list or revoke join tokens.

A join token lets a new node join this cluster: `quorate agent --join TOKEN`. It carries the
cluster CA's fingerprint (the joiner trusts nothing else), a secret (the registry keeps only its
hash), the role it grants, its expiry and the addresses of voters. Creating, using and revoking
tokens goes through Raft.

  T=$(quorate token create --role storage --ttl 1h --uses 10)
  quorate token list
  quorate token revoke 0123456789abcdef

`create` prints only the token (use --json for details). Changes need the admin credential.";

const LEAVE_ABOUT: &str = "Leave the cluster: deregister this node, then stop the agent.

The node is marked leaving, taken out of the Raft group (a leader hands leadership to another
voter first) and removed from the registry; gossip reports it left. Its cluster state is set
aside in the data dir, so a restart starts afresh and may join again.";

#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    #[command(subcommand)]
    pub(crate) op: TokenCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token; prints only the token.
    Create {
        /// The role it grants.
        #[arg(long, value_enum, default_value = "voter")]
        role: RoleArg,
        /// How long it stays valid, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// How many nodes may join with it [default: unlimited until it expires].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        uses: Option<u32>,
        /// Print JSON with the token's id, role, expiry and uses.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (16 hex digits, as `token list` shows it).
        id: String,
    },
}

const STATUS_ABOUT: &str =
    "Show the Raft group and the membership registry as the local agent sees them.

Prints the cluster, this node's state, the leader, the term and the commit index, then one row
per member: id, name, role (voter: management plane; storage: storage plane), suffrage (voter
or learner in the Raft group), QUIC address, the log index replicated to it (on the leader),
its registry status (active or leaving), its liveness by gossip, and its labels.

Exit status: 0 shown, 1 the agent could not be reached or is not a member of a cluster yet,
2 usage error.";

const LABEL_ABOUT: &str = "Set or remove labels of the local node in the registry.

Labels are kept in the replicated registry (a Raft write, forwarded to the leader from any
node), published in gossip, and shown by `quorate status` and `quorate members`.

Examples:
  quorate label set zone=a rack=r12
  quorate label rm rack

Exit status: 0 done, 1 refused or not committed (the message says why), 2 usage error.";

const STEP_DOWN_ABOUT: &str = "Ask the leader to hand leadership over to another voter.

The leader picks the most caught-up voter, lets it catch up fully, and has it win an election;
writes wait meanwhile and then go to the new leader. Run it on any node: the request goes to
the leader. Useful before maintenance of the leader's machine.

Exit status: 0 handed over, 1 refused (no other voter, no quorum) or unreachable.";

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
}

#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The node's id (16 hex digits, as `quorate status` shows it).
    #[arg(value_name = "NODE-ID")]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) api: ApiArg,
}

#[derive(Debug, Args)]
pub(crate) struct LabelArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    #[command(subcommand)]
    pub(crate) op: LabelCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LabelCmd {
    /// Set labels: KEY=VALUE ...
    Set {
        /// Labels to set.
        #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_txt_filter)]
        labels: Vec<(String, String)>,
    },
    /// Remove labels: KEY ...
    Rm {
        /// Labels to remove.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

const MEMBERS_ABOUT: &str = "List the members the local agent knows by gossip, with their liveness.

Asks the agent's HTTP API (--api). One row per node: id, name, role, gossip address, status
(alive, failed: stopped without a goodbye, left: left gracefully), version and labels.

Exit status: 0 listed, 1 the agent could not be reached or refused, 2 usage error.";

const KEYRING_ABOUT: &str = "Show or rotate the gossip keyring of the local agent.

Gossip is sealed with the primary key and opened with any installed key. To rotate a cluster's
key without splitting it, run each step on every node before the next step:
  1. quorate keyring install NEWKEY
  2. quorate keyring use FINGERPRINT-OF-NEWKEY
  3. quorate keyring remove FINGERPRINT-OF-OLDKEY
Keys are shown by fingerprint only. Each node keeps its keyring in its data dir.";

#[derive(Debug, Args)]
pub(crate) struct ApiArg {
    /// Address of the agent's HTTP API.
    #[arg(long, global = true, env = "QUORATE_API", default_value = quorate::client::DEFAULT_API, value_name = "URL")]
    pub(crate) api: String,
    /// The agent's admin credential, for changes [default: read from the agent's data dir]
    #[arg(
        long,
        global = true,
        env = "QUORATE_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) admin_token: Option<String>,
    /// The agent's data dir, where its admin credential is [default: ~/.local/share/quorate,
    /// then /var/lib/quorate]
    #[arg(
        long = "data-dir",
        global = true,
        env = "QUORATE_DATA_DIR",
        value_name = "DIR"
    )]
    pub(crate) data_dir: Option<PathBuf>,
}

impl ApiArg {
    /// A client of the agent, with the admin credential when one is found.
    pub(crate) fn client(&self) -> quorate::client::Client {
        quorate::client::Client::new(&self.api).with_admin(quorate::client::find_admin_token(
            self.admin_token.as_deref(),
            self.data_dir.as_deref(),
        ))
    }
}

#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print one JSON array.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct KeyringArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) op: KeyringCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyringCmd {
    /// List installed keys by fingerprint, primary first.
    List,
    /// Install a key (base64) for opening datagrams.
    Install {
        /// The key, as printed by `quorate keygen`.
        key: String,
    },
    /// Seal with this installed key from now on.
    Use {
        /// Fingerprint of an installed key.
        fingerprint: String,
    },
    /// Remove an installed key that is not the primary.
    Remove {
        /// Fingerprint of an installed key.
        fingerprint: String,
    },
}

const DISCOVER_ABOUT: &str = "Find quorate nodes on the local network with mDNS (DNS-SD).

Sends mDNS queries on every multicast-capable interface (or those named with --interface) and
lists the nodes that answer, with their addresses and ports. Needs no agent and no
configuration. Other services of the same type, and records that are not quorate's, are skipped
and counted.

Output: a table; --json for one JSON array ([] when nothing is found); --quiet for one line of
comma-separated ip:port (QUIC port) ready for --peers; --format lines for one ip:port per line;
--watch for JSON lines of found/updated/lost events until interrupted.

Exit status: 0 when peers were found (at least --expect of them when given), 1 when none or
fewer than --expect were found by the timeout (what was found is still printed), 2 for a usage
or runtime error.

Examples:
  quorate discover
  quorate discover --expect 3 --timeout 5s --json
  quorate discover --quiet --cluster prod --role voter    (one line of ip:port)
  quorate discover --watch | jq -c 'select(.event == \"lost\")'";

const AGENT_ABOUT: &str = "Run a quorate node (the long-running agent).

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

Stops cleanly on SIGINT or SIGTERM (and stays a member; `quorate leave` deregisters).
Exit status: 0 after a clean stop, 1 when the node cannot start or run or the cluster refused
it, 2 for invalid arguments or configuration.

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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
    /// One ip:port per line.
    Lines,
    /// One line of comma-separated ip:port.
    Quiet,
}

#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    /// How long to wait for answers, e.g. 500ms, 2s [default: 2s]. With --watch: stop after
    /// this long (default: until interrupted).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,

    /// Exit as soon as this many matching peers are found.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) expect: Option<u32>,

    /// Only peers of this cluster.
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: Option<String>,

    /// Only peers of this role.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub(crate) role: Option<RoleArg>,

    /// Only peers whose TXT record has KEY=VALUE (repeatable; all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_txt_filter)]
    pub(crate) txt: Vec<(String, String)>,

    /// Query only on this interface (repeatable) [default: every interface].
    #[arg(long, value_name = "IFACE")]
    pub(crate) interface: Vec<String>,

    /// Never query on this interface (repeatable).
    #[arg(long, value_name = "IFACE")]
    pub(crate) exclude_interface: Vec<String>,

    /// DNS-SD service type to look for.
    #[arg(long, value_name = "TYPE", default_value = quorate_discovery::DEFAULT_SERVICE_TYPE)]
    pub(crate) service_type: String,

    /// Query over IPv4 only.
    #[arg(long)]
    pub(crate) no_ipv6: bool,

    /// Print one JSON array (same as --format json).
    #[arg(long, conflicts_with_all = ["quiet", "format", "watch"])]
    pub(crate) json: bool,

    /// Print one line of comma-separated ip:port (same as --format quiet).
    #[arg(long, short, conflicts_with_all = ["format", "watch"])]
    pub(crate) quiet: bool,

    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "watch")]
    pub(crate) format: Option<FormatArg>,

    /// Print found/updated/lost events as JSON lines until interrupted.
    #[arg(long)]
    pub(crate) watch: bool,
}

fn parse_txt_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl DiscoverArgs {
    pub(crate) fn format(&self) -> quorate::discover::Format {
        use quorate::discover::Format;
        match (self.json, self.quiet, self.format) {
            (true, _, _) | (_, _, Some(FormatArg::Json)) => Format::Json,
            (_, true, _) | (_, _, Some(FormatArg::Quiet)) => Format::Quiet,
            (_, _, Some(FormatArg::Lines)) => Format::Lines,
            _ => Format::Table,
        }
    }

    pub(crate) fn filter(&self) -> quorate::discover::Filter {
        quorate::discover::Filter {
            cluster: self.cluster.clone(),
            role: self.role.map(|r| match r {
                RoleArg::Voter => quorate_discovery::AdvertRole::Voter,
                RoleArg::Storage => quorate_discovery::AdvertRole::Storage,
            }),
            txt: self.txt.clone(),
        }
    }

    pub(crate) fn interfaces(&self) -> quorate_discovery::Interfaces {
        quorate_discovery::Interfaces {
            include: self.interface.clone(),
            exclude: self.exclude_interface.clone(),
            loopback_only: false,
        }
    }
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
        let Command::Agent(args) = cli.command else {
            panic!("parsed as agent")
        };
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

    #[test]
    fn discover_flags_parse_and_conflict() {
        let cli = Cli::try_parse_from([
            "quorate", "discover", "--expect", "3", "--txt", "zone=a", "--role", "voter", "--json",
        ])
        .expect("parse");
        let Command::Discover(d) = cli.command else {
            panic!("parsed as discover")
        };
        assert_eq!(d.format(), quorate::discover::Format::Json);
        assert_eq!(d.filter().txt, vec![("zone".to_string(), "a".to_string())]);
        assert!(Cli::try_parse_from(["quorate", "discover", "--json", "--quiet"]).is_err());
        assert!(Cli::try_parse_from(["quorate", "discover", "--txt", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["quorate", "discover", "--expect", "0"]).is_err());
        assert!(Cli::try_parse_from(["quorate", "discover", "--timeout", "soon"]).is_err());
    }
}
