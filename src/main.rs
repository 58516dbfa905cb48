//! The `quorate` binary: parses arguments, sets up logging, and hands over to the library.

mod cli;

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

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Discover(args) => discover(&args),
        cli::Command::Members(args) => members(&args),
        cli::Command::Keyring(args) => keyring(&args),
        cli::Command::Status(args) => status(&args),
        cli::Command::Label(args) => label(&args),
        cli::Command::StepDown(args) => message(&args.api, "/v1/step-down"),
        cli::Command::Promote(args) => node_op(&args, "promote"),
        cli::Command::Demote(args) => node_op(&args, "demote"),
        cli::Command::Remove(args) => node_op(&args, "remove"),
        cli::Command::Token(args) => token(&args),
        cli::Command::Leave(args) => message(&args.api, "/v1/leave"),
        cli::Command::Keygen => {
            say!(
                "{}",
                quorate_gossip::Key::from_bytes(rand::random()).to_base64()
            );
            ExitCode::SUCCESS
        }
        cli::Command::Agent(args) => {
            let env = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
            let config = match quorate::config::load(&args.sources(env)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
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
    }
}

/// `quorate discover`: 0 found, 1 none or too few, 2 error.
fn discover(args: &cli::DiscoverArgs) -> ExitCode {
    use std::io::Write;
    let service_type = match quorate_discovery::check_service_type(&args.service_type) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --service-type: {e}");
            return ExitCode::from(2);
        }
    };
    if args.watch {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(2);
            }
        };
        let timeout = args.timeout;
        let stop = async move {
            let signal = async {
                let _ = quorate::agent::shutdown_signal().await;
            };
            match timeout {
                Some(t) => {
                    let _ = tokio::time::timeout(t, signal).await;
                }
                None => signal.await,
            }
        };
        let mut out = std::io::stdout();
        let run = quorate::discover::watch(
            service_type,
            args.interfaces(),
            args.filter(),
            &mut out,
            stop,
        );
        return match runtime.block_on(run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let once = quorate::discover::Once {
        query: quorate_discovery::QueryOptions {
            service_type,
            interfaces: args.interfaces(),
            timeout: args.timeout.unwrap_or(std::time::Duration::from_secs(2)),
            ipv6: !args.no_ipv6,
        },
        expect: args.expect.map(|n| n as usize),
        filter: args.filter(),
    };
    let started = std::time::Instant::now();
    let (peers, stats) = match quorate::discover::once(&once) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = args.format();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(quorate::discover::render(&peers, format).as_bytes());
    let _ = stdout.flush();
    if format == quorate::discover::Format::Table {
        let s = stats.snapshot();
        eprintln!(
            "{} found in {:.2}s ({} foreign and {} malformed records skipped)",
            match peers.len() {
                1 => "1 peer".to_string(),
                n => format!("{n} peers"),
            },
            started.elapsed().as_secs_f64(),
            s["foreign"],
            s["malformed"],
        );
    }
    let wanted = args.expect.map_or(1, |n| n as usize);
    if peers.len() >= wanted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints a client error and gives exit status 1.
fn client_failed(e: quorate::client::ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// `quorate members`.
fn members(args: &cli::MembersArgs) -> ExitCode {
    use quorate::api::MemberRow;
    let client = args.api.client();
    let rows: Vec<MemberRow> = match client.get("/v1/members") {
        Ok(r) => r,
        Err(e) => return client_failed(e),
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
        );
        return ExitCode::SUCCESS;
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let labels = m
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                m.id.clone(),
                m.name.clone(),
                m.role.clone(),
                m.addr.to_string(),
                m.status.clone(),
                m.version.clone(),
                labels,
            ]
        })
        .collect();
    say_raw!(
        "{}",
        quorate::discover::columns(
            &["ID", "NAME", "ROLE", "ADDR", "STATUS", "VERSION", "LABELS"],
            &table
        )
    );
    ExitCode::SUCCESS
}

