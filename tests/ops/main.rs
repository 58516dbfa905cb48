//! The operator's surface in the LAN lab: one module per area.

#[path = "../support/mod.rs"]
mod support;

mod events;
