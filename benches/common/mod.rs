//! Measures that more than one benchmark takes, on real agents in the LAN lab: gossip failure
//! detection ([`detection`]), zero-configuration formation ([`formation`]) and Raft leader
//! failover ([`failover`]), each written once so that every bench that reports it measures it
//! the same way. What a bench reports, and how, stays in the bench.
//!
//! A bench includes this with `mod common;` beside the test support
//! (`#[path = "../tests/support/mod.rs"] mod support;`), which these modules use as
//! `crate::support`; each bench compiles only what it uses.
#![allow(dead_code, unreachable_pub)]

pub mod detection;
pub mod failover;
pub mod formation;

use std::time::{Duration, Instant};

/// The parts of a bench its command line names (`cargo bench --bench NAME -- PART...`): a
/// test of whether `part` is to run (every part when none is named).
pub fn parts() -> impl Fn(&str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    move |part: &str| named.is_empty() || named.iter().any(|a| a == part)
}

/// The number of trials: the environment variable `var` when it holds a number, else `default`.
pub fn trials(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(default)
}

/// After a voter was restarted at `restarted` and its group is whole again, lets it pass its
/// first second, in which a restarted voter does not campaign (it would disrupt a group that
/// has a leader): the next trial starts with all voters eligible, as a group that has been
/// whole for a while is.
pub fn settle_after_restart(restarted: Instant) {
    if let Some(left) = Duration::from_millis(1100).checked_sub(restarted.elapsed()) {
        std::thread::sleep(left); // settling the group, not timing the measurement
    }
}
