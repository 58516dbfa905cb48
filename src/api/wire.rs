//! The wire types of the agent's HTTP API: what the CLI and other clients send and read.
//!
//! Plain serde structs and enums, nothing else: no axum, no server state. Node ids and roles
//! are the workspace's own types (ids as 16 hex digits); a member in `status` is consensus's
//! [`MemberView`] as it is, with gossip's liveness beside it; an event of `/v1/events` is
//! consensus's [`Event`] as it is. A client may depend on this
//! module alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use quorate_base::{NodeId, Role, hex_id};
pub use quorate_consensus::{Event, EventIndex, EventKind, MemberView, NodeStatus};
use serde::{Deserialize, Serialize};

/// The header of `GET /v1/status` that carries the registry index (after Consul's
/// `X-Consul-Index`): pass it back as `?index=` to wait for the next change.
pub const INDEX_HEADER: &str = "x-quorate-index";

/// One row of `quorate members`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberRow {
    /// Node id.
    #[serde(with = "hex_id")]
    pub id: NodeId,
    /// Node name.
    pub name: String,
    /// `voter` or `storage` (absent if the node published none that this node can read).
    pub role: Option<Role>,
    /// Gossip address.
    pub addr: SocketAddr,
    /// `alive`, `failed` or `left`.
    pub status: String,
    /// Software version.
    pub version: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Incarnation.
    pub generation: u64,
    /// QUIC address, if published.
    pub quic_addr: Option<SocketAddr>,
    /// HTTP API address, if published.
    pub api_addr: Option<SocketAddr>,
    /// `forming` or `member`.
    pub state: String,
}

/// The keyring as the API shows it: fingerprints only, never keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyringView {
    /// Whether gossip is sealed.
    pub sealed: bool,
    /// Fingerprint of the primary key.
    pub primary: Option<String>,
    /// Fingerprints of all installed keys, primary first.
    pub keys: Vec<String>,
}

pub use crate::keyring::KeyringOp;

/// `POST /v1/keyring/rotate`: the new cluster key, base64 (in the body, never a command line).
#[derive(Clone, Serialize, Deserialize)]
pub struct RotateRequest {
    /// The new cluster key, as `quorate keygen` prints it.
    pub key: String,
}

impl std::fmt::Debug for RotateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotateRequest { .. }") // never print the key
    }
}

/// One member in `quorate status`: the registry's and the Raft group's view of it, and its
/// liveness as gossip reports it here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusMember {
    /// What consensus knows of it.
    #[serde(flatten)]
    pub member: MemberView,
    /// `alive`, `failed` or `left` as gossip reports it here; `unknown` when gossip has not
    /// heard of it.
    pub liveness: String,
}

/// The membership as one node sees it, for applications that embed a node
/// ([`crate::Agent::membership`]): who is in the cluster, in what role and suffrage, with what
/// labels, alive or not, and who leads. Replication progress is left out (`matched_index` is
/// always `None` here), so the view changes only when the membership does.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    /// Cluster id.
    pub cluster_id: String,
    /// The leader this node knows.
    #[serde(with = "hex_id::option")]
    pub leader_id: Option<NodeId>,
    /// The members, as in `quorate status`.
    pub members: Vec<StatusMember>,
}

/// `quorate status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// This node's id.
    #[serde(with = "hex_id")]
    pub node_id: NodeId,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub state: String,
    /// The leader this node knows.
    #[serde(with = "hex_id::option")]
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Highest log index committed and applied on this node.
    pub commit_index: Option<u64>,
    /// Target number of voters.
    pub voter_target: u8,
    /// Whether nodes may join without a token.
    pub open: bool,
    /// The fingerprint of the cluster CA (SHA-256 of its certificate, hex), as join tokens pin
    /// it.
    #[serde(default)]
    pub ca: String,
    /// During a CA rotation, the fingerprint of the CA it moves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_next: Option<String>,
    /// Members.
    pub members: Vec<StatusMember>,
}

/// A change of this node's labels.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelChange {
    /// Labels to set.
    pub set: BTreeMap<String, String>,
    /// Labels to remove.
    pub remove: Vec<String>,
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `voter` or `storage`.
    pub role: String,
    /// How long it stays valid, e.g. `24h`.
    pub ttl: String,
    /// How many joins it allows (none: unlimited until expiry).
    pub uses: Option<u32>,
}

/// A token as `quorate token list` and `token create --json` show it (never its secret,
/// except `token` right after creation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenView {
    /// Token id.
    pub id: String,
    /// The role it grants.
    pub role: String,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
    /// Joins allowed (none: unlimited).
    pub max_uses: Option<u32>,
    /// Joins so far.
    pub uses: u32,
    /// Revoked by an operator.
    pub revoked: bool,
    /// `valid`, `expired`, `revoked` or `used up` (by this node's clock).
    pub state: String,
    /// The token itself: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /v1/restore`: a snapshot file to restore through Raft.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RestoreRequest {
    /// The file, as `quorate snapshot save` wrote it.
    pub snapshot: crate::snapshot::SnapshotFile,
    /// Restore the snapshot of another cluster.
    #[serde(default)]
    pub force: bool,
}

/// A node named in a restore's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRef {
    /// Node id.
    #[serde(with = "hex_id")]
    pub id: NodeId,
    /// Its name, as the snapshot or the registry records it.
    pub name: String,
}

/// What a restore did (see `quorate_consensus::RestorePlan`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreView {
    /// The log index the restore was committed at.
    pub index: u64,
    /// The snapshot's cluster id.
    pub snapshot_cluster_id: String,
    /// Whether the snapshot was of another cluster, restored with force.
    pub forced: bool,
    /// Nodes recorded now whose labels became the snapshot's.
    pub labels_restored: Vec<NodeRef>,
    /// Nodes of the snapshot that are not members now: not re-added.
    pub nodes_skipped: Vec<NodeRef>,
    /// Members now that the snapshot lacks: kept as they are.
    pub nodes_kept: Vec<NodeRef>,
    /// Join tokens after the restore.
    pub tokens_restored: usize,
    /// Tokens created since the snapshot: dropped.
    pub tokens_dropped: Vec<String>,
    /// Tokens revoked since the snapshot: kept revoked.
    pub tokens_kept_revoked: Vec<String>,
    /// Removed identities the snapshot added.
    pub removals_added: usize,
    /// Nodes whose removal in the snapshot names a member's current key: not added.
    pub removals_skipped: Vec<String>,
    /// The voter target restored.
    pub voter_target: u8,
    /// The failure grace restored (ms).
    pub failed_grace_ms: u64,
}
