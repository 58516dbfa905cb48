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

pub mod registry;
mod store;

pub use registry::{
    ClusterInfo, NodeRecord, NodeStatus, Outcome, Refusal, Registry, Request, Role, Settings,
    TokenRecord,
};
pub use store::{LogStore, StateMachineData, StateMachineStore, open_db};

openraft::declare_raft_types!(
    /// The Raft types of quorate: registry requests in, outcomes out, u64 node ids, each node's
    /// QUIC address as its Raft node data.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);
