//! The operator's surface in the LAN lab: what a node shows to monitoring and operations
//! tools (the Prometheus metrics, checked by `promtool` and scraped by a real Prometheus).

#[path = "../support/mod.rs"]
mod support;

mod metrics;
