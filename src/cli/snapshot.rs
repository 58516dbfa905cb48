//! `quorate snapshot save|inspect|restore`: backups of the registry.
//!
//! `save` asks the local agent for a snapshot (read linearizably on the leader) and writes it
//! atomically, readable by its owner only; `inspect` reads a file offline and checks it;
//! `restore` sends a file to the agent, which restores it through Raft. The rules of what a
//! restore changes are consensus's; this prints what the agent answered.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use quorate_base::durable::{self, Existing};

use clap::{Args, Subcommand};
use quorate::api::wire::{NodeRef, RestoreRequest, RestoreView};
use quorate::snapshot::{Payload, SnapshotFile};
use serde_json::json;

use super::args::{ApiArg, client_failed};

pub(crate) const ABOUT: &str = "Save, inspect or restore a snapshot of the registry.

A snapshot holds the registry (nodes, labels, join tokens as hashes and public keys of their
secrets, the removed identities, the settings) as the leader applied it, with the log index and
term it reflects, the cluster's id and name, when it was taken, and a SHA-256 checksum.

  quorate snapshot save backup.json          # written 0600, never over a file unless --force
  quorate snapshot inspect backup.json       # offline: checks format and checksum
  quorate snapshot restore backup.json       # through Raft; another cluster's needs --force

A restore never invents members (Raft decides membership): it restores the settings, the
join tokens (a token revoked since stays revoked), the removed identities, and the labels of
the nodes that are members now; members the snapshot lacks are kept, and nodes of the snapshot
that are not members now are reported. save and restore need the admin credential and a voter.

