//! Consensus in the LAN lab: real agents form a Raft group over QUIC (one bootstraps, the
//! others join through `--peers`), elect one leader, replicate to learners that never vote,
//! survive kill -9 of the leader, refuse writes on the minority side of a partition and
//! converge after it heals, and keep their registry across restarts.

#[path = "../support/mod.rs"]
mod support;

mod groups;
mod util;
