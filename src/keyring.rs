//! A node's keyring changed at run time: by its own API (`quorate keyring install|use|remove`)
//! or by a voter's cluster-wide rotation (`quorate keyring rotate`).
//!
//! A rotation runs on one voter-role node and goes through every recorded member in three
//! steps, each on every member before the next, so that gossip never splits: install the new
//! key, seal with it, remove the old one. Each member is handed only what its role keeps
//! ([`step_for`]): a voter-role node the cluster key, a storage node the gossip key derived from
//! it, over the member's own mutually authenticated connection (the consensus layer's
//! `send_secrets`), never through Raft; a storage node refuses a cluster key. A step that a
//! member does not confirm stops the rotation before the next step, naming the member; each
//! step is idempotent, so running the rotation again when the member is back completes it.

use std::collections::BTreeMap;

use quorate_base::{NodeId, Role};
use quorate_consensus::Consensus;
use quorate_consensus::rotation::{self, Member, Report};
use quorate_gossip::{Gossip, Key};
use serde::{Deserialize, Serialize};

use crate::data_dir::DataDir;
use crate::keys::{self, KeyKind, SharedKeys};

/// The name of the one secret a rotation step hands a member: the keyring change, as JSON.
pub const SECRET: &str = "keyring";

/// Why a keyring change was not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The change does not fit this keyring (a bad key, an unknown fingerprint, the primary).
    #[error("{0}")]
    Refused(String),
    /// The keyring could not be read or saved.
    #[error("{0}")]
    Failed(String),
}

/// A keyring change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KeyringOp {
    /// Install a cluster key (base64) for opening datagrams; a storage node keeps only the
    /// gossip key derived from it.
    Install {
        /// The key, base64.
        key: String,
    },
    /// Install a gossip key (base64, derived from a cluster key) on a storage node, which
    /// keeps no cluster key: what a rotation hands a storage node.
    InstallGossip {
        /// The gossip key, base64.
        key: String,
    },
    /// Make an installed key primary.
    Use {
        /// Its fingerprint.
        fingerprint: String,
    },
    /// Remove an installed, non-primary key.
    Remove {
        /// Its fingerprint.
        fingerprint: String,
    },
}

impl KeyringOp {
    /// The change's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            KeyringOp::Install { .. } => "install",
            KeyringOp::InstallGossip { .. } => "install_gossip",
            KeyringOp::Use { .. } => "use",
            KeyringOp::Remove { .. } => "remove",
        }
    }
}

/// Applies `op` to this node's keyring: the running gossip first, then the data dir.
pub fn apply(
    keys: &SharedKeys,
    gossip: &Gossip,
    data_dir: &DataDir,
    op: &KeyringOp,
) -> Result<(), KeyringError> {
    let mut stored = keys
        .lock()
        .map_err(|_| KeyringError::Failed("the keyring is unavailable".into()))?;
    let mut next = stored.clone();
    let parse = |key: &str| Key::from_base64(key).map_err(|e| KeyringError::Refused(e.to_string()));
    let done = match op {
        KeyringOp::Install { key } => {
            let k = parse(key)?;
            next.install(k.clone());
            gossip.install_key(keys::gossip_key(&k))
        }
        KeyringOp::InstallGossip { key } => {
            if stored.kind == KeyKind::Cluster && stored.sealed() {
                return Err(KeyringError::Refused(
                    "a voter-role node keeps cluster keys: install the cluster key itself".into(),
                ));
            }
            let k = parse(key)?;
            next.install_gossip(k.clone());
            gossip.install_key(k)
        }
        KeyringOp::Use { fingerprint } => gossip.use_key(fingerprint).map(|()| {
            next.make_primary(fingerprint);
        }),
        KeyringOp::Remove { fingerprint } => gossip.remove_key(fingerprint).map(|()| {
            next.remove(fingerprint);
        }),
    };
    done.map_err(|e| KeyringError::Refused(e.to_string()))?;
    data_dir.save_keyring(&next).map_err(|e| {
        KeyringError::Failed(format!("the keyring changed but could not be saved: {e}"))
    })?;
    *stored = next;
    drop(stored);
    tracing::info!(op = op.name(), primary = ?gossip.key_fingerprints().first(), "gossip keyring changed");
    Ok(())
}

