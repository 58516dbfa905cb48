//! Health and metrics: `/health/live`, `/health/ready` (for load balancers and
//! orchestrators) and `/v1/metrics` (counters and member gauges).
//!
//! Cheap reads only: readiness takes the leader from the Raft metrics watch, not a whole
//! status. Nothing here changes state.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_gossip::MemberStatus;

use super::state::ApiState;

/// `GET /health/live`: the process is up.
pub(super) async fn live(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive", "node_id": s.node_id.to_string() }))
}

/// `GET /health/ready`: a member with a known leader (200), else 503.
pub(super) async fn ready(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reason": "not a member of a cluster yet", "node_id": s.node_id.to_string()})),
        )
            .into_response();
    };
    // Polled by load balancers: the leader from the metrics watch, not a whole status.
    let leader = node.raft().metrics().borrow().current_leader;
    match leader {
        Some(l) => Json(serde_json::json!({
            "status": "ready", "node_id": s.node_id.to_string(), "cluster_id": node.cluster().cluster_id, "leader_id": l.to_string(),
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reason": "no leader is known", "node_id": s.node_id.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /v1/metrics`: gossip, discovery and consensus counters, member gauges.
pub(super) async fn metrics(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let members = s.gossip.members();
    let count = |st: MemberStatus| members.iter().filter(|m| m.status == st).count();
    let mut gossip: BTreeMap<&str, u64> = s.gossip.metrics().snapshot();
    gossip.insert("members_alive", count(MemberStatus::Alive) as u64);
    gossip.insert("members_failed", count(MemberStatus::Failed) as u64);
    gossip.insert("members_left", count(MemberStatus::Left) as u64);
    Json(serde_json::json!({
        "gossip": gossip,
        "discovery": s.discovery.as_ref().map(|d| d.snapshot()),
        "consensus": s.consensus.get().map(|n| n.counters()),
        "handlers": s.handlers.snapshot(),
    }))
}
