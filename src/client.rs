//! The CLI's HTTP client: where the API is and which token to send, from `KEYPORT_URL` /
//! `KEYPORT_TOKEN` or the credentials file `keyport login` writes; inside a keyport session,
//! the session's private API socket instead, with no token at all. JSON in and out; API errors
//! kept typed so the CLI can map them to exit codes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
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
    transport: Transport,
}

enum Transport {
    /// The API's URL, with a bearer token.
    Http {
        agent: Agent,
        base: String,
        token: Zeroizing<String>,
    },
    /// A session's private socket: the daemon knows who is asking.
    Session(PathBuf),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

/// Longest answer read from a session socket.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// A client for `url` with `token`.
    pub fn new(url: &str, token: &str) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Self {
            transport: Transport::Http {
                agent,
                base: url.trim_end_matches('/').to_string(),
                token: Zeroizing::new(token.to_string()),
            },
        }
    }

    /// The configured client: `KEYPORT_URL`/`KEYPORT_TOKEN` first; then, inside a keyport
    /// session, the session's socket; then the credentials file. The saved token goes only to
    /// the saved URL: with `KEYPORT_URL` naming another server, `KEYPORT_TOKEN` must be set too.
    pub fn from_env() -> Result<Self, ClientError> {
        let env = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (mut url, mut token) = (env("KEYPORT_URL"), env("KEYPORT_TOKEN").map(Zeroizing::new));
        if url.is_none()
            && let Some(dir) = env(crate::ssh::sessiondir::SESSION_DIR_ENV)
        {
            // Never the credentials file inside a session: it may be someone else's token.
            let socket = PathBuf::from(dir).join(crate::ssh::sessiondir::API_SOCKET);
            return Ok(Self {
                transport: Transport::Session(socket),
            });
        }
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

    /// Where requests go: the server URL, or the session socket.
    pub fn url(&self) -> String {
        match &self.transport {
            Transport::Http { base, .. } => base.clone(),
            Transport::Session(socket) => format!("session socket {}", socket.display()),
        }
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let text = self.request("GET", path, None)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `METHOD path` with a JSON body (`POST`, `PUT`, `PATCH`).
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        // The body may hold a secret value: its bytes are wiped once sent.
        let body = Zeroizing::new(
            serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        let text = self.request(method, path, Some(&body))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.request("DELETE", path, None).map(drop)
    }

    /// One request; the body of a 2xx answer, or the API's error.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<String, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.url(),
            reason,
        };
        let (status, text) = match &self.transport {
            Transport::Http { agent, base, token } => {
                let url = format!("{base}/api/v1/{path}");
                let bearer = Zeroizing::new(format!("Bearer {}", token.as_str()));
                let request = ureq::http::Request::builder()
                    .method(method)
                    .uri(url)
                    .header("Authorization", bearer.as_str())
                    .header("Content-Type", "application/json")
                    .body(body.unwrap_or_default().to_vec())
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let mut response = agent.run(request).map_err(|e| unreachable(e.to_string()))?;
                let status = response.status().as_u16();
                let text = response
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                (status, text)
            }
            Transport::Session(socket) => {
                let mut stream =
                    UnixStream::connect(socket).map_err(|e| unreachable(e.to_string()))?;
                session_request(&mut stream, method, path, body)
                    .map_err(|e| unreachable(e.to_string()))?
            }
        };
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
}

/// HTTP/1.1 over a session socket, one request per connection: the status and the body.
fn session_request(
    stream: &mut UnixStream,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> std::io::Result<(u16, String)> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} /api/v1/{path} HTTP/1.1\r\nHost: keyport\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// The status and body of an HTTP/1.1 answer read to its end (`Connection: close`).
fn parse_response(raw: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::other(format!("malformed HTTP answer: {what}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers"))?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("status line"))?;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| bad("content-length"))?;
            body = body.get(..len).ok_or_else(|| bad("short body"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("chunked body"))?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes an HTTP/1.1 chunked body; `None` if it is not one.
pub fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
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

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn http_answers_parse() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (404, "{}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "[1,2]".into()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