/// What takes a rotation step a voter hands this node: the change is applied as
/// [`apply`] does, except that a storage node (a gossip-only keyring) refuses a cluster key,
/// which it never keeps.
pub fn handler(
    keys: SharedKeys,
    gossip: std::sync::Arc<Gossip>,
    data_dir: std::sync::Arc<DataDir>,
) -> quorate_consensus::SecretsHandler {
    std::sync::Arc::new(move |from: NodeId, secrets: BTreeMap<String, String>| {
        let op: KeyringOp = secrets
            .get(SECRET)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| "no keyring change in the request".to_string())?;
        let kind = keys
            .lock()
            .map(|k| k.kind)
            .map_err(|_| "the keyring is unavailable")?;
        if kind == KeyKind::Gossip && matches!(op, KeyringOp::Install { .. }) {
            tracing::warn!(from = %from, "a cluster key was handed to this storage node; refused");
            return Err("a storage node keeps no cluster key: hand it the gossip key".into());
        }
        apply(&keys, &gossip, &data_dir, &op).map_err(|e| e.to_string())?;
        tracing::info!(from = %from, op = op.name(), "keyring changed by a voter's rotation");
        Ok(format!("{} done", op.name()))
    })
}

/// One step of a rotation, as the rotating voter sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Install the new cluster key.
    Install(Key),
    /// Seal with the key of this fingerprint.
    Use(String),
    /// Remove the key of this fingerprint.
    Remove(String),
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Install(_) => "install",
            Step::Use(_) => "use",
            Step::Remove(_) => "remove",
        }
    }
}

/// The change a member of `role` is handed for `step`: a voter-role node the cluster key, a
/// storage node only the gossip key derived from it.
pub fn step_for(role: Role, step: &Step) -> KeyringOp {
    match (step, role) {
        (Step::Install(k), Role::Voter) => KeyringOp::Install { key: k.to_base64() },
        (Step::Install(k), Role::Storage) => KeyringOp::InstallGossip {
            key: keys::gossip_key(k).to_base64(),
        },
        (Step::Use(fp), _) => KeyringOp::Use {
            fingerprint: fp.clone(),
        },
        (Step::Remove(fp), _) => KeyringOp::Remove {
            fingerprint: fp.clone(),
        },
    }
}

/// Rotates the cluster key to `new` on every recorded member, from this voter-role node
/// (`node`, whose own keyring `apply_here` changes).
pub async fn rotate(
    node: &Consensus,
    keys: &SharedKeys,
    apply_here: impl Fn(&KeyringOp) -> Result<(), KeyringError>,
    new: Key,
) -> Result<Report, KeyringError> {
    let (kind, old) = {
        let k = keys
            .lock()
            .map_err(|_| KeyringError::Failed("the keyring is unavailable".into()))?;
        (k.kind, k.fingerprints().first().cloned())
    };
    if kind != KeyKind::Cluster {
        return Err(KeyringError::Refused(
            "a storage node holds no cluster key: rotate on a voter-role node".into(),
        ));
    }
    let Some(old) = old else {
        return Err(KeyringError::Refused(
            "gossip is open (no cluster key): a rotation replaces a cluster key; seal a cluster with --cluster-key when forming it".into(),
        ));
    };
    let fingerprint = keys::gossip_key(&new).fingerprint();
    if fingerprint == old {
        return Err(KeyringError::Refused(
            "that key is the primary already: make a new one with quorate keygen".into(),
        ));
    }
    let registry = node
        .read()
        .await
        .map_err(|e| KeyringError::Failed(format!("the registry cannot be read: {e}")))?;
    let members = Member::all(&registry);
    let mut report = Report::new(fingerprint.clone(), old.clone());
    for step in [
        Step::Install(new),
        Step::Use(fingerprint),
        Step::Remove(old),
    ] {
        let apply_here = &apply_here;
        let step = &step;
        let s = rotation::step(step.name(), &members, |m| async move {
            let op = step_for(m.role, step);
            if m.id == node.id() {
                apply_here(&op).map_err(|e| e.to_string())
            } else {
                let op = serde_json::to_string(&op).map_err(|e| e.to_string())?;
                node.send_secret(m.id, SECRET, op).await
            }
        })
        .await;
        if !report.record(s) {
            return Ok(report);
        }
    }
    report.complete = true;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voter-role member is handed the cluster key; a storage node only the gossip key
    /// derived from it, never the cluster key's bytes.
    #[test]
    fn each_role_is_handed_only_what_it_keeps() {
        let k = Key::from_bytes([9; 32]);
        assert_eq!(
            step_for(Role::Voter, &Step::Install(k.clone())),
            KeyringOp::Install { key: k.to_base64() }
        );
        let storage = step_for(Role::Storage, &Step::Install(k.clone()));
        assert_eq!(
            storage,
            KeyringOp::InstallGossip {
                key: keys::gossip_key(&k).to_base64()
            }
        );
        let text = serde_json::to_string(&storage).expect("json");
        assert!(!text.contains(&k.to_base64()), "{text}");
        for role in [Role::Voter, Role::Storage] {
            assert_eq!(
                step_for(role, &Step::Use("fp".into())),
                KeyringOp::Use {
                    fingerprint: "fp".into()
                }
            );
        }
    }
}
