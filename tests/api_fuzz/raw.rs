//! A raw HTTP/1.1 client for the fuzzer: any method, any request-target bytes, any header
//! bytes, Content-Length or chunked bodies, and a reader that hears a server that answers early
//! and closes. Also the percent-encoding helpers the request builders use.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Anything below 500.
    Any,
    /// A 4xx: the request is invalid and must not succeed.
    Fail,
    /// Exactly this status.
    Status(u16),
}

#[derive(Clone)]
pub(crate) struct Req {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
    chunked: bool,
    pub(crate) expect: Expect,
    note: String,
}

impl Req {
    /// `METHOD /api/v1/PATH`.
    pub(crate) fn new(method: &str, path: impl AsRef<[u8]>) -> Self {
        let mut target = b"/api/v1/".to_vec();
        target.extend_from_slice(path.as_ref());
        Self::raw_target(method.as_bytes(), target)
    }

    /// `METHOD TARGET` with the target exactly as given.
    pub(crate) fn raw_target(method: &[u8], target: impl Into<Vec<u8>>) -> Self {
        Self {
            method: method.to_vec(),
            target: target.into(),
            headers: Vec::new(),
            body: None,
            chunked: false,
            expect: Expect::Any,
            note: String::new(),
        }
    }

    /// The method and the path of the target (no query), as sent.
    pub(crate) fn route(&self) -> (String, String) {
        let target = String::from_utf8_lossy(&self.target);
        let path = target
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        (String::from_utf8_lossy(&self.method).into_owned(), path)
    }

    pub(crate) fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.as_bytes().to_vec(), value.as_ref().to_vec()));
        self
    }

    pub(crate) fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// A JSON body (`Content-Type: application/json`).
    pub(crate) fn json(self, body: impl Into<Vec<u8>>) -> Self {
        self.body_as(body, Some(b"application/json"))
    }

    /// A body with the given content type, or none.
    pub(crate) fn body_as(mut self, body: impl Into<Vec<u8>>, content_type: Option<&[u8]>) -> Self {
        if let Some(ct) = content_type {
            self = self.header("Content-Type", ct);
        }
        self.body = Some(body.into());
        self
    }

    pub(crate) fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub(crate) fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// The request, shortened, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let mut out = format!(
            "[{}] {} {}",
            self.note,
            short(&self.method, 40),
            short(&self.target, 200)
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("\n    {}: {}", short(k, 40), short(v, 120)));
        }
        if let Some(body) = &self.body {
            out.push_str(&format!(
                "\n    body ({} bytes{}): {}",
                body.len(),
                if self.chunked { ", chunked" } else { "" },
                short(body, 300)
            ));
        }
        out
    }
}

pub(crate) fn short(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.escape_debug().collect();
    if text.chars().count() > max {
        format!(
            "{}…({} bytes)",
            text.chars().take(max).collect::<String>(),
            bytes.len()
        )
    } else {
        text
    }
}

/// A response: status and body (de-chunked).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

/// Sends `req` on a fresh connection (`Connection: close`) and reads the whole answer. The
/// request is written from another thread, so a server that answers early (413) and closes is
/// still heard.
pub(crate) fn send(addr: &str, req: &Req) -> Result<Answer, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut payload = Vec::new();
    payload.extend_from_slice(&req.method);
    payload.push(b' ');
    payload.extend_from_slice(&req.target);
    payload.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    payload.extend_from_slice(addr.as_bytes());
    payload.extend_from_slice(b"\r\nConnection: close\r\n");
    for (k, v) in &req.headers {
        payload.extend_from_slice(k);
        payload.extend_from_slice(b": ");
        payload.extend_from_slice(v);
        payload.extend_from_slice(b"\r\n");
    }
    if let Some(body) = &req.body {
        if req.chunked {
            payload.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for chunk in body.chunks(64 * 1024) {
                payload.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                payload.extend_from_slice(chunk);
                payload.extend_from_slice(b"\r\n");
            }
            payload.extend_from_slice(b"0\r\n\r\n");
        } else {
            payload.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            payload.extend_from_slice(body);
        }
    } else {
        payload.extend_from_slice(b"\r\n");
    }
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let write = std::thread::spawn(move || {
        let _ = writer.write_all(&payload);
    });
    let mut raw = Vec::new();
    let mut reader = stream;
    let read = reader.read_to_end(&mut raw);
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = write.join();
    if raw.is_empty() {
        return Err(format!("no response ({read:?})"));
    }
    parse_answer(&raw).ok_or_else(|| format!("unparsable response: {}", short(&raw, 300)))
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let rest = raw.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = raw[..split].to_vec();
    let mut body = raw[split + 4..].to_vec();
    let chunked = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if chunked {
        body = keyport::client::dechunk(&body).unwrap_or(body);
    }
    Some(Answer { status, head, body })
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn pct(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Percent-decodes as the router does (bad escapes stay as they are).
pub(crate) fn pct_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
