//! What this node sees: `/v1/members` (the gossip view) and `/v1/status` (the Raft group and
//! the registry, with each member's liveness by gossip).
//!
//! `/v1/status` is also a blocking query, after Consul's: `?index=N` waits until the registry
//! index (the log index of the last applied entry that changed the registry or the Raft
//! membership; a no-op does not move it) passes N, or until `wait` ran out (humantime, default
//! 5 min, at most 10 min: longer is cut to 10 min), and every answer carries the current
//! index in `X-Quorate-Index`. The wait is woken by the state machine, never by polling.
//!
//! Reads only; it turns the layers' types into the [`wire`](super::wire) rows.

use std::collections::BTreeMap;

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_consensus::Consensus;
use quorate_gossip::{Gossip, Member};

use super::state::{ApiState, error, not_member};
use super::wire::{INDEX_HEADER, MemberRow, Membership, StatusMember, StatusView};
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

/// How long a blocking query waits when `wait` is not given.
const WAIT_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// The longest a blocking query waits.
const WAIT_MAX: Duration = Duration::from_secs(10 * 60);

/// A blocking query's `index` and `wait`, from the query pairs; the error is the 400 text.
pub(super) fn blocking(pairs: &[(String, String)]) -> Result<Option<(u64, Duration)>, String> {
    let mut index = None;
    let mut wait = None;
    for (key, value) in pairs {
        match key.as_str() {
            "index" => {
                index = Some(value.parse::<u64>().map_err(|_| {
                    format!("index: {value:?} is not a registry index (a whole number)")
                })?)
            }
            "wait" => {
                wait = Some(humantime::parse_duration(value).map_err(|e| {
                    format!("wait: {value:?} is not a duration ({e}); say 30s or 5m")
                })?)
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; the parameters are index and wait"
                ));
            }
        }
    }
    Ok(index.map(|i| (i, wait.unwrap_or(WAIT_DEFAULT).min(WAIT_MAX))))
}

/// `GET /v1/status`: the Raft group and the registry, or 503 before this node is a member;
/// with `?index=N`, once the registry index passes N (or `wait` ran out).
pub(super) async fn status(
    State(s): State<ApiState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let wait = match blocking(&pairs) {
        Ok(w) => w,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let index = match wait {
        Some((after, wait)) => tokio::select! {
            i = s.events.registry_index_after(after, wait) => i,
            () = s.closed() => s.events.registry_index(),
        },
        None => s.events.registry_index(),
    };
    // The index is read before the view, so the view is at least as new as it says.
    let mut answer = match s.consensus.get() {
        Some(node) => Json(status_view(node, &s.gossip)).into_response(),
        None => not_member(),
    };
    answer
        .headers_mut()
        .insert(INDEX_HEADER, axum::http::HeaderValue::from(index));
    answer
}

/// The membership view an embedding application watches: the status without what moves on
/// every write (replication progress, commit index, term).
pub(crate) fn membership(node: &Consensus, gossip: &Gossip) -> Membership {
    let view = status_view(node, gossip);
    Membership {
        cluster_id: view.cluster_id,
        leader_id: view.leader_id,
        members: view
            .members
            .into_iter()
            .map(|mut m| {
                m.member.matched_index = None;
                m
            })
            .collect(),
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
        ca: node.cluster().ca_fingerprint,
        ca_next: node.ca_rotating_to(),
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::pairs;

    #[test]
    fn a_blocking_query_reads_index_and_wait_with_default_and_cap() {
        assert_eq!(blocking(&[]), Ok(None));
        assert_eq!(
            blocking(&pairs(&[("index", "7")])),
            Ok(Some((7, WAIT_DEFAULT)))
        );
        assert_eq!(
            blocking(&pairs(&[("index", "7"), ("wait", "30s")])),
            Ok(Some((7, Duration::from_secs(30))))
        );
        assert_eq!(
            blocking(&pairs(&[("index", "7"), ("wait", "2h")])),
            Ok(Some((7, WAIT_MAX)))
        );
        assert!(blocking(&pairs(&[("index", "x")])).is_err());
        assert!(blocking(&pairs(&[("index", "1"), ("wait", "soon")])).is_err());
        assert!(blocking(&pairs(&[("idx", "1")])).is_err());
    }
}
