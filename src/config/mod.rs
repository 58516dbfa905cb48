//! The agent's configuration: one plain struct, its defaults and its rules.
//!
//! [`Config`] and its sections are plain serde structs with documented fields and `Default`;
//! [`Config::validate`] checks what depends on several keys at once, and a few accessors derive
//! values from keys (the decoded join token, the listen addresses) so that each is computed in
//! one place. Building a `Config` from the four layers (defaults, the config file, `QUORATE_*`
//! environment variables, command-line flags) is [`load`]'s job; the tests are in `tests.rs`.
//!
//! This module reads nothing by itself: the caller hands [`load`] the file path, the
//! environment variables and the flags ([`Sources`]), which keeps loading testable without
//! touching the process environment.
//!
//! `settings` holds the struct and its rules, `load` the layers; both are re-exported here.

mod load;
mod settings;
#[cfg(test)]
mod tests;

pub use load::{ConfigError, ENV_PREFIX, FlagValue, Origin, Sources, env_var, load};
pub use settings::*;
