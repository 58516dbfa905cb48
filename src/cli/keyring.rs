//! `quorate keyring` (show or rotate the local agent's gossip keyring) and `quorate keygen`
//! (print a new cluster key).
//!
//! The keyring's rules are gossip's; this only checks a key's shape before sending it.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use quorate::api::wire::{KeyringOp, KeyringView};
use quorate_consensus::rotation::Report;

use super::args::{ApiArg, client_failed};

pub(crate) const ABOUT: &str = "Show the keyring of the local agent, or rotate the cluster key.

Gossip is sealed with the primary key and opened with any installed key. To rotate the
cluster key on every member at once, run on one voter:
  quorate keygen > new.key
  quorate keyring rotate --key-file new.key
It installs the new key on every member, then seals with it, then removes the old one, each
step on every member before the next; a voter-role node is handed the cluster key, a storage
node only the gossip key derived from it. A member that does not confirm a step stops the
rotation there and is named; run the same command again once it is back.
install, use and remove change the local agent's keyring only. Keys are shown by fingerprint
only; a key is never taken on the command line by rotate (a file, or - for standard input).
Each node keeps its keyring in its data dir.";

#[derive(Debug, Args)]
pub(crate) struct KeyringArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print JSON.
    #[arg(long, global = true)]
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
    /// Rotate the cluster key on every member (run on a voter): install, use, remove.
    ///
    /// Exit status: 0 when every member confirmed every step; 1 when a member did not (the
    /// rotation stopped at that step; the report names it) or the rotation could not start.
    Rotate {
        /// A file holding the new cluster key (as `quorate keygen` prints it), or - to read
        /// it from standard input.
        #[arg(long, value_name = "FILE")]
        key_file: std::path::PathBuf,
    },
}

/// Reads a key from `path`, or standard input for `-`.
fn read_key(path: &std::path::Path) -> Result<String, String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key from {}: {e}", path.display()))?
    };
    let key = text.trim().to_string();
    quorate_gossip::Key::from_base64(&key).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// `quorate keyring rotate`.
fn rotate(args: &KeyringArgs, key_file: &std::path::Path) -> ExitCode {
    let key = match read_key(key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = args.api.client();
    let report: Report =
        match client.post("/v1/keyring/rotate", &quorate::api::RotateRequest { key }) {
            Ok(r) => r,
            Err(e) => return client_failed(e),
        };
    let done = format!(
        "rotated: every member seals with {} ({} removed)",
        report.fingerprint, report.replaced
    );
    finish_rotation(args.json, &report, &done)
}

/// Prints a rotation's report (`json`: as JSON, else each step: how many members confirmed
/// it, and who did not, then `done` or what to do) and gives its exit status: 0 when complete.
pub(crate) fn finish_rotation(json: bool, report: &Report, done: &str) -> ExitCode {
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        for s in &report.steps {
            say!("{:<8}{}/{}", s.step, s.confirmed.len(), s.members);
            for m in &s.missing {
                say!("  not confirmed: {} ({}): {}", m.name, m.id, m.error);
            }
        }
        if report.complete {
            say!("{done}");
        } else {
            say!(
                "not complete: the rotation stopped at this step; run it again once the members above are back"
            );
        }
    }
    if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `quorate keyring`.
pub(crate) fn run(args: &KeyringArgs) -> ExitCode {
    let client = args.api.client();
    let op = match &args.op {
        KeyringCmd::Rotate { key_file } => return rotate(args, key_file),
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
