//! The membership registry: the replicated state machine that Raft decides.
//!
//! Pure and deterministic: [`Registry::apply`] reads no clock and no random source; any time a
//! decision depends on (token expiry) travels inside the [`Request`], stamped by the leader.
//! Every request is validated; a refused one changes nothing and says why.
//!
//! Secrets never enter it: join tokens are kept as the hash of their secret, and the cluster CA
//! private key is not part of the registry at all (learners replicate the log).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use quorate_base::{NodeId, Role};
pub use restore::{Carried, RestorePlan};

mod restore;

/// A node's standing in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// A member.
    Active,
    /// Leaving gracefully; removed once it is out of the Raft membership.
    Leaving,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeStatus::Active => "active",
            NodeStatus::Leaving => "leaving",
        })
    }
}

/// The cluster's identity, set once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster id: random, 16 hex digits, set at bootstrap.
    pub id: String,
    /// Cluster name.
    pub name: String,
    /// When it was created (ms since the epoch, the bootstrapping node's clock).
    pub created_ms: u64,
}

/// A node as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// QUIC address (Raft RPC).
    pub raft_addr: String,
    /// Gossip address.
    pub gossip_addr: String,
    /// HTTP API address.
    pub api_addr: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Standing.
    pub status: NodeStatus,
    /// When it was registered (leader's clock, ms).
    pub joined_ms: u64,
    /// The fingerprint of the node's key (its identity across certificate renewals); `None`
    /// in records from before identities were recorded.
    #[serde(default)]
    pub key: Option<String>,
}

/// A join token as the registry keeps it: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public token id.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// The public key the secret stands for (Ed25519, hex), which checks a joiner's proof
    /// (`crate::token_proof_key`); `None` in tokens made before join proofs, which admit no
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_key: Option<String>,
    /// Role the token grants.
    pub role: Role,
    /// Expiry (ms since the epoch).
    pub expires_ms: u64,
    /// How many joins it allows; `None`: unlimited until expiry.
    pub max_uses: Option<u32>,
    /// Joins so far.
    pub uses: u32,
    /// Revoked by an operator.
    pub revoked: bool,
    /// When it was created (ms).
    pub created_ms: u64,
}

/// Cluster-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Target number of voters: 3, 5 or 7 (1 in a single-node cluster).
    pub voter_target: u8,
    /// How long gossip must report a node failed before the autopilot removes it (ms).
    pub failed_grace_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            voter_target: 3,
            failed_grace_ms: 60_000,
        }
    }
}

