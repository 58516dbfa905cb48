//! What this node sees: `/v1/members` (the gossip view) and `/v1/status` (the Raft group and
//! the registry, with each member's liveness by gossip).
//!
//! Reads only; it turns the layers' types into the [`wire`](super::wire) rows.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use quorate_consensus::Consensus;
use quorate_gossip::{Gossip, Member};

use super::state::{ApiState, not_member};
use super::wire::{MemberRow, StatusMember, StatusView};
use crate::NodeId;

impl From<&Member> for MemberRow {
    fn from(m: &Member) -> Self {
        MemberRow {
            id: m.id,
            name: m.meta.name.clone(),
            role: m.meta.role,
            addr: m.addr,
            status: m.status.to_string(),
            version: m.meta.version.clone(),
            labels: m.meta.labels.clone(),
            generation: m.generation,
            quic_addr: m.meta.quic_addr,
            api_addr: m.meta.api_addr,
            state: m.meta.cluster_state.clone(),
        }
    }
}

/// `GET /v1/members`: the gossip view, by name and id.
pub(super) async fn members(State(s): State<ApiState>) -> Json<Vec<MemberRow>> {
    let mut rows: Vec<MemberRow> = s.gossip.members().iter().map(MemberRow::from).collect();
    rows.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Json(rows)
}

/// `GET /v1/status`: the Raft group and the registry, or 503 before this node is a member.
pub(super) async fn status(State(s): State<ApiState>) -> Response {
    match s.consensus.get() {
        Some(node) => Json(status_view(node, &s.gossip)).into_response(),
        None => not_member(),
    }
}

fn status_view(node: &Consensus, gossip: &Gossip) -> StatusView {
    let s = node.status();
    let liveness: BTreeMap<NodeId, String> = gossip
        .members()
        .iter()
        .map(|m| (m.id, m.status.to_string()))
        .collect();
    StatusView {
        cluster_id: s.cluster_id,
        cluster_name: s.cluster_name,
        node_id: s.node_id,
        state: s.state,
        leader_id: s.leader_id,
        term: s.term,
        commit_index: s.commit_index,
        voter_target: s.voter_target,
        open: s.open,
        members: s
            .members
            .into_iter()
            .map(|member| StatusMember {
                liveness: liveness
                    .get(&member.id)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
                member,
            })
            .collect(),
    }
}
