//! Join tokens over HTTP: `POST /v1/tokens` (create), `GET /v1/tokens` (list, never the
//! secrets) and `POST /v1/tokens/{id}/revoke`; all behind the admin credential.
//!
//! The handlers check the request, have [`token::mint`](crate::token::mint) make the token and
//! its record, and write through consensus, which decides (the leader stamps the time the
//! expiry is judged by). Minting itself is not here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_consensus::Request;

use super::state::{ApiState, consensus_error, error, not_member};
use super::wire::{TokenRequest, TokenView};
use crate::token::{Mint, Minted};
use quorate_base::{Role, now_ms};

/// A registry record as the API shows it, with its state by this node's clock at `now`.
fn token_view(t: &quorate_consensus::TokenRecord, now: u64) -> TokenView {
    let state = if t.revoked {
        "revoked"
    } else if now >= t.expires_ms {
        "expired"
    } else if t.max_uses.is_some_and(|m| t.uses >= m) {
        "used up"
    } else {
        "valid"
    };
    TokenView {
        id: t.id.clone(),
        role: match t.role {
            quorate_consensus::Role::Voter => "voter".into(),
            quorate_consensus::Role::Storage => "storage".into(),
        },
        expires_ms: t.expires_ms,
        max_uses: t.max_uses,
        uses: t.uses,
        revoked: t.revoked,
        state: state.into(),
        token: None,
    }
}

/// `POST /v1/tokens`: checks the request, mints a token and writes its record through Raft.
pub(super) async fn create(State(s): State<ApiState>, Json(req): Json<TokenRequest>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    let role = match req.role.parse::<Role>() {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let ttl = match humantime::parse_duration(&req.ttl) {
        Ok(t)
            if t >= std::time::Duration::from_secs(1)
                && t <= std::time::Duration::from_secs(366 * 86400) =>
        {
            t
        }
        Ok(_) => return error(StatusCode::BAD_REQUEST, "ttl: give 1s to 366d"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("ttl {:?}: {e}", req.ttl)),
    };
    if req.uses == Some(0) {
        return error(StatusCode::BAD_REQUEST, "uses: at least 1");
    }
    let voters: Vec<std::net::SocketAddr> = node
        .local_registry()
        .nodes
        .values()
        .filter(|n| n.role == quorate_consensus::Role::Voter)
        .filter_map(|n| n.raft_addr.parse().ok())
        .collect();
    let now = now_ms();
    let mint = Mint {
        ca_fingerprint: &node.cluster().ca_fingerprint,
        role,
        ttl,
        uses: req.uses,
        voters,
    };
    let Minted { token, record } = match crate::token::mint(mint, now, &mut rand::rng()) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let view = token_view(&record, now);
    match node.write(Request::CreateToken { token: record }).await {
        Ok(w) => match w.outcome {
            Ok(()) => {
                tracing::info!(token = %token.id_hex(), role = %role, expires_ms = token.expires_ms, uses = ?req.uses, "join token created");
                Json(TokenView {
                    token: Some(token.encode()),
                    ..view
                })
                .into_response()
            }
            Err(r) => error(StatusCode::CONFLICT, r.to_string()),
        },
        Err(e) => consensus_error(e),
    }
}

/// `GET /v1/tokens`: every token, latest expiry first.
pub(super) async fn list(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    if node.role() != Role::Voter {
        // The leader hands a storage node the registry without its tokens anyway.
        let rule = quorate_consensus::authority::Rule::TokensByVoters;
        return consensus_error(quorate_consensus::ConsensusError::Forbidden {
            rule: rule.name().to_string(),
            message: "storage-plane nodes cannot list join tokens; run it on a voter".into(),
        });
    }
    match node.read().await {
        Ok(r) => {
            let now = now_ms();
            let mut list: Vec<TokenView> = r.tokens.values().map(|t| token_view(t, now)).collect();
            list.sort_by_key(|t| std::cmp::Reverse(t.expires_ms));
            Json(list).into_response()
        }
        Err(e) => consensus_error(e),
    }
}

/// `POST /v1/tokens/{id}/revoke`.
pub(super) async fn revoke(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    match node.write(Request::RevokeToken { id: id.clone() }).await {
        Ok(w) => match w.outcome {
            Ok(()) => {
                tracing::info!(token = %id, "join token revoked");
                Json(serde_json::json!({ "message": format!("token {id} is revoked") }))
                    .into_response()
            }
            Err(r) => error(StatusCode::NOT_FOUND, r.to_string()),
        },
        Err(e) => consensus_error(e),
    }
}
