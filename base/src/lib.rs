//! quorate-base: the words every layer of quorate shares, and nothing else.
//!
//! - [`NodeId`]: a node's permanent identity, written as 16 lowercase hex digits everywhere
//!   (mDNS TXT `id`, gossip, Raft, the API, logs).
//! - [`Role`]: the plane a node belongs to: `voter` (management plane) or `storage`.
//! - [`now_ms`]: wall-clock milliseconds since the Unix epoch.
//! - [`durable`]: files written whole and synced, the one way any layer writes a file.
//!
//! A shared vocabulary is not a layer: this crate knows nothing of mDNS, gossip or Raft, holds
//! no logic beyond parsing and printing its types, and never prints, exits or reads the
//! environment.

pub mod durable;
mod node_id;
mod role;

pub use node_id::{NodeId, ParseNodeIdError, hex_id};
pub use role::{ParseRoleError, Role};

/// Milliseconds since the Unix epoch by this machine's clock (0 if the clock is before 1970).
/// Time that a replicated decision depends on is read once, by the leader, and carried in the
/// request: state machines never call this.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
