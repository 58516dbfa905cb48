//! `quorate health`: asks the local agent whether it is alive (`GET /health/live`) or ready
//! (`--ready`: `GET /health/ready`, a member of a cluster with a known leader) and answers
//! with the exit status, for container health checks and scripts that have no HTTP client
//! (the container image has none).
//!
//! It reads that one answer and prints one line; it changes nothing and needs no credential.

use std::process::ExitCode;

use clap::Args;

pub(crate) const ABOUT: &str = "Check the local agent's health: alive, or with --ready ready.

Asks the agent's HTTP API (--api): GET /health/live (the agent answers), or with --ready
GET /health/ready (the node is a member of a cluster and knows its leader). Prints one line
saying what the agent answered. The container image's HEALTHCHECK runs `quorate health
--ready`.

Exit status: 0 alive (ready), 1 not ready or the agent could not be reached, 2 usage error.";

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Check readiness (a member with a known leader), not only that the agent answers.
    #[arg(long)]
    pub(crate) ready: bool,
    /// Address of the agent's HTTP API.
    #[arg(long, env = "QUORATE_API", default_value = quorate::client::DEFAULT_API, value_name = "URL")]
    pub(crate) api: String,
}

/// `quorate health [--ready]`.
pub(crate) fn run(args: &HealthArgs) -> ExitCode {
    let path = if args.ready {
        "/health/ready"
    } else {
        "/health/live"
    };
    let client = quorate::client::Client::new(&args.api);
    match client.probe(path) {
        Ok((200, body)) => {
            let what = if args.ready { "ready" } else { "alive" };
            let node = body["node_id"].as_str().unwrap_or("?");
            match body["leader_id"].as_str() {
                Some(leader) => say!("{what}: node {node}, leader {leader}"),
                None => say!("{what}: node {node}"),
            }
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            let reason = body["reason"]
                .as_str()
                .or_else(|| body["error"].as_str())
                .map_or_else(|| body.to_string(), str::to_string);
            say!("not ready ({code}): {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
