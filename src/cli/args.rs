//! What several commands share: how to reach the agent's API ([`ApiArg`], with the admin
//! credential), node arguments, the role argument, the `KEY=VALUE` parser, and how a client
//! error is reported.
//!
//! No command's own flags live here, and nothing here prints a result.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

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

/// `KEY=VALUE`, as labels and TXT filters are written.
pub(crate) fn parse_txt_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Prints a client error and gives exit status 1.
pub(crate) fn client_failed(e: quorate::client::ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
