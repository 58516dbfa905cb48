//! `quorate members`: the gossip view of the local agent, as a table or JSON.
//!
//! It only asks the agent (`GET /v1/members`) and prints; liveness is gossip's.

use std::process::ExitCode;

use clap::Args;
use quorate::api::wire::MemberRow;

use super::args::{ApiArg, client_failed};
use super::table::columns;

pub(crate) const ABOUT: &str =
    "List the members the local agent knows by gossip, with their liveness.

Asks the agent's HTTP API (--api). One row per node: id, name, role, gossip address, status
(alive, failed: stopped without a goodbye, left: left gracefully), version and labels.

Exit status: 0 listed, 1 the agent could not be reached or refused, 2 usage error.";

#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print one JSON array.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quorate members`.
pub(crate) fn run(args: &MembersArgs) -> ExitCode {
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
                m.id.to_string(),
                m.name.clone(),
                m.role.map_or("?".into(), |r| r.to_string()),
                m.addr.to_string(),
                m.status.clone(),
                m.version.clone(),
                labels,
            ]
        })
        .collect();
    say_raw!(
        "{}",
        columns(
            &["ID", "NAME", "ROLE", "ADDR", "STATUS", "VERSION", "LABELS"],
            &table
        )
    );
    ExitCode::SUCCESS
}
