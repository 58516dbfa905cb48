//! `quorate token create|list|revoke`: join tokens through the local agent.
//!
//! Minting and the rules of tokens are the agent's and consensus's; this sends the request
//! and prints the token, or the list as a table or JSON.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use quorate::api::wire::{TokenRequest, TokenView};

use super::admin::message;
use super::args::{ApiArg, client_failed};
use super::table::columns;
use quorate::Role;

pub(crate) const ABOUT: &str = "Create, list or revoke join tokens.

A join token lets a new node join this cluster: `quorate agent --join TOKEN`. It carries the
cluster CA's fingerprint (the joiner trusts nothing else), a secret (never sent: the joiner
signs its request with it, and the registry keeps only the public key to check that), the role
it grants, its expiry and the addresses of voters. Creating, using and revoking tokens goes
through Raft.

  T=$(quorate token create --role storage --ttl 1h --uses 10)
  quorate token list
  quorate token revoke 0123456789abcdef

`create` prints only the token (use --json for details). Changes need the admin credential.";

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
        role: Role,
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

/// `quorate token create|list|revoke`.
pub(crate) fn run(args: &TokenArgs) -> ExitCode {
    let client = args.api.client();
    match &args.op {
        TokenCmd::Create {
            role,
            ttl,
            uses,
            json,
        } => {
            let req = TokenRequest {
                role: role.to_string(),
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
        TokenCmd::List { json } => {
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
                columns(&["ID", "ROLE", "STATE", "EXPIRES", "USES"], &rows)
            );
            ExitCode::SUCCESS
        }
        TokenCmd::Revoke { id } => message(&args.api, &format!("/v1/tokens/{id}/revoke")),
    }
}
