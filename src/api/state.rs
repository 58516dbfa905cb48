//! What the API's handlers share: the running layers ([`ApiState`]) and the error answers
//! every handler gives in the same shape (`{"error": message}`).

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_consensus::{Consensus, ConsensusError};
use quorate_discovery::Stats;
use quorate_gossip::Gossip;

use crate::DataDir;

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
    /// This node's keyring (cluster keys on a voter, gossip keys on a storage node).
    pub keys: crate::keys::SharedKeys,
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
    /// What the event handlers did.
    pub handlers: Arc<crate::handlers::HandlerStats>,
    /// This node's membership events (there before it is a member).
    pub events: Arc<quorate_consensus::EventHub>,
    /// Becomes `true` when the API stops: long answers (event streams, blocking queries) end
    /// then, so that the server's graceful shutdown does not wait for them.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

impl ApiState {
    /// Completes when the API stops.
    pub(super) async fn closed(&self) {
        let mut closing = self.closing.clone();
        // A dropped sender means the server is gone as well.
        let _ = closing.wait_for(|c| *c).await;
    }
}

/// An error answer: `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The answer of a request that needs a member, on a node that is not one yet.
pub(super) fn not_member() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node is not a member of a cluster yet",
    )
}

/// A consensus error as an answer: a refusal by the authority rules 403 (naming the rule),
/// conflicts 409, internal errors 500, else 503.
pub(super) fn consensus_error(e: ConsensusError) -> Response {
    let status = match &e {
        ConsensusError::Membership { .. } | ConsensusError::JoinRefused { .. } => {
            StatusCode::CONFLICT
        }
        ConsensusError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        ConsensusError::Forbidden { .. } | ConsensusError::Removed => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}
