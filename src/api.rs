//! The agent's HTTP API (JSON), on `http_addr` (loopback by default).
//!
//! - `GET /health/live`: the process is up. `GET /health/ready`: a member of a cluster with a
//!   known leader (200), else 503; both answer JSON.
//! - `GET /v1/members`: the gossip view.
//! - `GET /v1/status`: the Raft group and the registry as this node sees them.
//! - `POST /v1/labels`: set or remove this node's labels (a Raft write).
//! - `POST /v1/step-down`: the leader hands leadership to another voter.
//! - `POST /v1/nodes/{id}/promote`, `.../demote`, `.../remove`: membership changes.
//! - `GET /v1/gossip/keys`, `POST /v1/gossip/keys`: the gossip keyring (install, use, remove).
//! - `GET /v1/metrics`: gossip and discovery counters and member gauges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quorate_discovery::Stats;
use quorate_gossip::{Gossip, Key, Member, MemberStatus};
use serde::{Deserialize, Serialize};

use crate::DataDir;
use crate::agent::ConsensusCell;
use quorate_consensus::{AdminOp, Consensus, ConsensusError, Request};

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
    /// The consensus node, once this node is a member.
    pub consensus: ConsensusCell,
    /// The admin credential every mutating request must carry (`Authorization: Bearer`).
    pub admin_token: Arc<String>,
    /// Told when this node has left the cluster (the agent then stops).
    pub leave: Arc<tokio::sync::Notify>,
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

/// The router: reads are open; every mutating request (and the token list) needs the admin
/// credential, else 401 and nothing changes.
pub fn router(state: ApiState) -> Router {
    let admin = Router::new()
        .route("/v1/gossip/keys", post(change_keys))
        .route("/v1/labels", post(labels))
        .route("/v1/step-down", post(step_down))
        .route("/v1/leave", post(leave))
        .route("/v1/nodes/{id}/{op}", post(node_op))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/v1/members", get(members))
        .route("/v1/status", get(status))
        .route("/v1/gossip/keys", get(keys))
        .route("/v1/metrics", get(metrics))
        .merge(admin)
        .with_state(state)
}

async fn require_admin(
    State(s): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if quorate_consensus::constant_time_eq(t, &s.admin_token) => {
            next.run(request).await
        }
        other => {
            tracing::warn!(
                path = %request.uri().path(),
                credential = if other.is_some() { "wrong" } else { "missing" },
                "admin request refused"
            );
            error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{} admin credential: run the command on the agent's machine as its user (the CLI reads {} in the data dir), or give --admin-token / QUORATE_ADMIN_TOKEN",
                    if other.is_some() { "wrong" } else { "missing" },
                    crate::ADMIN_TOKEN_FILE
                ),
            )
        }
    }
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
        "consensus": s.consensus.get().map(|n| n.counters()),
    }))
}

/// One member in `quorate status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusMember {
    /// Node id.
    pub id: String,
    /// Name, from the registry.
    pub name: Option<String>,
    /// `voter` or `storage`: the role it was admitted with.
    pub role: Option<String>,
    /// `voter` or `learner` (or `none`: recorded but not in the Raft group).
    pub suffrage: String,
    /// QUIC address.
    pub raft_addr: String,
    /// Highest log index replicated to it (known on the leader only).
    pub matched_index: Option<u64>,
    /// `active` or `leaving`, from the registry.
    pub status: Option<String>,
    /// `alive`, `failed` or `left` as gossip reports it here; `unknown` when gossip has not
    /// heard of it.
    pub liveness: String,
    /// Labels, from the registry.
    pub labels: BTreeMap<String, String>,
}

/// `quorate status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// This node's id.
    pub node_id: String,
    /// `leader`, `follower`, `learner` or `candidate`.
    pub state: String,
    /// The leader this node knows.
    pub leader_id: Option<String>,
    /// Current term.
    pub term: u64,
    /// Highest log index committed and applied on this node.
    pub commit_index: Option<u64>,
    /// Target number of voters.
    pub voter_target: u8,
    /// Whether nodes may join without a token.
    pub open: bool,
    /// Members.
    pub members: Vec<StatusMember>,
}

fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

fn status_view(node: &Consensus, gossip: &Gossip) -> StatusView {
    let s = node.status();
    let liveness: BTreeMap<String, String> = gossip
        .members()
        .iter()
        .map(|m| (m.id.clone(), m.status.to_string()))
        .collect();
    StatusView {
        cluster_id: s.cluster_id,
        cluster_name: s.cluster_name,
        node_id: hex_id(s.node_id),
        state: s.state,
        leader_id: s.leader_id.map(hex_id),
        term: s.term,
        commit_index: s.commit_index,
        voter_target: s.voter_target,
        open: s.open,
        members: s
            .members
            .into_iter()
            .map(|m| StatusMember {
                id: hex_id(m.id),
                liveness: liveness
                    .get(&hex_id(m.id))
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
                name: m.name,
                role: m.role.map(|r| match r {
                    quorate_consensus::Role::Voter => "voter".to_string(),
                    quorate_consensus::Role::Storage => "storage".to_string(),
                }),
                suffrage: m.suffrage,
                raft_addr: m.raft_addr,
                matched_index: m.matched_index,
                status: m.status.map(|st| match st {
                    quorate_consensus::NodeStatus::Active => "active".to_string(),
                    quorate_consensus::NodeStatus::Leaving => "leaving".to_string(),
                }),
                labels: m.labels,
            })
            .collect(),
    }
}

