//! The agent's HTTP API (JSON), on `http_addr` (loopback by default).
//!
//! - `GET /health/live`: the process is up. `GET /health/ready`: a member of a cluster with a
//!   known leader (200), else 503; both answer JSON.
//! - `GET /v1/members`: the gossip view.
//! - `GET /v1/status`: the Raft group and the registry as this node sees them; a blocking
//!   query with `?index=N&wait=30s` (answers once the registry index passes N).
//! - `GET /v1/events`: membership events as Server-Sent Events, resumable by index.
//! - `POST /v1/labels`: set or remove this node's labels (a Raft write).
//! - `POST /v1/step-down`: the leader hands leadership to another voter.
//! - `POST /v1/nodes/{id}/promote`, `.../demote`, `.../remove`: membership changes.
//! - `POST /v1/leave`: this node deregisters, then the agent stops.
//! - `GET /v1/tokens`, `POST /v1/tokens`, `POST /v1/tokens/{id}/revoke`: join tokens.
//! - `GET /v1/gossip/keys`, `POST /v1/gossip/keys`: the gossip keyring (install, use, remove).
//! - `POST /v1/keyring/rotate`: the cluster key rotated on every member, from a voter.
//! - `POST /v1/ca/rotate`: the cluster CA rotated on every member, from a voter.
//! - `GET /v1/metrics`: gossip and discovery counters and member gauges.
//! - `GET /metrics`: the same and more for Prometheus (the OpenMetrics or Prometheus text
//!   format), see `metrics`.
//! - `GET /v1/snapshot`, `POST /v1/restore`: a backup of the registry, and its restore
//!   through Raft.
//!
//! This module holds the router; the state the handlers share and the error answers are in
//! `state`, the admin credential check is in `auth`, the handlers are grouped by concern
//! (`health`, `members`, `events`, `admin`, `tokens`, `keyring`, `backup`), and what crosses
//! the wire is in [`wire`], which clients use without this server. It does not start the layers or decide anything itself:
//! it reads the running layers and hands changes to consensus.

use axum::Router;
use axum::routing::{get, post};

mod admin;
mod auth;
mod backup;
mod events;
mod health;
mod keyring;
mod members;
mod metrics;
mod state;
mod tokens;
pub mod wire;

pub use state::{ApiState, ConsensusCell};
pub use wire::{
    KeyringOp, KeyringView, LabelChange, MemberRow, Membership, NodeRef, RestoreRequest,
    RestoreView, RotateRequest, StatusMember, StatusView, TokenRequest, TokenView,
};

pub(crate) use members::membership;

/// The router: reads are open; every mutating request (and the token list) needs the admin
/// credential, else 401 and nothing changes.
pub fn router(state: ApiState) -> Router {
    let prometheus = metrics::router(&state);
    let admin = Router::new()
        .route("/v1/gossip/keys", post(keyring::change_keys))
        .route("/v1/keyring/rotate", post(keyring::rotate))
        .route("/v1/ca/rotate", post(keyring::rotate_ca))
        .route("/v1/labels", post(admin::labels))
        .route("/v1/step-down", post(admin::step_down))
        .route("/v1/leave", post(admin::leave))
        .route("/v1/nodes/{id}/{op}", post(admin::node_op))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}/revoke", post(tokens::revoke))
        .route("/v1/snapshot", get(backup::snapshot))
        .route("/v1/restore", post(backup::restore))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/v1/members", get(members::members))
        .route("/v1/status", get(members::status))
        .route("/v1/events", get(events::events))
        .route("/v1/gossip/keys", get(keyring::keys))
        .route("/v1/metrics", get(health::metrics))
        .merge(admin)
        .with_state(state)
        .merge(prometheus)
}

#[cfg(test)]
pub(crate) mod tests {
    /// Query pairs as the router hands them to a handler.
    pub(crate) fn pairs(ps: &[(&str, &str)]) -> Vec<(String, String)> {
        ps.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}
