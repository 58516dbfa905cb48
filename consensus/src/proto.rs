//! What nodes say to each other over QUIC: Raft's three RPCs, and the node's own requests
//! (forwarded writes and membership changes, joins, the hand-over of leadership). JSON, one
//! request and one answer per stream.

use std::collections::BTreeMap;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::registry::{NodeRecord, NodeStatus, Outcome, Request, Role};

use quorate_base::NodeId;

/// A request between nodes.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Rpc {
    AppendEntries {
        req: AppendEntriesRequest<TypeConfig>,
    },
    Vote {
        req: VoteRequest<NodeId>,
    },
    InstallSnapshot {
        req: InstallSnapshotRequest<TypeConfig>,
    },
    /// A registry write, forwarded to the leader.
    Write {
        req: Request,
    },
    /// A linearizable read of the registry, forwarded to the leader.
    Read,
    /// A linearizable read of the whole registry with the log position it reflects, for a
    /// backup; forwarded to the leader.
    Snapshot,
    /// A membership change, forwarded to the leader.
    Admin {
        op: AdminOp,
    },
    /// From the leader handing over: campaign now.
    Elect,
    /// A node asks to join (the only request a caller without a certificate may make).
    Join {
        join: JoinRequest,
    },
    /// A member asks for a new certificate for its own identity (the same key), before its
    /// certificate runs out; served by the leader.
    Renew {
        csr_pem: String,
    },
    /// The leader asks a voter which nodes its failure detector holds dead.
    Suspects,
    /// A voter asks another whether it would vote for it, before it campaigns.
    PreVote {
        q: PreVote,
    },
    /// A voter hands this member a change of what its role holds (a keyring change chosen
    /// for the member's recorded role by the node layer; opaque here). Never logged, never
    /// written to Raft.
    Secrets {
        secrets: BTreeMap<String, String>,
    },
}

/// A voter's question before it campaigns: would you vote for me?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PreVote {
    /// The candidate (the caller's certificate must name it).
    pub(crate) candidate: NodeId,
    /// The term it would campaign in.
    pub(crate) term: u64,
    /// Its last log entry.
    pub(crate) last_log_id: Option<openraft::LogId<NodeId>>,
}

impl Rpc {
    /// Reads a request as the server does, before it looks at the caller.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Rpc, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// An answer between nodes.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Reply {
    AppendEntries {
        res: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>,
    },
    Vote {
        res: Result<VoteResponse<NodeId>, RaftError<NodeId>>,
    },
    InstallSnapshot {
        res: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    },
    Written {
        res: Result<Written, ConsensusError>,
    },
    Registry {
        res: Result<crate::Registry, ConsensusError>,
    },
    Snapshot {
        res: Result<RegistryAt, ConsensusError>,
    },
    Done {
        res: Result<String, ConsensusError>,
    },
    Joined {
        res: Result<JoinReply, ConsensusError>,
    },
    Renewed {
        res: Result<String, ConsensusError>,
    },
    Suspects {
        dead: Vec<NodeId>,
    },
    /// The answer to a pre-vote; `reason` says why not.
    PreVoted {
        granted: bool,
        reason: String,
    },
    /// The request was not understood or not allowed for this caller.
    Refused {
        reason: String,
    },
}

/// A committed write: the registry's outcome and the log index it was committed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Applied, or refused by the registry (a refused write changes nothing).
    pub outcome: Outcome,
    /// Index of the log entry.
    pub index: u64,
}

/// The registry as the leader applied it up to a log position, read linearizably: what a
/// backup holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAt {
    /// The registry, join tokens included.
    pub registry: crate::Registry,
    /// The index of the last log entry it reflects.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The leader that answered.
    pub leader: NodeId,
}

/// A membership change, decided by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminOp {
    /// Make a caught-up learner of the voter role a voter.
    Promote {
        /// Node.
        node: NodeId,
    },
    /// Make a voter a learner.
    Demote {
        /// Node.
        node: NodeId,
    },
    /// Take a node out of the Raft group and the registry.
    Remove {
        /// Node.
        node: NodeId,
    },
    /// Hand leadership to another voter (to `to`, or the most caught-up one).
    StepDown {
        /// Preferred successor.
        to: Option<NodeId>,
    },
    /// A node leaves: marked leaving, taken out of the group, removed from the registry. A
    /// leaving leader hands over first.
    Leave {
        /// Node.
        node: NodeId,
    },
}

/// What a node says about itself in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Gossip address.
    pub gossip_addr: String,
    /// HTTP API address.
    pub api_addr: String,
    /// Labels it starts with (the registry's win once it is recorded).
    pub labels: BTreeMap<String, String>,
}