fn not_member() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node is not a member of a cluster yet",
    )
}

fn consensus_error(e: ConsensusError) -> Response {
    let status = match &e {
        ConsensusError::Membership { .. } | ConsensusError::JoinRefused { .. } => {
            StatusCode::CONFLICT
        }
        ConsensusError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

async fn ready(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reason": "not a member of a cluster yet", "node_id": s.node_id})),
        )
            .into_response();
    };
    // Polled by load balancers: the leader from the metrics watch, not a whole status.
    let leader = node.raft().metrics().borrow().current_leader;
    match leader {
        Some(l) => Json(serde_json::json!({
            "status": "ready", "node_id": s.node_id, "cluster_id": node.cluster().cluster_id, "leader_id": hex_id(l),
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reason": "no leader is known", "node_id": s.node_id})),
        )
            .into_response(),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    match s.consensus.get() {
        Some(node) => Json(status_view(node, &s.gossip)).into_response(),
        None => not_member(),
    }
}

/// A change of this node's labels.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelChange {
    /// Labels to set.
    pub set: BTreeMap<String, String>,
    /// Labels to remove.
    pub remove: Vec<String>,
}

async fn labels(State(s): State<ApiState>, Json(change): Json<LabelChange>) -> Response {
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

async fn admin(s: &ApiState, op: AdminOp) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    match node.admin(op).await {
        Ok(message) => Json(serde_json::json!({ "message": message })).into_response(),
        Err(e) => consensus_error(e),
    }
}

async fn step_down(State(s): State<ApiState>) -> Response {
    admin(&s, AdminOp::StepDown { to: None }).await
}

async fn node_op(State(s): State<ApiState>, Path((id, op)): Path<(String, String)>) -> Response {
    let node = match id.parse::<crate::NodeId>() {
        Ok(n) => n.get(),
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

async fn leave(State(s): State<ApiState>) -> Response {
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

/// `POST /v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `voter` or `storage`.
    pub role: String,
    /// How long it stays valid, e.g. `24h`.
    pub ttl: String,
    /// How many joins it allows (none: unlimited until expiry).
    pub uses: Option<u32>,
}

/// A token as `quorate token list` and `token create --json` show it (never its secret,
/// except `token` right after creation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenView {
    /// Token id.
    pub id: String,
    /// The role it grants.
    pub role: String,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
    /// Joins allowed (none: unlimited).
    pub max_uses: Option<u32>,
    /// Joins so far.
    pub uses: u32,
    /// Revoked by an operator.
    pub revoked: bool,
    /// `valid`, `expired`, `revoked` or `used up` (by this node's clock).
    pub state: String,
    /// The token itself: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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

async fn create_token(State(s): State<ApiState>, Json(req): Json<TokenRequest>) -> Response {
    use crate::token::{JoinToken, TokenRole};
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
    let (role, token_role) = match req.role.as_str() {
        "voter" => (quorate_consensus::Role::Voter, TokenRole::Voter),
        "storage" => (quorate_consensus::Role::Storage, TokenRole::Storage),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("role {other:?}: `voter` or `storage`"),
            );
        }
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
    let Ok(ca) =
        <[u8; 32]>::try_from(hex::decode(&node.cluster().ca_fingerprint).unwrap_or_default())
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this node's CA fingerprint is damaged",
        );
    };
    let now = now_ms();
    let registry = node.local_registry();
    let mut addrs: Vec<std::net::SocketAddr> = registry
        .nodes
        .values()
        .filter(|n| n.role == quorate_consensus::Role::Voter)
        .filter_map(|n| n.raft_addr.parse().ok())
        .collect();
    addrs.truncate(crate::token::MAX_ADDRS);
    let token = JoinToken {
        ca_fingerprint: ca,
        id: rand::random::<u64>() | 1,
        secret: rand::random(),
        role: token_role,
        expires_ms: now + ttl.as_millis() as u64,
        addrs,
    };
    let record = quorate_consensus::TokenRecord {
        id: token.id_hex(),
        secret_hash: quorate_consensus::secret_hash(&token.secret_hex()),
        role,
        expires_ms: token.expires_ms,
        max_uses: req.uses,
        uses: 0,
        revoked: false,
        created_ms: now,
    };
    let view = token_view(&record, now);
    match node.write(Request::CreateToken { token: record }).await {
        Ok(w) => match w.outcome {
            Ok(()) => {
                tracing::info!(token = %token.id_hex(), role = %token_role, expires_ms = token.expires_ms, uses = ?req.uses, "join token created");
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

async fn list_tokens(State(s): State<ApiState>) -> Response {
    let Some(node) = s.consensus.get() else {
        return not_member();
    };
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

async fn revoke_token(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
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
