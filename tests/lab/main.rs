//! The LAN lab itself: proof that the harness gives hosts that behave like machines on a LAN,
//! and that the agent behaves as a process in one of them.

#[path = "../support/mod.rs"]
mod support;

mod agent_process;
mod smoke;
