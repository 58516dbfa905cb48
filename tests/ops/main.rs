//! The operator's surface in the LAN lab: backups and disaster recovery.

#[path = "../support/mod.rs"]
mod support;

mod backup;