Exit status: 0 done, 1 refused or failed (a truncated, corrupted or foreign file), 2 usage.";

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    #[command(subcommand)]
    pub(crate) op: SnapshotCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCmd {
    /// Take a snapshot from the leader and write it to FILE.
    Save {
        /// Where to write it.
        file: PathBuf,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Check a snapshot file and show what it holds (offline).
    Inspect {
        /// The file.
        file: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into the running cluster, through Raft.
    Restore {
        /// The file.
        file: PathBuf,
        /// Restore the snapshot of another cluster.
        #[arg(long)]
        force: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn failed(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// `quorate snapshot save|inspect|restore`.
pub(crate) fn run(args: &SnapshotArgs) -> ExitCode {
    match &args.op {
        SnapshotCmd::Save { file, force, json } => save(&args.api, file, *force, *json),
        SnapshotCmd::Inspect { file, json } => inspect(file, *json),
        SnapshotCmd::Restore { file, force, json } => restore(&args.api, file, *force, *json),
    }
}

fn read(file: &Path) -> Result<(SnapshotFile, Payload), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let snap = SnapshotFile::from_bytes(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let payload = snap
        .payload()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((snap, payload))
}

fn summary(p: &Payload) -> serde_json::Value {
    json!({
        "cluster_id": p.cluster_id,
        "cluster_name": p.cluster_name,
        "index": p.index,
        "term": p.term,
        "taken_ms": p.taken_ms,
        "taken_on": p.taken_on,
        "quorate_version": p.quorate_version,
        "nodes": p.registry.nodes.len(),
        "tokens": p.registry.tokens.len(),
    })
}

fn taken_at(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn save(api: &ApiArg, file: &Path, force: bool, json_out: bool) -> ExitCode {
    if file.exists() && !force {
        return failed(format!(
            "{} exists; give --force to overwrite it",
            file.display()
        ));
    }
    let snap: SnapshotFile = match api.client().get("/v1/snapshot") {
        Ok(s) => s,
        Err(e) => return client_failed(e),
    };
    let payload = match snap.payload() {
        Ok(p) => p,
        Err(e) => return failed(format!("the agent sent a bad snapshot: {e}")),
    };
    // 0600: the snapshot holds token hashes; over an existing file only with --force.
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    if let Err(e) = durable::write(file, &snap.to_bytes(), 0o600, existing) {
        return failed(format!("{}: {e}", file.display()));
    }
    if json_out {
        let mut v = summary(&payload);
        v["file"] = json!(file.display().to_string());
        v["sha256"] = json!(snap.sha256);
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        say!(
            "saved a snapshot of cluster {} ({}) at index {}, term {}: {} nodes, {} join tokens, to {} (sha256 {})",
            payload.cluster_name,
            payload.cluster_id,
            payload.index,
            payload.term,
            payload.registry.nodes.len(),
            payload.registry.tokens.len(),
            file.display(),
            snap.sha256
        );
    }
    ExitCode::SUCCESS
}

fn inspect(file: &Path, json_out: bool) -> ExitCode {
    let (snap, p) = match read(file) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let r = &p.registry;
    let labels: usize = r.nodes.values().map(|n| n.labels.len()).sum();
    if json_out {
        let mut v = summary(&p);
        v["sha256"] = json!(snap.sha256);
        v["format_version"] = json!(snap.version);
        v["labels"] = json!(labels);
        v["removed_identities"] = json!(r.removed.values().map(|k| k.len()).sum::<usize>());
        v["settings"] = json!(r.settings);
        v["nodes"] = r
            .nodes
            .values()
            .map(|n| {
                json!({
                    "id": n.id.to_string(),
                    "name": n.name,
                    "role": n.role,
                    "status": n.status,
                    "raft_addr": n.raft_addr,
                    "labels": n.labels,
                })
            })
            .collect();
        v["tokens"] = r
            .tokens
            .values()
            .map(|t| {
                json!({
                    "id": t.id, "role": t.role, "expires_ms": t.expires_ms,
                    "uses": t.uses, "max_uses": t.max_uses, "revoked": t.revoked,
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    say!(
        "snapshot  {} (format {}, checksum good)",
        file.display(),
        snap.version
    );
    say!("cluster   {} ({})", p.cluster_name, p.cluster_id);
    say!("position  index {}, term {}", p.index, p.term);
    say!(
        "taken     {} on {} (leader {}), quorate {}",
        taken_at(p.taken_ms),
        p.taken_on,
        p.leader,
        p.quorate_version
    );
    for (role, title) in [
        (quorate::Role::Voter, "voters"),
        (quorate::Role::Storage, "storage"),
    ] {
        let names: Vec<String> = r
            .nodes
            .values()
            .filter(|n| n.role == role)
            .map(|n| format!("{} ({})", n.name, n.id))
            .collect();
        if names.is_empty() {
            say!("{title:<9} 0");
        } else {
            say!("{title:<9} {}: {}", names.len(), names.join(", "));
        }
    }
    say!("labels    {labels}");
    say!(
        "tokens    {} ({} revoked)",
        r.tokens.len(),
        r.tokens.values().filter(|t| t.revoked).count()
    );
    say!(
        "removed   {} identities",
        r.removed.values().map(|k| k.len()).sum::<usize>()
    );
    say!(
        "settings  voter target {}, failed grace {}",
        r.settings.voter_target,
        humantime::format_duration(std::time::Duration::from_millis(r.settings.failed_grace_ms))
    );
    ExitCode::SUCCESS
}

fn names(refs: &[NodeRef]) -> String {
    if refs.is_empty() {
        return "none".into();
    }
    refs.iter()
        .map(|n| format!("{} ({})", n.name, n.id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn restore(api: &ApiArg, file: &Path, force: bool, json_out: bool) -> ExitCode {
    let (snapshot, p) = match read(file) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let req = RestoreRequest { snapshot, force };
    let v: RestoreView = match api.client().post("/v1/restore", &req) {
        Ok(v) => v,
        Err(e) => return client_failed(e),
    };
    if json_out {
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    say!(
        "restored the snapshot of {} ({}) taken at index {}, committed at index {}{}",
        p.cluster_name,
        p.cluster_id,
        p.index,
        v.index,
        if v.forced {
            " (another cluster's, forced)"
        } else {
            ""
        }
    );
    say!("labels restored      {}", names(&v.labels_restored));
    say!(
        "not members now      {} (not re-added)",
        names(&v.nodes_skipped)
    );
    say!("kept as they are     {}", names(&v.nodes_kept));
    say!(
        "join tokens          {} restored, {} created since dropped, {} kept revoked",
        v.tokens_restored,
        v.tokens_dropped.len(),
        v.tokens_kept_revoked.len()
    );
    say!(
        "removed identities   {} added, {} skipped (they name a member)",
        v.removals_added,
        v.removals_skipped.len()
    );
    say!(
        "settings             voter target {}, failed grace {}",
        v.voter_target,
        humantime::format_duration(std::time::Duration::from_millis(v.failed_grace_ms))
    );
    ExitCode::SUCCESS
}
