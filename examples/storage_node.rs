//! A storage service that embeds a quorate node: it runs a `--role storage` member inside its
//! own process, joins the cluster with a join token, and prints membership changes as they
//! happen, one JSON object per line on stdout:
//!
//! - `{"kind":"event", "index":"7", "type":"joined", "node":"…", …}` for every membership
//!   event (the same typed events as `GET /v1/events`);
//! - `{"kind":"membership", "leader":"…", "members":[{"name":…, "role":…, "suffrage":…,
//!   "liveness":…}]}` whenever the membership view changes.
//!
//! The configuration is read the way `quorate agent` reads it (defaults < `--config` file <
//! `QUORATE_*` environment), and the role is always storage: this service keeps data, it does
//! not govern the cluster.
//!
//! ```text
//! quorate token create --role storage            # on a voter: prints a token
//! cargo run --example storage_node -- --join <TOKEN> --data-dir /var/lib/my-service/quorate
//! ```
//!
//! It stops on SIGINT or SIGTERM (and stays a member: a restart resumes).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quorate::config::{self, Sources};
use quorate::{Agent, Role};
use serde_json::json;

/// A storage service embedding a quorate storage node.
#[derive(Debug, Parser)]
struct Args {
    /// The join token (`quorate token create --role storage` on a voter). Also QUORATE_JOIN.
    #[arg(long)]
    join: Option<String>,
    /// Where the node keeps its state. Also QUORATE_DATA_DIR.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A quorate config file (TOML), as `quorate agent --config` takes.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sources = Sources {
        file: args.config.clone(),
        env: Sources::env_from(std::env::vars()),
        flags: Vec::new(),
    };
    let mut config = match config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    config.role = Role::Storage;
    if args.join.is_some() {
        config.join = args.join;
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir;
    }
    quorate::logging::init(config.log_format, config.log.as_deref(), None);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the embedded node and prints what it learns until a signal arrives.
async fn serve(config: quorate::Config) -> Result<(), quorate::AgentError> {
    let signals = tokio::spawn(quorate::agent::shutdown_signal());
    let agent = Agent::start(config)?;
    // Subscribe before the node runs, so that no event is missed.
    let events = agent.events();
    let mut subscription = events.subscribe(None).map_err(|e| {
        quorate::AgentError::Config(format!("the event hub refused a subscription: {e}"))
    })?;
    let mut membership = agent.membership();
    let printer = tokio::spawn(async move {
        loop {
            tokio::select! {
                event = subscription.next() => match event {
                    Ok(event) => {
                        let mut line = json!({"kind": "event"});
                        if let (Some(obj), Ok(serde_json::Value::Object(fields))) =
                            (line.as_object_mut(), serde_json::to_value(&event))
                        {
                            obj.extend(fields);
                        }
                        println!("{line}");
                    }
                    Err(compacted) => {
                        // Fell behind what the node keeps: say so, and go on from there.
                        eprintln!("warning: {compacted}");
                        match events.subscribe(Some(compacted.oldest)) {
                            Ok(s) => subscription = s,
                            Err(e) => {
                                eprintln!("error: {e}");
                                return;
                            }
                        }
                    }
                },
                changed = membership.changed() => {
                    if changed.is_err() {
                        return; // the agent is gone
                    }
                    let view = membership.borrow_and_update().clone();
                    if let Some(view) = view {
                        let members: Vec<_> = view
                            .members
                            .iter()
                            .map(|m| json!({
                                "id": m.member.id.to_string(),
                                "name": m.member.name,
                                "role": m.member.role,
                                "suffrage": m.member.suffrage,
                                "liveness": m.liveness,
                            }))
                            .collect();
                        println!(
                            "{}",
                            json!({
                                "kind": "membership",
                                "leader": view.leader_id.map(|l| l.to_string()),
                                "members": members,
                            })
                        );
                    }
                }
            }
        }
    });
    let result = agent
        .run_until(async move {
            match signals.await {
                Ok(Ok(name)) => name,
                _ => "signal handler failure",
            }
        })
        .await;
    printer.abort();
    result
}
