//! The agent's HTTP API (JSON), on `http_addr` (loopback by default).
//!
//! - `GET /health/live`: the process is up.
//! - `GET /v1/members`: the gossip view.
//! - `GET /v1/gossip/keys`, `POST /v1/gossip/keys`: the gossip keyring (install, use, remove).
//! - `GET /v1/metrics`: gossip and discovery counters and member gauges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use quorate_discovery::Stats;
use quorate_gossip::{Gossip, Key, Member, MemberStatus};
use serde::{Deserialize, Serialize};

use crate::DataDir;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// This node's id.
    pub node_id: String,
    /// The gossip member.
    pub gossip: Arc<Gossip>,
    /// The data dir, where the keyring is kept.
    pub data_dir: Arc<DataDir>,
    /// Discovery counters, when discovery runs.
    pub discovery: Option<Arc<Stats>>,
}

/// One row of `quorate members`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberRow {
    /// Node id.
    pub id: String,
    /// Node name.
    pub name: String,
    /// `voter` or `storage`.
    pub role: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// `alive`, `failed` or `left`.
    pub status: String,
    /// Software version.
    pub version: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Incarnation.
    pub generation: u64,
    /// QUIC address, if published.
    pub quic_addr: Option<SocketAddr>,
    /// HTTP API address, if published.
    pub api_addr: Option<SocketAddr>,
    /// `forming` or `member`.
    pub state: String,
}

impl From<&Member> for MemberRow {
    fn from(m: &Member) -> Self {
        MemberRow {
            id: m.id.clone(),
            name: m.meta.name.clone(),
            role: m.meta.role.clone(),
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

/// The keyring as the API shows it: fingerprints only, never keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyringView {
    /// Whether gossip is sealed.
    pub sealed: bool,
    /// Fingerprint of the primary key.
    pub primary: Option<String>,
    /// Fingerprints of all installed keys, primary first.
    pub keys: Vec<String>,
}

/// A keyring change.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum KeyringOp {
    /// Install a key (base64) for opening datagrams.
    Install {
        /// The key, base64.
        key: String,
    },
    /// Make an installed key primary.
    Use {
        /// Its fingerprint.
        fingerprint: String,
    },
    /// Remove an installed, non-primary key.
    Remove {
        /// Its fingerprint.
        fingerprint: String,
    },
}

/// The router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/v1/members", get(members))
        .route("/v1/gossip/keys", get(keys).post(change_keys))
        .route("/v1/metrics", get(metrics))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn live(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive", "node_id": s.node_id }))
}

async fn members(State(s): State<ApiState>) -> Json<Vec<MemberRow>> {
    let mut rows: Vec<MemberRow> = s.gossip.members().iter().map(MemberRow::from).collect();
    rows.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Json(rows)
}

fn keyring_view(g: &Gossip) -> KeyringView {
    let keys = g.key_fingerprints();
    KeyringView {
        sealed: !keys.is_empty(),
        primary: keys.first().cloned(),
        keys,
    }
}

async fn keys(State(s): State<ApiState>) -> Json<KeyringView> {
    Json(keyring_view(&s.gossip))
}

async fn change_keys(State(s): State<ApiState>, Json(op): Json<KeyringOp>) -> Response {
    let done = match &op {
        KeyringOp::Install { key } => match Key::from_base64(key) {
            Ok(k) => s.gossip.install_key(k),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        KeyringOp::Use { fingerprint } => s.gossip.use_key(fingerprint),
        KeyringOp::Remove { fingerprint } => s.gossip.remove_key(fingerprint),
    };
    if let Err(e) = done {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let stored: Vec<String> = s.gossip.keys().iter().map(Key::to_base64).collect();
    if let Err(e) = s.data_dir.save_keyring(&stored) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the keyring changed but could not be saved: {e}"),
        );
    }
    tracing::info!(op = ?std::mem::discriminant(&op), primary = ?s.gossip.key_fingerprints().first(), "gossip keyring changed");
    Json(keyring_view(&s.gossip)).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let members = s.gossip.members();
    let count = |st: MemberStatus| members.iter().filter(|m| m.status == st).count();
    let mut gossip: BTreeMap<&str, u64> = s.gossip.metrics().snapshot();
    gossip.insert("members_alive", count(MemberStatus::Alive) as u64);
    gossip.insert("members_failed", count(MemberStatus::Failed) as u64);
    gossip.insert("members_left", count(MemberStatus::Left) as u64);
    Json(serde_json::json!({
        "gossip": gossip,
        "discovery": s.discovery.as_ref().map(|d| d.snapshot()),
    }))
}
