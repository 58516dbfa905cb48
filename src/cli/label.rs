//! `quorate label set|rm`: change the local node's labels in the registry.
//!
//! The write goes through the agent (`POST /v1/labels`), which makes it a Raft write.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use quorate::api::wire::LabelChange;

use super::args::{ApiArg, client_failed, parse_txt_filter};

pub(crate) const ABOUT: &str = "Set or remove labels of the local node in the registry.

Labels are kept in the replicated registry (a Raft write, forwarded to the leader from any
node), published in gossip, and shown by `quorate status` and `quorate members`.

Examples:
  quorate label set zone=a rack=r12
  quorate label rm rack

Exit status: 0 done, 1 refused or not committed (the message says why), 2 usage error.";

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

/// `quorate label set|rm`.
pub(crate) fn run(args: &LabelArgs) -> ExitCode {
    let change = match &args.op {
        LabelCmd::Set { labels } => LabelChange {
            set: labels.iter().cloned().collect(),
            remove: Vec::new(),
        },
        LabelCmd::Rm { keys } => LabelChange {
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
