//! The operator's surface in the LAN lab, one module per area: the Prometheus metrics
//! (checked by `promtool`, scraped by a real Prometheus) and the membership events.

#[path = "../support/mod.rs"]
mod support;

mod events;
mod metrics;
