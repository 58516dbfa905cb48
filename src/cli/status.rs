//! `quorate status`: the Raft group and the registry as the local agent sees them.
//!
//! It only asks the agent (`GET /v1/status`) and prints a summary and one row per member.

use std::process::ExitCode;

use clap::Args;
use quorate::api::wire::StatusView;

use super::args::{ApiArg, client_failed};
use super::table::columns;

pub(crate) const ABOUT: &str =
    "Show the Raft group and the membership registry as the local agent sees them.

Prints the cluster, this node's state, the leader, the term and the commit index, then one row
per member: id, name, role (voter: management plane; storage: storage plane), suffrage (voter
or learner in the Raft group), QUIC address, the log index replicated to it (on the leader),
its registry status (active or leaving), its liveness by gossip, and its labels.

Exit status: 0 shown, 1 the agent could not be reached or is not a member of a cluster yet,
2 usage error.";

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `quorate status`.
pub(crate) fn run(args: &StatusArgs) -> ExitCode {
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
    let name_of = |id: &quorate::NodeId| {
        st.members
            .iter()
            .find(|m| m.member.id == *id)
            .and_then(|m| m.member.name.clone())
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
        st.members
            .iter()
            .filter(|m| m.member.suffrage == "voter")
            .count(),
        st.voter_target,
        if st.open {
            "open (no token needed)"
        } else {
            "by token"
        },
    );
    match &st.ca_next {
        Some(next) => say!("ca       {}, rotating to {next}", st.ca),
        None => say!("ca       {}", st.ca),
    }
    say!();
    let table: Vec<Vec<String>> = st
        .members
        .iter()
        .map(|row| {
            let m = &row.member;
            vec![
                m.id.to_string(),
                m.name.clone().unwrap_or_else(|| "?".into()),
                m.role.map_or("?".into(), |r| r.to_string()),
                m.suffrage.clone(),
                m.raft_addr.clone(),
                m.matched_index.map_or("-".into(), |i| i.to_string()),
                m.status.map_or("-".into(), |s| s.to_string()),
                row.liveness.clone(),
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
        columns(
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
