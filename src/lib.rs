//! quorate: a membership service for clusters on a LAN.
//!
//! This crate is the node: it wires the layer crates (`quorate-discovery` for mDNS hints,
//! `quorate-gossip` for liveness facts, `quorate-consensus` for Raft decisions) into one agent,
//! and holds the configuration, the data dir and the HTTP API. The layer crates know nothing
//! of each other; only this crate connects them. It does not decide membership itself: only
//! Raft does.

pub mod agent;
pub mod api;
pub mod bootstrap;
pub mod client;
pub mod config;
mod data_dir;
pub mod discover;
pub mod handlers;
pub mod keyring;
pub mod keys;
pub mod logging;
pub mod peers;
pub mod recover;
pub mod snapshot;
pub mod token;

pub use agent::{Agent, AgentError};
pub use config::{Config, ConfigError, LogFormat, RaftSection, Role};
pub use data_dir::{ADMIN_TOKEN_FILE, DataDir, DataDirError};
pub use quorate_base::{NodeId, ParseNodeIdError, now_ms};
/// Membership events, as [`Agent::events`] hands them out.
pub use quorate_consensus::{Compacted, Event, EventHub, EventIndex, EventKind, Subscription};