/// `quorate keyring`.
fn keyring(args: &cli::KeyringArgs) -> ExitCode {
    use quorate::api::{KeyringOp, KeyringView};
    let client = args.api.client();
    let op = match &args.op {
        cli::KeyringCmd::List => None,
        cli::KeyringCmd::Install { key } => {
            if let Err(e) = quorate_gossip::Key::from_base64(key) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Some(KeyringOp::Install { key: key.clone() })
        }
        cli::KeyringCmd::Use { fingerprint } => Some(KeyringOp::Use {
            fingerprint: fingerprint.clone(),
        }),
        cli::KeyringCmd::Remove { fingerprint } => Some(KeyringOp::Remove {
            fingerprint: fingerprint.clone(),
        }),
    };
    let answer: Result<KeyringView, _> = match op {
        None => client.get("/v1/gossip/keys"),
        Some(op) => client.post("/v1/gossip/keys", &op),
    };
    let view = match answer {
        Ok(v) => v,
        Err(e) => return client_failed(e),
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else if !view.sealed {
        say!("gossip is open (no keys)");
    } else {
        for k in &view.keys {
            let primary = if view.primary.as_ref() == Some(k) {
                "  (primary)"
            } else {
                ""
            };
            say!("{k}{primary}");
        }
    }
    ExitCode::SUCCESS
}

/// `quorate status`.
fn status(args: &cli::StatusArgs) -> ExitCode {
    use quorate::api::StatusView;
    let client = args.api.client();
    let st: StatusView = match client.get("/v1/status") {
        Ok(r) => r,
        Err(e) => return client_failed(e),
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&st).unwrap_or_else(|_| "{}".into())
        );
        return ExitCode::SUCCESS;
    }
    let name_of = |id: &str| {
        st.members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.name.clone())
            .unwrap_or_else(|| "?".into())
    };
    say!("cluster  {} ({})", st.cluster_name, st.cluster_id);
    say!(
        "node     {} ({}), {}",
        name_of(&st.node_id),
        st.node_id,
        st.state
    );
    match &st.leader_id {
        Some(l) => say!("leader   {} ({l}), term {}", name_of(l), st.term),
        None => say!("leader   none known, term {}", st.term),
    }
    say!(
        "commit   {}    voters {}/{}    joins {}",
        st.commit_index.map_or("-".to_string(), |c| c.to_string()),
        st.members.iter().filter(|m| m.suffrage == "voter").count(),
        st.voter_target,
        if st.open {
            "open (no token needed)"
        } else {
            "by token"
        },
    );
    say!();
    let table: Vec<Vec<String>> = st
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.name.clone().unwrap_or_else(|| "?".into()),
                m.role.clone().unwrap_or_else(|| "?".into()),
                m.suffrage.clone(),
                m.raft_addr.clone(),
                m.matched_index.map_or("-".into(), |i| i.to_string()),
                m.status.clone().unwrap_or_else(|| "-".into()),
                m.liveness.clone(),
                m.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    say_raw!(
        "{}",
        quorate::discover::columns(
            &[
                "ID",
                "NAME",
                "ROLE",
                "SUFFRAGE",
                "RAFT ADDR",
                "MATCHED",
                "STATUS",
                "LIVENESS",
                "LABELS"
            ],
            &table
        )
    );
    ExitCode::SUCCESS
}

/// `quorate label set|rm`.
fn label(args: &cli::LabelArgs) -> ExitCode {
    let change = match &args.op {
        cli::LabelCmd::Set { labels } => quorate::api::LabelChange {
            set: labels.iter().cloned().collect(),
            remove: Vec::new(),
        },
        cli::LabelCmd::Rm { keys } => quorate::api::LabelChange {
            set: Default::default(),
            remove: keys.clone(),
        },
    };
    let client = args.api.client();
    match client.post::<_, serde_json::Value>("/v1/labels", &change) {
        Ok(v) => {
            let labels = v["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            say!("labels: {labels}");
            ExitCode::SUCCESS
        }
        Err(e) => client_failed(e),
    }
}

/// A POST whose answer is `{"message": ...}`.
fn message(api: &cli::ApiArg, path: &str) -> ExitCode {
    let client = api.client();
    match client.post::<_, serde_json::Value>(path, &serde_json::json!({})) {
        Ok(v) => {
            say!("{}", v["message"].as_str().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => client_failed(e),
    }
}

/// `quorate promote|demote|remove ID`.
fn node_op(args: &cli::NodeArgs, op: &str) -> ExitCode {
    if let Err(e) = args.id.parse::<quorate::NodeId>() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    message(&args.api, &format!("/v1/nodes/{}/{op}", args.id))
}

/// `quorate token create|list|revoke`.
fn token(args: &cli::TokenArgs) -> ExitCode {
    use quorate::api::{TokenRequest, TokenView};
    let client = args.api.client();
    match &args.op {
        cli::TokenCmd::Create {
            role,
            ttl,
            uses,
            json,
        } => {
            let req = TokenRequest {
                role: match role {
                    cli::RoleArg::Voter => "voter".into(),
                    cli::RoleArg::Storage => "storage".into(),
                },
                ttl: humantime::format_duration(*ttl).to_string(),
                uses: *uses,
            };
            match client.post::<_, TokenView>("/v1/tokens", &req) {
                Ok(v) if *json => {
                    say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    say!("{}", v.token.unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => client_failed(e),
            }
        }
        cli::TokenCmd::List { json } => {
            let list: Vec<TokenView> = match client.get("/v1/tokens") {
                Ok(l) => l,
                Err(e) => return client_failed(e),
            };
            if *json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.role.clone(),
                        t.state.clone(),
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.expires_ms),
                        )
                        .to_string(),
                        match t.max_uses {
                            Some(m) => format!("{}/{m}", t.uses),
                            None => format!("{}/-", t.uses),
                        },
                    ]
                })
                .collect();
            say_raw!(
                "{}",
                quorate::discover::columns(&["ID", "ROLE", "STATE", "EXPIRES", "USES"], &rows)
            );
            ExitCode::SUCCESS
        }
        cli::TokenCmd::Revoke { id } => message(&args.api, &format!("/v1/tokens/{id}/revoke")),
    }
}
