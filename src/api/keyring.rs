//! The gossip keyring over HTTP: `GET /v1/gossip/keys` (fingerprints only, never keys),
//! `POST /v1/gossip/keys` (install, use, remove on this node) and `POST /v1/keyring/rotate`
//! (the cluster key on every member, from a voter), and `POST /v1/ca/rotate` (the cluster CA
//! on every member, from a voter), behind the admin credential.
//!
//! A change is applied to the running gossip first, then saved in the data dir; the keyring
//! rules themselves (primary first, the primary cannot be removed) are gossip's.

use crate::keyring::{self, KeyringError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_gossip::{Gossip, Key};

use super::state::{ApiState, consensus_error, error, not_member};
use super::wire::{KeyringOp, KeyringView, RotateRequest};

fn keyring_view(g: &Gossip) -> KeyringView {
    let keys = g.key_fingerprints();
    KeyringView {
        sealed: !keys.is_empty(),
        primary: keys.first().cloned(),
        keys,
    }
}

/// `GET /v1/gossip/keys`.
pub(super) async fn keys(State(s): State<ApiState>) -> Json<KeyringView> {
    Json(keyring_view(&s.gossip))
}

/// `POST /v1/gossip/keys`: change the keyring and save it. Keys are cluster keys (as
/// `quorate keygen` makes them) and are named by their gossip key's fingerprint; a storage
/// node keeps only the gossip key derived from one.
pub(super) async fn change_keys(State(s): State<ApiState>, Json(op): Json<KeyringOp>) -> Response {
    match keyring::apply(&s.keys, &s.gossip, &s.data_dir, &op) {
        Ok(()) => Json(keyring_view(&s.gossip)).into_response(),
        Err(e @ KeyringError::Refused(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /v1/keyring/rotate`: rotate the cluster key on every member from this voter-role
/// node (see [`crate::keyring`]); answers the report of each step, complete or not.
pub(super) async fn rotate(State(s): State<ApiState>, Json(req): Json<RotateRequest>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    let new = match Key::from_base64(&req.key) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let here = |op: &KeyringOp| keyring::apply(&s.keys, &s.gossip, &s.data_dir, op);
    match keyring::rotate(node, &s.keys, here, new).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ KeyringError::Refused(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `POST /v1/ca/rotate`: rotate the cluster CA on every member from this voter-role node
/// (see `quorate_consensus::Consensus::rotate_ca`); answers the report of each step, complete
/// or not.
pub(super) async fn rotate_ca(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    match node.rotate_ca().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => consensus_error(e),
    }
}
