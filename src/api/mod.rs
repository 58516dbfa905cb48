//! The agent's HTTP API (JSON), on `http_addr` (loopback by default).
//!
//! - `GET /health/live`: the process is up. `GET /health/ready`: a member of a cluster with a
//!   known leader (200), else 503; both answer JSON.
//! - `GET /v1/members`: the gossip view.
//! - `GET /v1/status`: the Raft group and the registry as this node sees them.
//! - `POST /v1/labels`: set or remove this node's labels (a Raft write).
//! - `POST /v1/step-down`: the leader hands leadership to another voter.
//! - `POST /v1/nodes/{id}/promote`, `.../demote`, `.../remove`: membership changes.
//! - `POST /v1/leave`: this node deregisters, then the agent stops.
//! - `GET /v1/tokens`, `POST /v1/tokens`, `POST /v1/tokens/{id}/revoke`: join tokens.
//! - `GET /v1/gossip/keys`, `POST /v1/gossip/keys`: the gossip keyring (install, use, remove).
//! - `GET /v1/metrics`: gossip and discovery counters and member gauges.
//!
//! This module holds the router, the state the handlers share and the error answers; the
//! admin credential check is in `auth`, the handlers are grouped by concern (`health`,
//! `members`, `admin`, `tokens`, `keyring`), and what crosses the wire is in [`wire`], which
//! clients use without this server. It does not start the layers or decide anything itself:
//! it reads the running layers and hands changes to consensus.

use std::sync::{Arc, OnceLock};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quorate_consensus::{Consensus, ConsensusError};
use quorate_discovery::Stats;
use quorate_gossip::Gossip;

use crate::DataDir;

mod admin;
mod auth;
mod health;
mod keyring;
mod members;
mod tokens;
pub mod wire;

pub use wire::{
    KeyringOp, KeyringView, LabelChange, MemberRow, StatusMember, StatusView, TokenRequest,
    TokenView,
};

/// Where the running consensus node is, once there is one: set by the agent when this node
/// becomes a member, read by the handlers.
pub type ConsensusCell = Arc<OnceLock<Arc<Consensus>>>;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// This node's id.
    pub node_id: crate::NodeId,
    /// The gossip member.
    pub gossip: Arc<Gossip>,
    /// The data dir, where the keyring is kept.
    pub data_dir: Arc<DataDir>,
    /// Discovery counters, when discovery runs.
    pub discovery: Option<Arc<Stats>>,
    /// The consensus node, once this node is a member.
    pub consensus: ConsensusCell,
    /// The admin credential every mutating request must carry (`Authorization: Bearer`).
    pub admin_token: Arc<String>,
    /// Told when this node has left the cluster (the agent then stops).
    pub leave: Arc<tokio::sync::Notify>,
}

/// The router: reads are open; every mutating request (and the token list) needs the admin
/// credential, else 401 and nothing changes.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/v1/gossip/keys", post(keyring::change_keys))
        .route("/v1/labels", post(admin::labels))
        .route("/v1/step-down", post(admin::step_down))
        .route("/v1/leave", post(admin::leave))
        .route("/v1/nodes/{id}/{op}", post(admin::node_op))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}/revoke", post(tokens::revoke))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/v1/members", get(members::members))
        .route("/v1/status", get(members::status))
        .route("/v1/gossip/keys", get(keyring::keys))
        .route("/v1/metrics", get(health::metrics))
        .merge(admin)
        .with_state(state)
}

/// An error answer: `{"error": message}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The answer of a request that needs a member, on a node that is not one yet.
fn not_member() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node is not a member of a cluster yet",
    )
}

/// A consensus error as an answer: conflicts 409, internal errors 500, else 503.
fn consensus_error(e: ConsensusError) -> Response {
    let status = match &e {
        ConsensusError::Membership { .. } | ConsensusError::JoinRefused { .. } => {
            StatusCode::CONFLICT
        }
        ConsensusError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}
