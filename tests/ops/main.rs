//! The operator's and the application's surface in the LAN lab, one module per area: backups and
//! disaster recovery, embedding and event handlers,
//! the membership events, and the Prometheus metrics (checked by `promtool`, scraped by a real
//! Prometheus).

#[path = "../support/mod.rs"]
mod support;

mod backup;
mod embed;
mod events;
mod metrics;
