//! quorate-consensus: the management plane's Raft group (openraft) and the replicated
//! membership registry it decides.
//!
//! Voters decide; storage-plane nodes replicate the registry as learners and never vote. It
//! knows nothing of mDNS or gossip, and never prints, exits or reads the environment.
//!
//! - [`Registry`]: the state machine, pure and deterministic; requests carry any time they
//!   depend on.
//! - [`LogStore`], [`StateMachineStore`]: durable storage on redb (log, vote, committed index,
//!   snapshots); acknowledged appends are on disk.
//! - [`events`]: typed membership events derived from the applied log (the same on every
//!   node), the failure detector's local ones, and the [`EventHub`] that replays and streams
//!   them.
//! - [`Consensus`]: a running member: bootstrap, join, resume; writes, reads and membership
//!   changes routed to the leader; the autopilot; leadership hand-over.
//! - QUIC with TLS 1.3 ([`quic`], [`tls`]): the cluster CA, node certificates naming node ids,
//!   mutual authentication between members, and the join handshake for newcomers.
//! - [`Recovery`]: a stopped survivor made the only voter when the quorum is lost for good.
//! - [`raft_config`]: LAN timings. [`mem_network::MemRouter`]: the in-memory twin of the
//!   network, for in-process clusters.

// openraft's error types (RPCError, StorageError, ConfigError) are large by design, and its
// traits return them by value; boxing them at our edges would only add conversions.
#![allow(clippy::result_large_err)]

pub mod authority;
pub mod autopilot;
pub mod events;
mod files;
pub mod mem_network;
mod network;
mod node;
mod proto;
pub mod quic;
mod recover;
pub mod registry;
pub mod rotation;
mod store;
pub mod tls;

pub use events::{Compacted, Event, EventHub, EventIndex, EventKind, Subscription};
pub use files::{ClusterFile, Files, FilesError};
pub use network::{AnswerGuard, LEARNER_BEAT, MAX_TERM_AHEAD, QuietTargets, RaftNet, TERM_CEILING};
pub use node::{
    AdmissionConfig, Consensus, ConsensusConfig, Counts, JoinCredentials, JoinPolicy, MemberView,
    SecretsHandler, StartError, Status, TokenSecret, key_proof, same as constant_time_eq,
    secret_hash, token_proof, token_proof_key,
};
pub use proto::{
    AdminOp, ConsensusError, JoinReply, JoinRequest, NodeInfo, RegistryAt, TokenProof, Written,
};
pub use recover::{RecoverError, Recovery, RecoveryPlan};
pub use tls::Trust;

pub use registry::{
    ClusterInfo, NodeId, NodeRecord, NodeStatus, Outcome, Refusal, Registry, Request, RestorePlan,
    Role, Settings, TokenRecord,
};
pub use store::{LogStore, StateMachineData, StateMachineStore, open_db};

openraft::declare_raft_types!(
    /// The Raft types of quorate: registry requests in, outcomes out, u64 node ids, each node's
    /// QUIC address as its Raft node data.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = quorate_base::NodeId,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// Parses a QUIC request frame exactly as the server does (the fuzzing hook; not an API).
/// Returns the request written back as JSON, or the parser's error.
#[doc(hidden)]
pub fn decode_request(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let rpc = proto::Rpc::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_vec(&rpc).map_err(|e| e.to_string())
}

/// Raft timings for a LAN: heartbeats every 50 ms; a follower campaigns after 300 to 400 ms
/// without a leader (the leader lease of `election_timeout_max`, 200 ms, then a randomized
/// election timeout of 100 to 200 ms; `node::campaign` runs the timer, after a pre-vote); a
/// snapshot every 250 entries, sent in chunks of at most 1 MiB, each given 4 s to be sent and
/// installed; at most 64 entries to an AppendEntries.
///
/// openraft's default for a snapshot chunk is 200 ms: on a busy host (a bulk join of hundreds
/// of storage nodes, the snapshot listing every one) the send timed out again and again and the
/// leader sent it from the start each time, thousands of times in a run at 200 hosts.
///
/// The snapshot interval is what a new learner costs the leader: a learner further behind
/// than the log kept (100 entries behind the snapshot) gets the snapshot, the registry once
/// (O(N) for N nodes); one nearer gets the log, and a join writes about three entries,
/// membership changes among them, each listing every node. With a snapshot every 1000 entries
/// a storage plane of a few hundred nodes joining at once would have the leader read and send
/// the whole log, O(N²), to every learner. Batches of 64 entries each finish within the time
/// a learner's AppendEntries is given (`network::LEARNER_APPEND_TTL`) on a busy host.
pub fn raft_config(cluster_name: &str) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 100,
        election_timeout_max: 200,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(250),
        max_payload_entries: 64,
        max_in_snapshot_log_to_keep: 100,
        snapshot_max_chunk_size: 1024 * 1024,
        install_snapshot_timeout: 4000,
        ..Default::default()
    }
    .validate()
}
