//! The command line of the `quorate` binary: the clap definition ([`Cli`], [`Command`]) and
//! one module per command with its flags and its body (`agent`, `discover`, `members`,
//! `status`, `keyring`, `label`, `token`, `admin`, `watch`, `snapshot`, `recover`, `health`, `docs` for
//! completions and manual pages), what they share (`args`), and the column renderer (`table`).
//!
//! Commands talk to the library only through `quorate::api::wire`, `quorate::client`,
//! `quorate::discover`, `quorate::config`, `quorate::snapshot`, `quorate::recover` and
//! `quorate::agent::run`/`shutdown_signal`: never the HTTP server's types. Only this binary prints and chooses exit statuses.

/// `println!` that ends quietly when stdout is closed (`quorate status | head -1`), instead of
/// panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` likewise.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

pub(crate) mod admin;
pub(crate) mod agent;
pub(crate) mod args;
pub(crate) mod ca;
pub(crate) mod discover;
pub(crate) mod docs;
pub(crate) mod health;
pub(crate) mod keyring;
pub(crate) mod label;
pub(crate) mod members;
pub(crate) mod recover;
pub(crate) mod snapshot;
pub(crate) mod status;
pub(crate) mod table;
pub(crate) mod token;
pub(crate) mod watch;

use clap::{Parser, Subcommand};

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
    #[command(long_about = agent::ABOUT)]
    Agent(Box<agent::AgentArgs>),
    /// Find quorate nodes on the local network with mDNS.
    #[command(long_about = discover::ABOUT)]
    Discover(discover::DiscoverArgs),
    /// List the members the local agent knows by gossip, with their liveness.
    #[command(long_about = members::ABOUT)]
    Members(members::MembersArgs),
    /// Show or rotate the gossip keyring of the local agent.
    #[command(long_about = keyring::ABOUT)]
    Keyring(keyring::KeyringArgs),
    /// Print a new random cluster key (32 bytes, base64).
    Keygen,
    /// Rotate the cluster CA on every member (run on a voter).
    #[command(long_about = ca::ABOUT)]
    Ca(ca::CaArgs),
    /// Show the Raft group and the membership registry as the local agent sees them.
    #[command(long_about = status::ABOUT)]
    Status(status::StatusArgs),
    /// Set or remove labels of the local node in the registry (a Raft write).
    #[command(long_about = label::ABOUT)]
    Label(label::LabelArgs),
    /// Ask the leader to hand leadership over to another voter.
    #[command(long_about = admin::STEP_DOWN_ABOUT)]
    StepDown(args::AdminArgs),
    /// Make a caught-up learner of the voter role a voter.
    Promote(args::NodeArgs),
    /// Make a voter a learner (the autopilot will not promote it again by itself).
    Demote(args::NodeArgs),
    /// Take a node out of the cluster: out of the Raft group and the registry.
    Remove(args::NodeArgs),
    /// Create, list or revoke join tokens.
    #[command(long_about = token::ABOUT)]
    Token(token::TokenArgs),
    /// Leave the cluster: deregister this node (a leader hands over first), then stop the agent.
    #[command(long_about = admin::LEAVE_ABOUT)]
    Leave(args::AdminArgs),
    /// Print membership events as they happen (resumes after a dropped connection).
    #[command(long_about = watch::ABOUT)]
    Watch(watch::WatchArgs),
    /// Print a shell completion script (bash, zsh, fish).
    #[command(long_about = docs::COMPLETIONS_ABOUT)]
    Completions(docs::CompletionsArgs),
    /// Print the manual page, or write one per command into a directory.
    #[command(long_about = docs::MAN_ABOUT)]
    Man(docs::ManArgs),
    /// Save, inspect or restore a snapshot of the registry (backups).
    #[command(long_about = snapshot::ABOUT)]
    Snapshot(snapshot::SnapshotArgs),
    /// Make a stopped surviving voter the only voter, when the quorum is lost for good.
    #[command(long_about = recover::ABOUT)]
    Recover(recover::RecoverArgs),
    /// Check the local agent's health: alive, or with --ready a member with a leader.
    #[command(long_about = health::ABOUT)]
    Health(health::HealthArgs),
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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
        assert_eq!(d.format(), table::Format::Json);
        assert_eq!(d.filter().txt, vec![("zone".to_string(), "a".to_string())]);
        assert!(Cli::try_parse_from(["quorate", "discover", "--json", "--quiet"]).is_err());
        assert!(Cli::try_parse_from(["quorate", "discover", "--txt", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["quorate", "discover", "--expect", "0"]).is_err());
        assert!(Cli::try_parse_from(["quorate", "discover", "--timeout", "soon"]).is_err());
    }
}