/// A change to the registry: the application data of the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Sets the cluster identity. Only once.
    InitCluster {
        /// Identity.
        cluster: ClusterInfo,
    },
    /// Adds a node, or replaces its addresses, name and role after a restart or re-join.
    PutNode {
        /// The record (its `status` is set to active).
        node: NodeRecord,
    },
    /// Sets one label of a node.
    SetLabel {
        /// Node.
        node: NodeId,
        /// Label name.
        key: String,
        /// Label value.
        value: String,
    },
    /// Removes one label of a node.
    RemoveLabel {
        /// Node.
        node: NodeId,
        /// Label name.
        key: String,
    },
    /// Marks a node as leaving.
    MarkLeaving {
        /// Node.
        node: NodeId,
    },
    /// Deletes a node's record.
    RemoveNode {
        /// Node.
        node: NodeId,
    },
    /// Creates a join token.
    CreateToken {
        /// The token record (`uses` 0, not revoked).
        token: TokenRecord,
    },
    /// Consumes one use of a token, if it is valid at `at_ms` for `role`.
    UseToken {
        /// Token id.
        id: String,
        /// SHA-256 of the presented secret, hex: in entries from before join proofs.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        secret_hash: String,
        /// The token's proof key that the leader checked the joiner's proof with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof_key: Option<String>,
        /// The role the joiner asks for.
        role: Role,
        /// The leader's clock when the join was checked.
        at_ms: u64,
    },
    /// Revokes a token.
    RevokeToken {
        /// Token id.
        id: String,
    },
    /// Replaces the settings.
    SetSettings {
        /// New settings.
        settings: Settings,
    },
    /// Changes nothing; a linearizable barrier and the write of the speed benchmark.
    Noop,
    /// Restores a snapshot's registry into this one, without inventing members (see
    /// [`RestorePlan`]): the settings, the join tokens and the removed identities, and the
    /// labels of the nodes recorded now; the cluster identity and the node records stay.
    Restore {
        /// The registry the snapshot holds.
        snapshot: Carried,
        /// Restore even though the snapshot is of another cluster.
        force: bool,
    },
    /// Starts (or restarts) a CA rotation: members trust this CA beside the current one,
    /// and renew their certificates under it. Its key is never in the log.
    RotateCa {
        /// The next CA's certificate, PEM.
        cert_pem: String,
    },
    /// Ends a CA rotation: the next CA becomes the only one members trust.
    SwitchCa {
        /// The next CA's fingerprint (SHA-256 of its certificate, hex), as a check.
        fingerprint: String,
    },
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The cluster identity is set already.
    #[error("the cluster is initialized already (id {id})")]
    AlreadyInitialized {
        /// Existing id.
        id: String,
    },
    /// A field is invalid.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such node.
    #[error("no node {id} in the registry")]
    UnknownNode {
        /// Node id.
        id: NodeId,
    },
    /// No such token.
    #[error("no join token {id}")]
    UnknownToken {
        /// Token id.
        id: String,
    },
    /// A token with this id exists.
    #[error("a join token {id} exists already")]
    DuplicateToken {
        /// Token id.
        id: String,
    },
    /// The secret does not match.
    #[error("the join token's secret is wrong")]
    WrongSecret,
    /// The token expired.
    #[error("the join token expired")]
    Expired,
    /// The token was revoked.
    #[error("the join token was revoked")]
    Revoked,
    /// The token has no uses left.
    #[error("the join token is used up")]
    UsedUp,
    /// The token grants another role.
    #[error("the join token grants role {granted:?}, not {asked:?}")]
    WrongRole {
        /// Granted.
        granted: Role,
        /// Asked.
        asked: Role,
    },
    /// The identity was removed from the cluster.
    #[error(
        "node {id} was removed from the cluster with this key; it may join again only with a new identity (a fresh data dir)"
    )]
    Removed {
        /// Node id.
        id: NodeId,
    },
    /// A snapshot of another cluster, restored without force.
    #[error(
        "the snapshot is of cluster {snapshot}, not this cluster ({running}); restore it here only with --force"
    )]
    OtherCluster {
        /// The snapshot's cluster id (`-` when it records none).
        snapshot: String,
        /// This cluster's id (`-` when it is not initialized).
        running: String,
    },
    /// Another key claims a registered node id.
    #[error(
        "node {id} is registered with another key; if that node lost its identity, remove it first (quorate remove {id})"
    )]
    AnotherKey {
        /// Node id.
        id: NodeId,
    },
}

/// The outcome of applying a request.
pub type Outcome = Result<(), Refusal>;

/// The registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Identity, once initialized.
    pub cluster: Option<ClusterInfo>,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Join tokens by id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Settings.
    pub settings: Settings,
    /// Identities removed from the cluster: by node id, the fingerprints of their keys (`*`:
    /// every key, for a node recorded without one). Their certificates are refused by every
    /// member's handshake, and they may not be recorded again.
    #[serde(default)]
    pub removed: BTreeMap<NodeId, BTreeSet<String>>,
    /// The cluster CA's certificate (PEM) once a rotation replaced the one the cluster was
    /// made with; `None`: the CA of the bootstrap, which members keep in their files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A CA rotation under way: the next CA's certificate (PEM), trusted by every member
    /// beside the current one until [`Request::SwitchCa`] makes it the only one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_next: Option<String>,
}

/// The key a removal denies when the record names none: every key of the node.
pub use crate::tls::ANY_KEY;

