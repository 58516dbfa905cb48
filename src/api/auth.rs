//! The admin credential check: every mutating request (and the token list) must carry the
//! node's admin credential as `Authorization: Bearer`, compared in constant time.
//!
//! A refusal is logged (path, and whether the credential was missing or wrong) and answered
//! 401 with what to do; nothing else runs. It does not decide who is a member or what a member
//! may do: that is consensus's authority table.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::state::{ApiState, error};

/// Lets the request through when it carries the admin credential, else answers 401.
pub(super) async fn require_admin(
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
