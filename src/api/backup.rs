//! Backups over HTTP, behind the admin credential: `GET /v1/snapshot` (the registry read
//! linearizably through the leader, sealed as a [`SnapshotFile`]) and `POST /v1/restore`
//! (a snapshot file restored through Raft).
//!
//! The handlers check the file and hand the work to consensus, which decides (the registry
//! refuses a snapshot of another cluster unless forced, and the authority rules refuse both on
//! a storage node); nothing is decided here, and no file is written here: the CLI writes it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_consensus::Registry;

use super::state::{ApiState, consensus_error, error, not_member};
use super::wire::{NodeRef, RestoreRequest, RestoreView};
use crate::snapshot::Payload;
use quorate_base::{NodeId, now_ms};

/// `GET /v1/snapshot`: the registry as the leader applied it, with its log position, sealed.
pub(super) async fn snapshot(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    match node.snapshot().await {
        Ok(at) => {
            let (id, name) = match &at.registry.cluster {
                Some(c) => (c.id.clone(), c.name.clone()),
                None => (
                    node.cluster().cluster_id.clone(),
                    node.cluster().cluster_name.clone(),
                ),
            };
            let payload = Payload::of(at, &id, &name, node.id(), now_ms());
            tracing::info!(
                index = payload.index,
                term = payload.term,
                nodes = payload.registry.nodes.len(),
                "snapshot taken"
            );
            Json(payload.seal()).into_response()
        }
        Err(e) => consensus_error(e),
    }
}

fn refs(ids: &std::collections::BTreeSet<NodeId>, a: &Registry, b: &Registry) -> Vec<NodeRef> {
    ids.iter()
        .map(|id| NodeRef {
            id: *id,
            name: a
                .nodes
                .get(id)
                .or_else(|| b.nodes.get(id))
                .map(|n| n.name.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// `POST /v1/restore`: checks the file and restores its registry through Raft.
pub(super) async fn restore(
    State(s): State<ApiState>,
    Json(req): Json<RestoreRequest>,
) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    let payload = match req.snapshot.payload() {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let running = &node.cluster().cluster_id;
    if payload.cluster_id != *running && !req.force {
        return error(
            StatusCode::CONFLICT,
            format!(
                "the snapshot is of cluster {} ({}), not this cluster ({running}); restore it here only with --force",
                payload.cluster_id, payload.cluster_name
            ),
        );
    }
    let snap = payload.registry.clone();
    let now = node.local_registry();
    match node.restore(payload.registry, req.force).await {
        Ok((plan, written)) => match written.outcome {
            Ok(()) => {
                tracing::info!(
                    index = written.index,
                    snapshot_index = payload.index,
                    forced = req.force,
                    "snapshot restored"
                );
                Json(RestoreView {
                    index: written.index,
                    snapshot_cluster_id: payload.cluster_id.clone(),
                    forced: payload.cluster_id != *running,
                    labels_restored: refs(&plan.labels_restored, &snap, &now),
                    nodes_skipped: refs(&plan.nodes_skipped, &snap, &now),
                    nodes_kept: refs(&plan.nodes_kept, &now, &snap),
                    tokens_restored: plan.tokens_restored,
                    tokens_dropped: plan.tokens_dropped.into_iter().collect(),
                    tokens_kept_revoked: plan.tokens_kept_revoked.into_iter().collect(),
                    removals_added: plan.removals_added,
                    removals_skipped: plan
                        .removals_skipped
                        .iter()
                        .map(|id| id.to_string())
                        .collect(),
                    voter_target: plan.settings.voter_target,
                    failed_grace_ms: plan.settings.failed_grace_ms,
                })
                .into_response()
            }
            Err(r) => error(StatusCode::CONFLICT, r.to_string()),
        },
        Err(e) => consensus_error(e),
    }
}
