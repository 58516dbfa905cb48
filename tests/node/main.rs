//! The node in the LAN lab: zero-configuration formation, join tokens (and every way a token
//! can be bad), the autopilot's removal of failed nodes, graceful leave, the admin
//! credential, and resilience under the nemesis.

#[path = "../support/mod.rs"]
mod support;

mod authority;
mod formation;
mod hostile;
mod lifecycle;
mod resilience;
mod tokens;
