//! Gossip in the LAN lab: real agents converge, report failures and graceful leaves, survive
//! restarts, keep clusters with different keys apart, rotate keys without a split, and shrug
//! off junk sent to the gossip port.

#[path = "../support/mod.rs"]
mod support;

mod membership;
mod sealing;
mod util;
