//! Changes an operator asks of this node or the cluster: labels, step-down, leave, promote,
//! demote and remove. Behind the admin credential (see `auth`).
//!
//! Each handler only turns the request into a registry write or an [`AdminOp`] for consensus,
//! which routes it to the leader and decides; nothing is decided here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_consensus::{AdminOp, Request};

use super::state::{ApiState, consensus_error, error, not_member};
use super::wire::LabelChange;

/// `POST /v1/labels`: set and remove this node's labels, one Raft write each.
pub(super) async fn labels(State(s): State<ApiState>, Json(change): Json<LabelChange>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    let me = node.id();
    let writes = change
        .set
        .into_iter()
        .map(|(key, value)| Request::SetLabel {
            node: me,
            key,
            value,
        })
        .chain(
            change
                .remove
                .into_iter()
                .map(|key| Request::RemoveLabel { node: me, key }),
        );
    for req in writes {
        match node.write(req).await {
            Ok(w) => {
                if let Err(refusal) = w.outcome {
                    return error(StatusCode::BAD_REQUEST, refusal.to_string());
                }
            }
            Err(e) => return consensus_error(e),
        }
    }
    let labels = node
        .local_registry()
        .nodes
        .get(&me)
        .map(|r| r.labels.clone())
        .unwrap_or_default();
    Json(serde_json::json!({ "labels": labels })).into_response()
}

/// An admin operation, answered with its message. Removing a voter-role node adds what its
/// host keeps and what to do about it.
async fn admin(s: &ApiState, op: AdminOp) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    let held_keys = matches!(op, AdminOp::Remove { node: n }
        if node.recorded_role(n) == Some(quorate_consensus::Role::Voter));
    match node.admin(op).await {
        Ok(mut message) => {
            if held_keys {
                message.push_str(
                    "; it was a voter-role node: its host still holds the CA key and the cluster key. Rotate both on a voter (quorate keyring rotate, then quorate ca rotate) and wipe that host's data dir",
                );
            }
            Json(serde_json::json!({ "message": message })).into_response()
        }
        Err(e) => consensus_error(e),
    }
}

/// `POST /v1/step-down`: the leader hands leadership to another voter.
pub(super) async fn step_down(State(s): State<ApiState>) -> Response {
    admin(&s, AdminOp::StepDown { to: None }).await
}

/// `POST /v1/nodes/{id}/{op}`: promote, demote or remove a node.
pub(super) async fn node_op(
    State(s): State<ApiState>,
    Path((id, op)): Path<(String, String)>,
) -> Response {
    let node = match id.parse::<crate::NodeId>() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let op = match op.as_str() {
        "promote" => AdminOp::Promote { node },
        "demote" => AdminOp::Demote { node },
        "remove" => AdminOp::Remove { node },
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no operation {other:?}: promote, demote or remove"),
            );
        }
    };
    admin(&s, op).await
}

/// `POST /v1/leave`: this node deregisters, then the agent is told to stop.
pub(super) async fn leave(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    match node.admin(AdminOp::Leave { node: node.id() }).await {
        Ok(message) => {
            s.leave.notify_one();
            Json(serde_json::json!({ "message": format!("{message}; the agent stops now") }))
                .into_response()
        }
        Err(e) => consensus_error(e),
    }
}
