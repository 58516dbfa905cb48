//! `quorate keyring` (show or rotate the local agent's gossip keyring) and `quorate keygen`
//! (print a new cluster key).
//!
//! The keyring's rules are gossip's; this only checks a key's shape before sending it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use quorate::api::wire::{KeyringOp, KeyringView};

use super::args::{ApiArg, client_failed};

pub(crate) const ABOUT: &str = "Show or rotate the gossip keyring of the local agent.

Gossip is sealed with the primary key and opened with any installed key. To rotate a cluster's
key without splitting it, run each step on every node before the next step:
  1. quorate keyring install NEWKEY
  2. quorate keyring use FINGERPRINT-OF-NEWKEY
  3. quorate keyring remove FINGERPRINT-OF-OLDKEY
Keys are shown by fingerprint only. Each node keeps its keyring in its data dir.";

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

/// `quorate keyring`.
pub(crate) fn run(args: &KeyringArgs) -> ExitCode {
    let client = args.api.client();
    let op = match &args.op {
        KeyringCmd::List => None,
        KeyringCmd::Install { key } => {
            if let Err(e) = quorate_gossip::Key::from_base64(key) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Some(KeyringOp::Install { key: key.clone() })
        }
        KeyringCmd::Use { fingerprint } => Some(KeyringOp::Use {
            fingerprint: fingerprint.clone(),
        }),
        KeyringCmd::Remove { fingerprint } => Some(KeyringOp::Remove {
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

/// `quorate keygen`: a new random cluster key, base64.
pub(crate) fn keygen() -> ExitCode {
    say!(
        "{}",
        quorate_gossip::Key::from_bytes(rand::random()).to_base64()
    );
    ExitCode::SUCCESS
}
