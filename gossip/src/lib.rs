//! quorate-gossip: liveness and metadata of every node, spread by gossip (chitchat).
//!
//! It reports facts (who is alive, what each node says about itself) and never adds or removes
//! a member: only the consensus layer decides membership. It knows nothing of mDNS or Raft, and
//! never prints, exits or reads the environment.
//!
//! - [`Gossip`]: runs chitchat; the membership view ([`Member`]) and its [`Change`] stream;
//!   runtime seeds; graceful leave; key rotation.
//! - [`NodeMeta`]: the keys a node publishes about itself.
//! - [`Keyring`]: sealing with XChaCha20-Poly1305 under 32-byte cluster keys, with a replay
//!   window; open mode when there is no key.
//! - [`View`]: observations in, changes out (pure).

mod keyring;
mod meta;
mod node;
mod transport;
mod view;

pub use keyring::{Key, KeyError, Keyring, Rejected, ReplayGuard};
pub use meta::{
    API_KEY, LABEL_PREFIX, LEAVING, NAME_KEY, NodeMeta, QUIC_KEY, RAFT_LEADER_KEY, RAFT_TERM_KEY,
    ROLE_KEY, STATE_KEY, STATUS_KEY, VERSION_KEY,
};
pub use node::{Gossip, GossipConfig};
pub use quorate_base::{NodeId, Role};
pub use transport::Metrics;
pub use view::{Change, Member, MemberStatus, Observed, View};

/// Why gossip failed.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The gossip socket or chitchat could not start.
    #[error("cannot start gossip: {0}")]
    Start(String),
    /// A keyring operation was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Keys cannot be installed in open mode.
    #[error(
        "gossip runs in open mode (no cluster key); restart every node with a cluster key to seal it"
    )]
    OpenMode,
    /// A lock was poisoned by a panic elsewhere.
    #[error("gossip keyring lock poisoned")]
    Poisoned,
}