const NAME_MAX: usize = 63;
const LABEL_KEY_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 255;
const CA_PEM_MAX: usize = 8192;

fn invalid(field: &str, message: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn check_hex(field: &str, value: &str, len: usize) -> Outcome {
    if value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{len} lowercase hex digits expected"),
        ))
    }
}

fn check_label(key: &str, value: &str) -> Outcome {
    if key.is_empty()
        || key.len() > LABEL_KEY_MAX
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        return Err(invalid(
            "label",
            format!("name {key:?}: 1 to 63 letters, digits, '-', '_', '.', '/'"),
        ));
    }
    if value.len() > LABEL_VALUE_MAX || value.chars().any(char::is_control) {
        return Err(invalid(
            "label",
            format!("value of {key:?}: at most 255 bytes, no control characters"),
        ));
    }
    Ok(())
}

impl Registry {
    /// Checks a request against the current state without applying it.
    pub fn check(&self, req: &Request) -> Outcome {
        match req {
            Request::InitCluster { cluster } => {
                if let Some(c) = &self.cluster {
                    return Err(Refusal::AlreadyInitialized { id: c.id.clone() });
                }
                check_hex("cluster id", &cluster.id, 16)?;
                if cluster.name.is_empty() || cluster.name.len() > 32 {
                    return Err(invalid("cluster name", "1 to 32 bytes"));
                }
                Ok(())
            }
            Request::PutNode { node } => {
                if node.id.get() == 0 {
                    return Err(invalid("node id", "zero is not a node id"));
                }
                if node.name.is_empty() || node.name.len() > NAME_MAX {
                    return Err(invalid("node name", "1 to 63 bytes"));
                }
                for addr in [&node.raft_addr, &node.gossip_addr, &node.api_addr] {
                    if addr.parse::<std::net::SocketAddr>().is_err() {
                        return Err(invalid("node address", format!("{addr:?} is not ip:port")));
                    }
                }
                if let Some(old) = self.nodes.get(&node.id)
                    && old.role == Role::Storage
                    && node.role == Role::Voter
                {
                    return Err(invalid("role", "a storage node stays a storage node"));
                }
                if let Some(removed) = self.removed.get(&node.id)
                    && (removed.contains(ANY_KEY)
                        || node.key.as_ref().is_none_or(|k| removed.contains(k)))
                {
                    return Err(Refusal::Removed { id: node.id });
                }
                if let Some(old) = self.nodes.get(&node.id)
                    && let (Some(a), Some(b)) = (&old.key, &node.key)
                    && a != b
                {
                    return Err(Refusal::AnotherKey { id: node.id });
                }
                node.labels.iter().try_for_each(|(k, v)| check_label(k, v))
            }
            Request::SetLabel { node, key, value } => {
                self.node(*node)?;
                check_label(key, value)
            }
            Request::RemoveLabel { node, .. }
            | Request::MarkLeaving { node }
            | Request::RemoveNode { node } => self.node(*node).map(|_| ()),
            Request::CreateToken { token } => {
                if self.tokens.contains_key(&token.id) {
                    return Err(Refusal::DuplicateToken {
                        id: token.id.clone(),
                    });
                }
                check_hex("token id", &token.id, 16)?;
                check_hex("token secret hash", &token.secret_hash, 64)?;
                if let Some(k) = &token.proof_key {
                    check_hex("token proof key", k, 64)?;
                }
                if token.max_uses == Some(0) {
                    return Err(invalid("token uses", "at least 1"));
                }
                Ok(())
            }
            Request::UseToken {
                id,
                secret_hash,
                proof_key,
                role,
                at_ms,
            } => {
                let t = self
                    .tokens
                    .get(id)
                    .ok_or_else(|| Refusal::UnknownToken { id: id.clone() })?;
                let proven = match proof_key {
                    Some(k) => t.proof_key.as_ref() == Some(k),
                    None => t.secret_hash == *secret_hash,
                };
                if !proven {
                    return Err(Refusal::WrongSecret);
                }
                if t.revoked {
                    return Err(Refusal::Revoked);
                }
                if *at_ms >= t.expires_ms {
                    return Err(Refusal::Expired);
                }
                if t.max_uses.is_some_and(|m| t.uses >= m) {
                    return Err(Refusal::UsedUp);
                }
                if t.role != *role {
                    return Err(Refusal::WrongRole {
                        granted: t.role,
                        asked: *role,
                    });
                }
                Ok(())
            }
            Request::RevokeToken { id } => self
                .tokens
                .get(id)
                .map(|_| ())
                .ok_or_else(|| Refusal::UnknownToken { id: id.clone() }),
            Request::SetSettings { settings } => {
                if ![1, 3, 5, 7].contains(&settings.voter_target) {
                    return Err(invalid("voter target", "1, 3, 5 or 7"));
                }
                Ok(())
            }
            Request::Noop => Ok(()),
            Request::Restore { snapshot, force } => self.check_restore(&snapshot.0, *force),
            Request::RotateCa { cert_pem } => {
                let one = "one certificate of at most 8 KiB";
                if cert_pem.len() > CA_PEM_MAX {
                    return Err(invalid("CA certificate", one));
                }
                match crate::tls::split_pem(cert_pem) {
                    Ok(certs) if certs.len() == 1 => Ok(()),
                    Ok(_) => Err(invalid("CA certificate", one)),
                    Err(e) => Err(invalid("CA certificate", e.to_string())),
                }
            }
            Request::SwitchCa { fingerprint } => {
                let next = self.ca_next.as_deref().map(crate::tls::ca_fingerprint);
                match next {
                    Some(Ok(fp)) if fp == *fingerprint => Ok(()),
                    Some(_) => Err(invalid(
                        "CA",
                        format!("the rotation under way is not to CA {fingerprint}"),
                    )),
                    None => Err(invalid("CA", "no CA rotation is under way")),
                }
            }
        }
    }

