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
}

/// A client of one agent.
pub struct Client {
    api: String,
    agent: ureq::Agent,
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
        }
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
        let resp = self
            .agent
            .get(&self.url(path))
            .call()
            .map_err(|e| self.unreachable(e))?;
        Self::decode(resp)
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .agent
            .post(&self.url(path))
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        Self::decode(resp)
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
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(ClientError::Refused(format!("{status}: {message}")));
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
