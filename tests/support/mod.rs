//! Test support shared by the integration test binaries: the LAN lab, agents in it, HTTP to
//! them, waiting helpers, the nemesis with its checker, and a hostile member.
//!
//! Each area's `main.rs` includes this with `#[path = "../support/mod.rs"] mod support;`, so
//! every binary compiles only what it uses.
#![allow(dead_code, unreachable_pub)]

pub mod agents;
pub mod flood;
pub mod http;
pub mod lab;
pub mod nemesis;
pub mod rogue;
pub mod wait;