    fn node(&self, id: NodeId) -> Result<&NodeRecord, Refusal> {
        self.nodes.get(&id).ok_or(Refusal::UnknownNode { id })
    }

    /// Applies a request: checks it, and changes the registry only if the check passes.
    pub fn apply(&mut self, req: &Request) -> Outcome {
        self.check(req)?;
        match req {
            Request::InitCluster { cluster } => self.cluster = Some(cluster.clone()),
            Request::PutNode { node } => {
                let mut node = node.clone();
                node.status = NodeStatus::Active;
                if let Some(old) = self.nodes.get(&node.id) {
                    node.joined_ms = old.joined_ms;
                    if node.key.is_none() {
                        node.key = old.key.clone();
                    }
                }
                self.nodes.insert(node.id, node);
            }
            Request::SetLabel { node, key, value } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.labels.insert(key.clone(), value.clone());
                }
            }
            Request::RemoveLabel { node, key } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.labels.remove(key);
                }
            }
            Request::MarkLeaving { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.status = NodeStatus::Leaving;
                }
            }
            Request::RemoveNode { node } => {
                if let Some(old) = self.nodes.remove(node) {
                    self.removed
                        .entry(*node)
                        .or_default()
                        .insert(old.key.unwrap_or_else(|| ANY_KEY.to_string()));
                }
            }
            Request::CreateToken { token } => {
                let mut t = token.clone();
                t.uses = 0;
                t.revoked = false;
                self.tokens.insert(t.id.clone(), t);
            }
            Request::UseToken { id, .. } => {
                if let Some(t) = self.tokens.get_mut(id) {
                    t.uses += 1;
                }
            }
            Request::RevokeToken { id } => {
                if let Some(t) = self.tokens.get_mut(id) {
                    t.revoked = true;
                }
            }
            Request::SetSettings { settings } => self.settings = settings.clone(),
            Request::Noop => {}
            Request::Restore { snapshot, .. } => self.restore(&snapshot.0),
            Request::RotateCa { cert_pem } => self.ca_next = Some(cert_pem.clone()),
            Request::SwitchCa { .. } => self.ca = self.ca_next.take(),
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
