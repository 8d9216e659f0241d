//! The CLI's HTTP client: where the API is and which token to send, from `KEYPORT_URL` /
//! `KEYPORT_TOKEN` or the credentials file `keyport login` writes; JSON in and out; API errors
//! kept typed so the CLI can map them to exit codes.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::Agent;
use zeroize::Zeroizing;

use crate::api::ErrorBody;
use crate::config::ClientConfig;
use crate::secrets::Violation;

/// Why a request did not get the answer it wanted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No server URL or token is configured.
    #[error(
        "not logged in: run `keyport login --url URL` or set KEYPORT_URL and KEYPORT_TOKEN \
         (the saved token is only sent to the saved URL)"
    )]
    NotConfigured,
    /// The credentials file is unreadable.
    #[error("credentials file {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No connection to the server.
    #[error("cannot reach keyport at {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// Each broken rule.
        validations: Vec<Violation>,
    },
    /// The server's answer was not what keyport expects.
    #[error("unexpected answer from keyport: {0}")]
    Protocol(String),
}

/// A connection to the keyport API.
pub struct Client {
    agent: Agent,
    base: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` with `token`.
    pub fn new(url: &str, token: &str) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            agent,
            base: url.trim_end_matches('/').to_string(),
            token: Zeroizing::new(token.to_string()),
        }
    }

    /// The configured client: `KEYPORT_URL`/`KEYPORT_TOKEN` override the credentials file.
    /// The saved token goes only to the saved URL: with `KEYPORT_URL` naming another server,
    /// `KEYPORT_TOKEN` must be set too.
    pub fn from_env() -> Result<Self, ClientError> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (mut url, mut token) = (env("KEYPORT_URL"), env("KEYPORT_TOKEN").map(Zeroizing::new));
        if url.is_none() || token.is_none() {
            let path = ClientConfig::path();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let file: ClientConfig =
                        toml::from_str(&text).map_err(|e| ClientError::Config {
                            path: path.display().to_string(),
                            message: e.message().to_string(),
                        })?;
                    let same_server = url
                        .as_deref()
                        .is_none_or(|u| u.trim_end_matches('/') == file.url.trim_end_matches('/'));
                    if token.is_none() && same_server {
                        token = Some(Zeroizing::new(file.token));
                    }
                    url = url.or(Some(file.url));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ClientError::Config {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    });
                }
            }
        }
        match (url, token) {
            (Some(url), Some(token)) => Ok(Self::new(&url, &token)),
            _ => Err(ClientError::NotConfigured),
        }
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self
            .agent
            .get(self.url_for(path))
            .header("Authorization", self.bearer().as_str())
            .call();
        self.decode(response)
    }

    /// `METHOD path` with a JSON body (`POST`, `PUT`, `PATCH`).
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url_for(path);
        let request = match method {
            "POST" => self.agent.post(url),
            "PUT" => self.agent.put(url),
            _ => self.agent.patch(url),
        };
        let response = request
            .header("Authorization", self.bearer().as_str())
            .send_json(body);
        self.decode(response)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        let response = self
            .agent
            .delete(self.url_for(path))
            .header("Authorization", self.bearer().as_str())
            .call();
        self.check(response).map(drop)
    }

    fn url_for(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    fn bearer(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}", self.token.as_str()))
    }

    fn check(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, ClientError> {
        let mut response = response.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let body: ErrorBody = serde_json::from_str(&text).unwrap_or(ErrorBody {
            message: format!("HTTP {status}"),
            validations: Vec::new(),
        });
        Err(ClientError::Api {
            status,
            message: body.message,
            validations: body.validations,
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let text = self.check(response)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// Percent-encodes one path segment (fingerprints hold `/` and `+`).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