impl NodeInfo {
    /// The registry record of node `id` with key fingerprint `key` at `raft_addr`, active,
    /// joined at `joined_ms`.
    pub fn record(
        &self,
        id: NodeId,
        key: Option<String>,
        raft_addr: &str,
        joined_ms: u64,
    ) -> NodeRecord {
        NodeRecord {
            id,
            name: self.name.clone(),
            role: self.role,
            raft_addr: raft_addr.to_string(),
            gossip_addr: self.gossip_addr.clone(),
            api_addr: self.api_addr.clone(),
            labels: self.labels.clone(),
            status: NodeStatus::Active,
            joined_ms,
            key,
        }
    }
}

/// A node asking to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's node id.
    pub node_id: NodeId,
    /// Its QUIC address.
    pub raft_addr: String,
    /// What it says about itself (its role is the one it asks for).
    pub node: NodeInfo,
    /// A certificate signing request (PEM) for its key; the key stays with the joiner.
    pub csr_pem: String,
    /// The join token it proves it holds, if it has one (the secret is not sent).
    pub token: Option<TokenProof>,
    /// The cluster name the joiner expects.
    pub cluster_name: String,
    /// Proof that the joiner holds the cluster's join key (see [`crate::key_proof`]), if it
    /// has one: it binds all of this request and the CA the joiner verified.
    #[serde(default)]
    pub key_proof: Option<String>,
    /// The fingerprint of the CA the joiner's handshake verified (the member that answers
    /// refuses a request made to another CA: a relay by a node in the middle).
    #[serde(default)]
    pub ca_fingerprint: String,
    /// A fresh random value, hex: the admitting leader refuses one it has seen, and binds its
    /// own proof to it.
    #[serde(default)]
    pub nonce: String,
    /// When the joiner made the request (its clock, ms): a request far from the leader's
    /// clock is refused, so that a nonce need be remembered only for a while.
    #[serde(default)]
    pub at_ms: u64,
    /// The public half of an X25519 key the joiner made for this request, hex: the secrets
    /// of the answer are sealed to it (see `node/seal.rs`), so that only the joiner reads them.
    #[serde(default)]
    pub seal_to: String,
}

/// The proof of a join token: its public id and the joiner's signature over its request with
/// the key the token's secret stands for (see [`crate::token_proof`]); never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenProof {
    /// Token id.
    pub id: String,
    /// The signature, hex.
    pub proof: String,
}

/// What a joiner receives.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinReply {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The joiner's certificate, PEM.
    pub cert_pem: String,
    /// What only the joiner may read, sealed to the key its request named (hex): the CA's
    /// private key for a voter (any voter may lead, and the leader signs) and the node
    /// layer's secrets for its role (the gossip key).
    pub sealed: String,
    /// The leader that admitted the node.
    pub leader_id: NodeId,
    /// Proof that the admitting leader holds the cluster key, when the joiner proved it does.
    #[serde(default)]
    pub key_proof: Option<String>,
}

impl std::fmt::Debug for JoinReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinReply")
            .field("cluster_id", &self.cluster_id)
            .field("cluster_name", &self.cluster_name)
            .field("leader_id", &self.leader_id)
            .finish_non_exhaustive()
    }
}

/// Why a consensus operation failed. It travels between nodes, so a forwarded request fails
/// with the leader's own words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ConsensusError {
    /// No leader is known.
    #[error(
        "no leader is known: an election may be under way, or this node is cut off from the voters; retry in a moment"
    )]
    NoLeader,
    /// The leader cannot reach a majority of voters.
    #[error(
        "no quorum: the leader cannot reach a majority of the voters (this side of a partition is the minority); nothing was written"
    )]
    NoQuorum,
    /// The leader could not be reached.
    #[error("cannot reach the leader {leader}: {message}")]
    LeaderUnreachable {
        /// Leader id.
        leader: NodeId,
        /// What failed.
        message: String,
    },
    /// The caller's identity was removed from the cluster (a request over a connection from
    /// before the removal; the handshake refuses the identity from then on).
    #[error("this node's identity was removed from the cluster")]
    Removed,
    /// The caller may not make this request (the authority rules refused it).
    #[error("forbidden by rule {rule}: {message}")]
    Forbidden {
        /// The rule's name.
        rule: String,
        /// What the rule means for this request.
        message: String,
    },
    /// The request was not confirmed in time.
    #[error(
        "not confirmed within {ms} ms: the leader lost its majority or is overloaded; the change may still be applied"
    )]
    Timeout {
        /// The deadline.
        ms: u64,
    },
    /// A membership change was refused.
    #[error("{message}")]
    Membership {
        /// What is wrong.
        message: String,
    },
    /// A join was refused.
    #[error("join refused: {message}")]
    JoinRefused {
        /// Why.
        message: String,
    },
    /// This node is not a member of a cluster.
    #[error("this node is not a member of a cluster yet")]
    NotMember,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Something failed inside this node.
    #[error("internal error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

impl ConsensusError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> ConsensusError {
        ConsensusError::Internal {
            message: e.to_string(),
        }
    }

    pub(crate) fn membership(e: impl std::fmt::Display) -> ConsensusError {
        ConsensusError::Membership {
            message: e.to_string(),
        }
    }
}
