//! A small client of the agent's HTTP API, for the CLI's commands.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Default address of the local agent's API.
pub const DEFAULT_API: &str = "http://127.0.0.1:7948";

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached.
    #[error(
        "cannot reach the agent at {api} ({message}); is `quorate agent` running there? (set --api or QUORATE_API)"
    )]
    Unreachable {
        /// The API base URL.
        api: String,
        /// What failed.
        message: String,
    },
    /// The agent refused the request.
    #[error("the agent refused: {0}")]
    Refused(String),
    /// The answer was not what was expected.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// What was asked for is no longer there (410 Gone: an event position compacted).
    #[error("{0}")]
    Gone(String),
}

/// A client of one agent.
pub struct Client {
    api: String,
    agent: ureq::Agent,
    admin: Option<String>,
}

impl Client {
    /// A client of the agent at `api` (e.g. `http://127.0.0.1:7948`).
    pub fn new(api: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build();
        Client {
            api: api.trim_end_matches('/').to_string(),
            agent: config.into(),
            admin: None,
        }
    }

    /// Sends this admin credential with every request.
    pub fn with_admin(mut self, token: Option<String>) -> Self {
        self.admin = token;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            api: self.api.clone(),
            message: e.to_string(),
        }
    }

    /// `GET path` as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.get(&self.url(path));
        if let Some(t) = &self.admin {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| self.unreachable(e))?;
        Self::decode(resp)
    }

    /// `GET path` whatever the answer's status: the status code and the body as JSON (`Null`
    /// when it is not JSON). For probes such as the health endpoints, whose refusals (503)
    /// are answers, not errors.
    pub fn probe(&self, path: &str) -> Result<(u16, serde_json::Value), ClientError> {
        let mut resp = self
            .agent
            .get(&self.url(path))
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let mut req = self.agent.post(&self.url(path));
        if let Some(t) = &self.admin {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req.send_json(body).map_err(|e| self.unreachable(e))?;
        Self::decode(resp)
    }

    /// `GET path` as a stream (Server-Sent Events): the body as it arrives, with `headers`.
    /// Only connecting is bounded in time; the caller decides how long a silent stream may
    /// last. A refusal is read as JSON (`{"error"}`), 410 as [`ClientError::Gone`].
    pub fn stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<ureq::BodyReader<'static>, ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(std::time::Duration::from_secs(5)))
            .timeout_recv_response(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .get(&self.url(path))
            .header("Accept", "text/event-stream");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(t) = &self.admin {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.into_body().into_reader());
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let message = error_message(text);
        Err(if status == ureq::http::StatusCode::GONE {
            ClientError::Gone(message)
        } else {
            ClientError::Refused(format!("{status}: {message}"))
        })
    }

    fn decode<T: DeserializeOwned>(
        mut resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            let message = error_message(text);
            return Err(ClientError::Refused(format!("{status}: {message}")));
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// The `error` of a JSON error answer, else the answer as it is.
fn error_message(text: String) -> String {
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text)
}

/// The admin credential for the CLI: given (`--admin-token`), else read from the agent's data
/// dir (given, else the default ones), when this user may read it.
pub fn find_admin_token(given: Option<&str>, data_dir: Option<&std::path::Path>) -> Option<String> {
    if let Some(t) = given {
        return Some(t.trim().to_string());
    }
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    if let Some(d) = data_dir {
        dirs.push(d.to_path_buf());
    }
    if let Some(d) = crate::DataDir::default_path() {
        dirs.push(d);
    }
    dirs.push(std::path::PathBuf::from("/var/lib/quorate"));
    dirs.iter().find_map(|d| {
        std::fs::read_to_string(d.join(crate::ADMIN_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    })
}
