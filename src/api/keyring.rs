//! The gossip keyring over HTTP: `GET /v1/gossip/keys` (fingerprints only, never keys) and
//! `POST /v1/gossip/keys` (install, use, remove; behind the admin credential).
//!
//! A change is applied to the running gossip first, then saved in the data dir; the keyring
//! rules themselves (primary first, the primary cannot be removed) are gossip's.

use crate::keys;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate_gossip::{Gossip, Key};

use super::state::{ApiState, error};
use super::wire::{KeyringOp, KeyringView};

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
    let Ok(mut stored) = s.keys.lock() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the keyring is unavailable",
        );
    };
    let mut next = stored.clone();
    let done = match &op {
        KeyringOp::Install { key } => match Key::from_base64(key) {
            Ok(k) => {
                next.install(k.clone());
                s.gossip.install_key(keys::gossip_key(&k))
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        KeyringOp::Use { fingerprint } => s.gossip.use_key(fingerprint).map(|()| {
            next.make_primary(fingerprint);
        }),
        KeyringOp::Remove { fingerprint } => s.gossip.remove_key(fingerprint).map(|()| {
            next.remove(fingerprint);
        }),
    };
    if let Err(e) = done {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Err(e) = s.data_dir.save_keyring(&next) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the keyring changed but could not be saved: {e}"),
        );
    }
    *stored = next;
    drop(stored);
    tracing::info!(op = ?std::mem::discriminant(&op), primary = ?s.gossip.key_fingerprints().first(), "gossip keyring changed");
    Json(keyring_view(&s.gossip)).into_response()
}
