//! The HTTP API of the real daemon under hostile input: thousands of deterministic (seeded
//! PRNG) malformed and mutated requests — broken JSON, wrong types, unknown fields, nulls, huge
//! and chunked bodies, invalid UTF-8, wrong content types, odd path segments and request
//! targets, every method on every route, missing and garbage tokens, and another user's token.
//! Every one of them is invalid, so none may get a 5xx, succeed, change the database, echo a
//! secret value or a token, or panic the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use common::{API_ROUTES, Http, Sandbox, dump, me};
use keyport::secrets::SecretSpec;
use keyport::vault::Actor;
use keyport_keys::{KeyPair, KeyType, SecretBytes};
use serde_json::{Value, json};

/// Routes that answer without a token.
const PUBLIC: &[&str] = &["healthz", "metrics", "openapi.json"];

/// Methods tried on every route (standard, unusual, made up, wrong case).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
    "M-SEARCH", "FOO", "get",
];

/// A string sent inside value-like fields of invalid requests: no response may echo it.
const CANARY: &str = "fzcanary-9c41e7d2b0";

/// Stored secret values (the admin's and bob's): no response may contain them.
const ALPHA: &str = "fzval-alpha-3b8f1c0a55";
const BETA: &str = "fzval-beta-7e2d94c1aa";
const GAMMA: &str = "fzval-gamma-0c6a2f9e13";
const DELTA_MARK: &str = "fzval-delta-51d3b7";
const BOB_VALUE: &str = "fzval-bob-e44a01c9d7";

const MAX_BODY: usize = 2 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// A deterministic PRNG (xorshift64*).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: any method, any request-target bytes, any header bytes.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Anything below 500.
    Any,
    /// A 4xx: the request is invalid and must not succeed.
    Fail,
    /// Exactly this status.
    Status(u16),
}

#[derive(Clone)]
struct Req {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
    chunked: bool,
    expect: Expect,
    note: String,
}

impl Req {
    /// `METHOD /api/v1/PATH`.
    fn new(method: &str, path: impl AsRef<[u8]>) -> Self {
        let mut target = b"/api/v1/".to_vec();
        target.extend_from_slice(path.as_ref());
        Self::raw_target(method.as_bytes(), target)
    }

    /// `METHOD TARGET` with the target exactly as given.
    fn raw_target(method: &[u8], target: impl Into<Vec<u8>>) -> Self {
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

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.as_bytes().to_vec(), value.as_ref().to_vec()));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// A JSON body (`Content-Type: application/json`).
    fn json(self, body: impl Into<Vec<u8>>) -> Self {
        self.body_as(body, Some(b"application/json"))
    }

    /// A body with the given content type, or none.
    fn body_as(mut self, body: impl Into<Vec<u8>>, content_type: Option<&[u8]>) -> Self {
        if let Some(ct) = content_type {
            self = self.header("Content-Type", ct);
        }
        self.body = Some(body.into());
        self
    }

    fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// The request, shortened, for failure messages.
    fn describe(&self) -> String {
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

fn short(bytes: &[u8], max: usize) -> String {
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
struct Answer {
    status: u16,
    head: Vec<u8>,
    body: Vec<u8>,
}

/// Sends `req` on a fresh connection (`Connection: close`) and reads the whole answer. The
/// request is written from another thread, so a server that answers early (413) and closes is
/// still heard.
fn send(addr: &str, req: &Req) -> Result<Answer, String> {
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
        body = dechunk(&body).unwrap_or(body);
    }
    Some(Answer { status, head, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(text: &str) -> String {
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
fn pct_decode(bytes: &[u8]) -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------
// The state compared before and after.

/// The database dump without the parts authenticated requests may legitimately change: audit
/// events are dropped and `api_tokens.last_used_at` is masked (every other token column, and
/// the set of tokens, still count).
fn state(sb: &Sandbox) -> String {
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('api_tokens')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(conn);
    let last_used = columns
        .iter()
        .position(|c| c == "last_used_at")
        .expect("api_tokens.last_used_at");
    let mut out = String::new();
    for line in dump(&sb.db()).lines() {
        if line.starts_with("audit_events:") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("api_tokens: ") {
            let mut cells: Vec<&str> = rest.split(" | ").collect();
            assert_eq!(cells.len(), columns.len(), "token row: {line}");
            cells[last_used] = "<last_used_at>";
            out.push_str(&format!("api_tokens: {}\n", cells.join(" | ")));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn diff(before: &str, after: &str) -> String {
    let b: BTreeSet<&str> = before.lines().collect();
    let a: BTreeSet<&str> = after.lines().collect();
    let mut out = String::new();
    for line in b.difference(&a) {
        out.push_str(&format!("- {}\n", short(line.as_bytes(), 300)));
    }
    for line in a.difference(&b) {
        out.push_str(&format!("+ {}\n", short(line.as_bytes(), 300)));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The world the fuzzing runs against.

struct World {
    /// The bootstrap admin's token and name.
    admin: String,
    admin_name: String,
    /// A second, non-admin user's token.
    bob: String,
    /// The admin's registered login key (line and percent-encoded fingerprint).
    login_line: String,
    login_fp_enc: String,
    /// A valid login key nobody has registered.
    fresh_line: String,
    /// The bootstrap token's name.
    boot_token_name: String,
}

/// How a body field may be broken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    StrList,
    Format,
}

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    /// `Option<_>` in the body type: null is a valid value.
    nullable: bool,
    /// Must be present.
    required: bool,
}

const fn field(name: &'static str, kind: Kind, nullable: bool, required: bool) -> Field {
    Field {
        name,
        kind,
        nullable,
        required,
    }
}

const SECRET_CREATE: &[Field] = &[
    field("name", Kind::Str, false, true),
    field("value", Kind::Str, true, false),
    field("value_base64", Kind::Str, true, false),
    field("description", Kind::Str, false, false),
    field("env", Kind::Str, true, false),
    field("file", Kind::Str, true, false),
    field("enabled", Kind::Bool, true, false),
];
const SECRET_PATCH: &[Field] = &[
    field("value", Kind::Str, true, false),
    field("value_base64", Kind::Str, true, false),
    field("description", Kind::Str, true, false),
    field("env", Kind::Str, true, false),
    field("file", Kind::Str, true, false),
    field("enabled", Kind::Bool, true, false),
];
const IMPORT: &[Field] = &[
    field("format", Kind::Format, false, true),
    field("content", Kind::Str, false, true),
];
const KEY: &[Field] = &[field("algorithm", Kind::Str, true, false)];
const LOGIN_KEYS: &[Field] = &[field("public_key", Kind::Str, false, true)];
const TOKENS: &[Field] = &[field("name", Kind::Str, false, true)];
const USERS: &[Field] = &[
    field("name", Kind::Str, false, true),
    field("admin", Kind::Bool, false, false),
    field("os_user", Kind::Str, true, false),
    field("login_keys", Kind::StrList, false, false),
    field("key_type", Kind::Str, true, false),
];

/// A route that takes a JSON body, a body that would succeed there (so it is only ever sent
/// broken, unauthorized or to the wrong place), and bodies that break a rule of the route.
struct BodyRoute {
    method: &'static str,
    path: String,
    fields: &'static [Field],
    /// A field whose string value no valid request can contain a lone surrogate in.
    ident: &'static str,
    base: Value,
    /// Whether `{every field: null}` would be a valid request.
    all_null_valid: bool,
    invalid: Vec<Value>,
}

fn body_routes(w: &World) -> Vec<BodyRoute> {
    let me_os = me().name;
    let long = |n: usize| "x".repeat(n);
    vec![
        BodyRoute {
            method: "POST",
            path: "users/me/secrets".into(),
            fields: SECRET_CREATE,
            ident: "name",
            base: json!({"name": "fresh-one", "value": CANARY, "description": "fuzz",
                         "env": "FRESH_ONE", "enabled": true}),
            all_null_valid: false,
            invalid: vec![
                json!({"name": "", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "bad name", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "-lead", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "a".repeat(65), "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "ünïcode", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "me/../x", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "nul\u{0}byte", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "fresh-a", "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": "", "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": CANARY, "value_base64": "eA==", "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value_base64": format!("***{CANARY}"), "file": "~/.fz/a"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "PATH"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "ld_preload"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "SSH_AUTH_SOCK"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "1ABC"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "A-B"}),
                json!({"name": "fresh-a", "value": CANARY, "env": ""}),
                json!({"name": "fresh-a", "value": CANARY, "env": "E".repeat(300)}),
                json!({"name": "fresh-a", "value": CANARY, "file": "relative/path"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/../etc/passwd"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/etc/"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/a//b"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/a/./b"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/a\u{0}b"}),
                json!({"name": "fresh-a", "value": CANARY, "file": format!("/{}", long(5000))}),
                json!({"name": "fresh-a", "value": format!("{CANARY}{}", long(70_000)), "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "FRESH_A", "description": long(1100)}),
                json!({"name": "fresh-a", "value": CANARY, "env": "FRESH_A", "description": "bell\u{7}"}),
                json!({"name": "fresh-a", "value": format!("{CANARY}\u{0}"), "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": CANARY, "enabled": true}),
                json!({"name": "alpha", "value": CANARY}),
                json!({"name": "fresh-a", "value": CANARY, "env": "alpha_token"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/.fz/beta"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/.fz/beta/inside"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/.fz"}),
            ],
        },
        BodyRoute {
            method: "PATCH",
            path: "users/me/secrets/alpha".into(),
            fields: SECRET_PATCH,
            ident: "env",
            base: json!({"value": CANARY, "description": "fuzzed"}),
            all_null_valid: false,
            invalid: vec![
                json!({}),
                json!({"value": ""}),
                json!({"value": CANARY, "value_base64": "eA=="}),
                json!({"value_base64": format!("%%%{CANARY}")}),
                json!({"value": format!("{CANARY}{}", long(70_000))}),
                json!({"value": format!("{CANARY}\u{0}")}),
                json!({"env": "PATH"}),
                json!({"env": "XDG_CONFIG_HOME"}),
                json!({"env": "9LIVES"}),
                json!({"env": "DELTA_ENV_TAKEN"}),
                json!({"env": "delta_env_taken"}),
                json!({"file": "relative"}),
                json!({"file": "~/.fz/beta"}),
                json!({"file": "~/.fz/beta/x"}),
                json!({"file": "/x/../y"}),
                json!({"description": long(1100)}),
                json!({"description": "nl\nnl"}),
                json!({"env": "", "enabled": true}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users/me/secrets:import".into(),
            fields: IMPORT,
            ident: "format",
            base: json!({"format": "dotenv", "content": format!("FRESH_TWO={CANARY}\n")}),
            all_null_valid: false,
            invalid: vec![
                json!({"format": "dotenv", "content": format!("NOEQUALS{CANARY}")}),
                json!({"format": "dotenv", "content": format!("1BAD={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_X={CANARY}\nALPHA_TOKEN={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_X={CANARY}\nFRESH_X={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_X={CANARY}\nPATH={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_Y=\"{CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_Y='{CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_Z={CANARY}{}", long(70_000))}),
                json!({"format": "dotenv", "content": format!("FRESH_Z={CANARY}\n{}", "\u{0}=x")}),
                json!({"format": "json", "content": "{"}),
                json!({"format": "json", "content": format!("[{{\"name\":\"fresh-z\",\"description\":\"{CANARY}\"}}]")}),
                json!({"format": "json", "content": "{\"FRESH_Q\": 5}"}),
                json!({"format": "json", "content": format!("[{{\"name\":\"alpha\",\"value\":\"{CANARY}\"}}]")}),
                json!({"format": "json", "content": format!("[{{\"name\":\"fresh-q\",\"value\":\"{CANARY}\",\"bogus\":1}}]")}),
                json!({"format": "json", "content": format!("[{{\"name\":\"fresh-q\",\"value\":\"{CANARY}\",\"env\":\"FRESH_Q\"}},{{\"name\":\"fresh-r\",\"value\":\"{CANARY}\",\"env\":\"fresh_q\"}}]")}),
                json!({"format": "json", "content": format!("\"{CANARY}\"")}),
                json!({"format": "json", "content": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}),
                json!({"format": "yaml", "content": format!("a: {CANARY}")}),
                json!({"format": "DOTENV", "content": format!("FRESH_X={CANARY}")}),
            ],
        },
        BodyRoute {
            method: "PUT",
            path: "users/me/key".into(),
            fields: KEY,
            ident: "algorithm",
            base: json!({"algorithm": "ecdsa-p256"}),
            all_null_valid: true,
            invalid: vec![
                json!({"algorithm": "rsa"}),
                json!({"algorithm": ""}),
                json!({"algorithm": "ssh-rsa"}),
                json!({"algorithm": "dsa"}),
                json!({"algorithm": "ecdsa-p384"}),
                json!({"algorithm": "ed25519 "}),
                json!({"algorithm": " ed25519"}),
                json!({"algorithm": "ed25519\u{0}"}),
                json!({"algorithm": long(10_000)}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users/me/login-keys".into(),
            fields: LOGIN_KEYS,
            ident: "public_key",
            base: json!({"public_key": w.fresh_line}),
            all_null_valid: false,
            invalid: vec![
                json!({"public_key": ""}),
                json!({"public_key": CANARY}),
                json!({"public_key": "ssh-ed25519"}),
                json!({"public_key": "ssh-ed25519 AAAA"}),
                json!({"public_key": "ssh-ed25519 !!!!not-base64!!!!"}),
                json!({"public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ"}),
                json!({"public_key": format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n-----END OPENSSH PRIVATE KEY-----\n")}),
                json!({"public_key": w.login_line}),
                json!({"public_key": format!("{}\n{CANARY}", w.fresh_line)}),
                json!({"public_key": format!("{}\nssh-ed25519 AAAA", w.fresh_line)}),
                json!({"public_key": format!("{}\n{}", w.fresh_line, w.login_line)}),
                json!({"public_key": long(100_000)}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users/me/tokens".into(),
            fields: TOKENS,
            ident: "name",
            base: json!({"name": "fresh-token"}),
            all_null_valid: false,
            invalid: vec![
                json!({"name": ""}),
                json!({"name": "bad name"}),
                json!({"name": "-lead"}),
                json!({"name": "a".repeat(65)}),
                json!({"name": "tök"}),
                json!({"name": "x/y"}),
                json!({"name": w.boot_token_name}),
                json!({"name": "fuzz-second"}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users".into(),
            fields: USERS,
            ident: "name",
            base: json!({"name": "fresh-user", "admin": false, "os_user": me_os,
                         "login_keys": [w.fresh_line], "key_type": "ed25519"}),
            all_null_valid: false,
            invalid: vec![
                json!({"name": "me", "os_user": me_os}),
                json!({"name": w.admin_name, "os_user": me_os}),
                json!({"name": "bob", "os_user": me_os}),
                json!({"name": "", "os_user": me_os}),
                json!({"name": "bad name", "os_user": me_os}),
                json!({"name": "a".repeat(65), "os_user": me_os}),
                json!({"name": "fresh-user", "os_user": me_os, "key_type": "rsa"}),
                json!({"name": "fresh-user", "os_user": me_os, "key_type": ""}),
                json!({"name": "fresh-user", "os_user": me_os, "login_keys": [CANARY]}),
                json!({"name": "fresh-user", "os_user": me_os, "login_keys": [w.fresh_line, "garbage"]}),
                json!({"name": "fresh-user", "os_user": me_os, "login_keys": [""]}),
            ],
        },
    ]
}

/// A wrong-typed value for a field of `kind` (null when the field is not an `Option`).
fn wrong_value(rng: &mut Rng, f: &Field) -> Value {
    let mut choices: Vec<Value> = match f.kind {
        Kind::Str => vec![
            json!(0),
            json!(-1),
            json!(1.5),
            json!(true),
            json!(false),
            json!([]),
            json!([CANARY]),
            json!({}),
            json!({"k": CANARY}),
            json!(u64::MAX),
        ],
        Kind::Bool => vec![
            json!(CANARY),
            json!(format!("a\"{CANARY}")),
            json!("true"),
            json!(""),
            json!(0),
            json!(1),
            json!([]),
            json!([true]),
            json!({}),
        ],
        Kind::StrList => vec![
            json!(CANARY),
            json!(0),
            json!({}),
            json!([0]),
            json!([null]),
            json!([[]]),
            json!(true),
        ],
        Kind::Format => vec![
            json!("xml"),
            json!("DOTENV"),
            json!("Json"),
            json!(""),
            json!(0),
            json!([]),
            json!({}),
            json!(["dotenv"]),
        ],
    };
    if !f.nullable {
        choices.push(Value::Null);
    }
    rng.pick(&choices).clone()
}

const UNKNOWN_FIELDS: &[&str] = &[
    "zzz",
    "Name",
    "NAME",
    "name ",
    " name",
    "value\u{0}",
    "__proto__",
    "constructor",
    "",
    "id",
    "user",
    "is_admin",
    "token",
    "ünknown",
];

/// The base body, mutated so that it is certainly invalid.
fn mutate(rng: &mut Rng, r: &BodyRoute) -> (String, Vec<u8>, Option<&'static [u8]>) {
    let obj = r.base.as_object().unwrap().clone();
    let text = r.base.to_string();
    let json_ct: Option<&'static [u8]> = Some(b"application/json");
    match rng.below(16) {
        0 => {
            let f = rng.pick(r.fields);
            let mut o = obj.clone();
            o.insert(f.name.into(), wrong_value(rng, f));
            (
                "wrong type".into(),
                Value::Object(o).to_string().into_bytes(),
                json_ct,
            )
        }
        1 => {
            let mut o = obj.clone();
            let name = *rng.pick(UNKNOWN_FIELDS);
            let value = rng
                .pick(&[json!(1), json!(null), json!(CANARY), json!({}), json!([])])
                .clone();
            o.insert(name.into(), value);
            (
                "unknown field".into(),
                Value::Object(o).to_string().into_bytes(),
                json_ct,
            )
        }
        2 => {
            let required: Vec<&Field> = r.fields.iter().filter(|f| f.required).collect();
            let mut o = obj.clone();
            if required.is_empty() {
                o.insert("bogus".into(), json!(true));
                (
                    "unknown field (no required)".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else {
                o.remove(rng.pick(&required).name);
                (
                    "required field missing".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            }
        }
        3 => {
            let o: serde_json::Map<String, Value> = r
                .fields
                .iter()
                .map(|f| (f.name.to_string(), Value::Null))
                .collect();
            if r.all_null_valid {
                let mut o = o;
                o.insert("nulls".into(), Value::Null);
                (
                    "all null + unknown".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else {
                (
                    "all null".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            }
        }
        4 => {
            let choices: Vec<Vec<u8>> = vec![
                b"null".to_vec(),
                b"0".to_vec(),
                b"\"str\"".to_vec(),
                b"[]".to_vec(),
                b"true".to_vec(),
                format!("[{text}]").into_bytes(),
                Value::String(text.clone()).to_string().into_bytes(),
                b"1e999".to_vec(),
                b"".to_vec(),
                b" ".to_vec(),
            ];
            ("not an object".into(), rng.pick(&choices).clone(), json_ct)
        }
        5 => {
            let cut = rng.below(text.len());
            ("truncated".into(), text.as_bytes()[..cut].to_vec(), json_ct)
        }
        6 => {
            let garbage: &[&[u8]] = &[
                b"x",
                b"}",
                b"{}",
                b"]",
                b",",
                b"\0",
                b"\xff",
                b"null",
                b"/*c*/",
                b"{\"name\":1}",
            ];
            let mut body = text.clone().into_bytes();
            let g: &[u8] = rng.pick::<&[u8]>(garbage);
            body.extend_from_slice(g);
            ("trailing garbage".into(), body, json_ct)
        }
        7 => {
            let bad: &[&[u8]] = &[
                b"\xff",
                b"\xc0\x80",
                b"\xed\xa0\x80",
                b"\x80",
                b"\xe2\x82",
                b"\xf8\x88\x80\x80\x80",
                b"\xfe\xfe",
            ];
            let mut body = text.clone().into_bytes();
            let at = rng.below(body.len() + 1);
            let insert = rng.pick(bad);
            body.splice(at..at, insert.iter().copied());
            ("invalid UTF-8".into(), body, json_ct)
        }
        8 => {
            let depth = *rng.pick(&[129usize, 1000, 10_000]);
            let body = match rng.below(4) {
                0 => "[".repeat(depth).into_bytes(),
                1 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                2 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes(),
                _ => {
                    let f = rng.pick(r.fields);
                    let mut t = text.clone();
                    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                    t.insert_str(t.len() - 1, &format!(",\"{}\":{deep}", f.name));
                    t.into_bytes()
                }
            };
            (format!("nested {depth}"), body, json_ct)
        }
        9 => {
            let (k, v) = obj.iter().nth(rng.below(obj.len())).unwrap();
            let mut t = text.clone();
            t.insert_str(t.len() - 1, &format!(",{}:{}", Value::String(k.clone()), v));
            ("duplicate field".into(), t.into_bytes(), json_ct)
        }
        10 => {
            let (k, _) = obj.iter().nth(rng.below(obj.len())).unwrap();
            let variants = vec![
                text.replace('"', "'"),
                format!("{},}}", &text[..text.len() - 1]),
                text.replacen(&format!("\"{k}\""), k, 1),
                text.replacen(&format!("\"{k}\":"), &format!("\"{k}\":NaN,\"{k}x\":"), 1),
                format!("/*c*/{text}"),
                format!("{text}//c"),
                format!("\u{feff}{text}"),
                text.replacen(&format!("\"{k}\":"), &format!("\"{k}\":0x1,\"{k}y\":"), 1),
            ];
            (
                "json5-isms".into(),
                rng.pick(&variants).clone().into_bytes(),
                json_ct,
            )
        }
        11 | 12 => {
            let v = rng.pick(&r.invalid).clone();
            ("breaks a rule".into(), v.to_string().into_bytes(), json_ct)
        }
        13 => {
            let cts: &[&'static [u8]] = &[
                b"text/plain",
                b"application/x-www-form-urlencoded",
                b"multipart/form-data; boundary=x",
                b"application/jsonx",
                b"text/json",
                b"application/xml",
                b"json",
                b"",
                b"application/",
                b"*/*",
                b"\xff\xfe",
            ];
            if rng.below(cts.len() + 1) == 0 {
                ("no content type".into(), text.into_bytes(), None)
            } else {
                (
                    "wrong content type".into(),
                    text.into_bytes(),
                    Some(*rng.pick(cts)),
                )
            }
        }
        14 => {
            let surrogate = *rng.pick(&[r"\ud800", r"\udfff", r"\udc00\ud800", r"\ud83d"]);
            let mut o = obj.clone();
            o.insert(r.ident.into(), json!("SURROGATEHERE"));
            let t = Value::Object(o)
                .to_string()
                .replace("SURROGATEHERE", &format!("x{surrogate}"));
            ("lone surrogate".into(), t.into_bytes(), json_ct)
        }
        _ => {
            let mut o = obj.clone();
            let ctl = *rng.pick(&["\u{0}", "\u{1b}[2J", "\r\n", "\u{202e}"]);
            o.insert(r.ident.into(), json!(format!("x{ctl}y")));
            if r.ident == "format" {
                (
                    "control chars".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else if r.ident == "public_key" {
                o.insert("public_key".into(), json!(format!("ssh-ed25519 {ctl}AAAA")));
                (
                    "control chars".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else {
                (
                    "control chars".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            }
        }
    }
}

/// Path segments that name nothing that exists: traversal, NUL, bad escapes, bad UTF-8, case
/// and whitespace variants, 10k characters, unicode, raw non-ASCII bytes.
fn odd_segments() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "..",
        ".",
        "..%2f..%2fetc",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "%2e%2e%2f%2e%2e",
        "me%2f..%2f..",
        "x%2f..%2falpha",
        "%00",
        "alpha%00",
        "me%00",
        "%ff",
        "%c3%28",
        "%ed%a0%80",
        "%c0%ae%c0%ae",
        "%",
        "%zz",
        "%%",
        "%2",
        "ALPHA",
        "Alpha",
        "alpha%20",
        "%20alpha",
        "alpha%0a",
        "alpha%09",
        "ME",
        "Me",
        "me%20",
        "%20me",
        "%e2%80%aeahpla",
        "%f0%9f%94%91",
        "%e5%90%8d%e5%89%8d",
        "%ef%bc%a1lpha",
        "alpha;",
        "alpha'--",
        "%22alpha%22",
        "$(id)",
        "*",
        "%2a",
        "~",
        "-",
        "_",
        "SHA256:",
        "SHA256:%2f%2f%2f",
        "sha256:x",
        "null",
        "undefined",
        "%7buser%7d",
        "{name}",
        "a%2fb",
        "+",
        "alpha+",
        "%u002e",
        "secrets:import",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    out.push("a".repeat(10_000).into_bytes());
    out.push(format!("SHA256:{}", "A".repeat(10_000)).into_bytes());
    out.push("%c3%a9".repeat(3_000).into_bytes());
    out.push(b"\xc3\xa9t\xc3\xa9".to_vec());
    out.push(b"\xff".to_vec());
    out.push(b"a b".to_vec());
    out.push(b"a\tb".to_vec());
    out
}

/// Whole request-targets: empty segments, dot segments, other versions, case, queries.
fn odd_targets() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "/",
        "*",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v2/users",
        "//api/v1/users",
        "/api//v1/users",
        "/API/V1/USERS",
        "/api/v1/users/",
        "/api/v1/users//secrets",
        "/api/v1/users/me/secrets/",
        "/api/v1/users/me//secrets",
        "/api/v1/users/me/../..",
        "/api/v1/users/me/../../etc/passwd",
        "/api/v1/../../../etc/passwd",
        "/api/v1/users/me/secrets:import/",
        "/api/v1/users/me/secrets:export",
        "/api/v1/users/me/secrets%3aimport",
        "/api/v1/users/me/secrets%3Aimport",
        "/api/v1/healthz?x=%ff",
        "/api/v1/audit?since=garbage",
        "/api/v1/audit?since=",
        "/api/v1/audit?user=%ff",
        "/api/v1/audit?user=bob&user=root",
        "/api/v1/audit?bogus=1",
        "/api/v1/audit?since=99999999999999999999d",
        "/api/v1/audit?since=-1h",
        "/api/v1/audit?since=1970-01-01T00:00:00Z",
        "/api/v1/audit?since=9999-12-31T23:59:59Z",
        "/api/v1/audit?since=0000-00-00T00:00:00Z",
        "/api/v1/audit?since=18446744073709551615s",
        "/api/v1/audit?since=1ns",
        "/api/v1/audit?since=%00",
        "/api/v1/audit?",
        "/api/v1/audit?&&&",
        "/api/v1/audit?user=",
        "/api/v1/audit?user=nobody-here",
        "/api/v1/audit?since[]=1",
        "/api/v1/users?x=1",
        "/api/v1/healthz#frag",
        "/api/v1/users/me/secrets?name=x",
        "/api/v1/users/me/key?algorithm=rsa",
        "http://127.0.0.1/api/v1/healthz",
        "http://127.0.0.1/api/v1/users",
        "/api/v1/users/me/secrets/%2e%2e/%2e%2e",
        "/api/v1/users/me%2fsecrets",
        "/api/v1/%75sers",
        "/api/v1/users/me/secrets/alpha/extra",
        "/api/v1/users/me/tokens/",
        "/api/v1/users/me/login-keys/",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    out.push(format!("/api/v1/{}", "a/".repeat(5_000)).into_bytes());
    out.push(format!("/api/v1/users/{}", "u".repeat(10_000)).into_bytes());
    out.push(format!("/api/v1/users/me/secrets/{}", "%2f".repeat(3_000)).into_bytes());
    out.push(format!("/api/v1/audit?since={}", "9".repeat(10_000)).into_bytes());
    out.push(format!("/api/v1/audit?user={}", "u".repeat(10_000)).into_bytes());
    out.push(b"/api/v1/users/\xc3\xa9".to_vec());
    out.push(b"/api/v1/\x7f".to_vec());
    out.push(b"api/v1/healthz".to_vec());
    out
}

/// Builds every request of the fuzzing run. None of them may change anything.
fn requests(w: &World, rng: &mut Rng) -> Vec<Req> {
    let mut out = Vec::new();
    let routes = body_routes(w);
    let base_of = |method: &str, path: &str| -> Option<Vec<u8>> {
        routes
            .iter()
            .find(|r| r.method == method && r.path == path)
            .map(|r| r.base.to_string().into_bytes())
    };
    let create = base_of("POST", "users/me/secrets").unwrap();
    let patch = base_of("PATCH", "users/me/secrets/alpha").unwrap();
    let import = base_of("POST", "users/me/secrets:import").unwrap();
    let key = base_of("PUT", "users/me/key").unwrap();
    let login = base_of("POST", "users/me/login-keys").unwrap();
    let token = base_of("POST", "users/me/tokens").unwrap();
    let user = base_of("POST", "users").unwrap();

    // 1. Every method on every route: with the admin's token and no body, with a broken body,
    //    and without a token. Names that exist nowhere, so no DELETE can succeed.
    let mut templates: Vec<&str> = API_ROUTES.iter().map(|(_, p)| *p).collect();
    templates.dedup();
    for tmpl in &templates {
        let user_fill = if *tmpl == "users/{user}" {
            "no-such-user"
        } else {
            "me"
        };
        let path = tmpl
            .replace("{user}", user_fill)
            .replace("{name}", "no-such-name")
            .replace("{fingerprint}", "SHA256:no-such-fingerprint");
        for method in METHODS {
            let writes = matches!(*method, "POST" | "PUT" | "PATCH" | "DELETE");
            let expect = if writes { Expect::Fail } else { Expect::Any };
            out.push(
                Req::new(method, &path)
                    .bearer(&w.admin)
                    .expect(expect)
                    .note("method sweep, no body"),
            );
            out.push(
                Req::new(method, &path)
                    .bearer(&w.admin)
                    .json(b"{".to_vec())
                    .expect(expect)
                    .note("method sweep, broken body"),
            );
            let public = PUBLIC.contains(tmpl) && matches!(*method, "GET" | "HEAD");
            out.push(
                Req::new(method, &path)
                    .expect(if public { Expect::Any } else { Expect::Fail })
                    .note("method sweep, no token"),
            );
        }
    }

    // 2. Requests that would succeed with the admin's token, sent with a missing, malformed or
    //    wrong one: each must be 401 (public routes aside).
    let valid_ops: Vec<(&str, String, Option<Vec<u8>>)> = vec![
        ("GET", "users/me/secrets".into(), None),
        ("POST", "users/me/secrets".into(), Some(create.clone())),
        ("GET", "users/me/secrets/alpha".into(), None),
        (
            "PATCH",
            "users/me/secrets/alpha".into(),
            Some(patch.clone()),
        ),
        ("DELETE", "users/me/secrets/alpha".into(), None),
        (
            "POST",
            "users/me/secrets:import".into(),
            Some(import.clone()),
        ),
        ("GET", "users/me/key".into(), None),
        ("PUT", "users/me/key".into(), Some(key.clone())),
        ("GET", "users/me/login-keys".into(), None),
        ("POST", "users/me/login-keys".into(), Some(login.clone())),
        (
            "DELETE",
            format!("users/me/login-keys/{}", w.login_fp_enc),
            None,
        ),
        ("GET", "users/me/tokens".into(), None),
        ("POST", "users/me/tokens".into(), Some(token.clone())),
        ("DELETE", "users/me/tokens/fuzz-second".into(), None),
        (
            "DELETE",
            format!("users/me/tokens/{}", pct(&w.boot_token_name)),
            None,
        ),
        ("GET", "users".into(), None),
        ("POST", "users".into(), Some(user.clone())),
        ("GET", "users/bob".into(), None),
        ("DELETE", "users/bob".into(), None),
        ("GET", "audit".into(), None),
        ("GET", "healthz".into(), None),
        ("GET", "metrics".into(), None),
        ("GET", "openapi.json".into(), None),
    ];
    let t = &w.admin;
    let mut flipped = t.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // (header name, header value or none, whether the answer must be exactly 401)
    let auths: Vec<(&str, Option<Vec<u8>>, bool)> = vec![
        ("Authorization", None, true),
        ("Authorization", Some(b"".to_vec()), true),
        ("Authorization", Some(b"Bearer".to_vec()), true),
        ("Authorization", Some(b"Bearer ".to_vec()), true),
        ("Authorization", Some(b"Bearer    ".to_vec()), true),
        ("Authorization", Some(b"Basic Zm9vOmJhcg==".to_vec()), true),
        ("Authorization", Some(b"Basic x".to_vec()), true),
        (
            "Authorization",
            Some(b"Digest username=\"root\"".to_vec()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {}", "A".repeat(10_000)).into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some("Bearer tökén".as_bytes().to_vec()),
            true,
        ),
        ("Authorization", Some(b"Bearer \xff\xfe\xfd".to_vec()), true),
        ("Authorization", Some(b"Bearer \x01\x02".to_vec()), false),
        (
            "Authorization",
            Some(format!("Bearer {t}x").into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {}", &t[..t.len() - 1]).into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {flipped}").into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer{t}").into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {t} {t}").into_bytes()),
            true,
        ),
        ("Authorization", Some(b"Bearer null".to_vec()), true),
        ("Authorization", Some(b"Bearer ' OR '1'='1".to_vec()), true),
        (
            "Authorization",
            Some(b"Bearer ../../etc/passwd".to_vec()),
            true,
        ),
        ("Authorization", Some(b"Bearer %00".to_vec()), true),
        (
            "Authorization",
            Some(format!("Bearer kpt_{}", "A".repeat(43)).into_bytes()),
            true,
        ),
        (
            "Authorisation",
            Some(format!("Bearer {t}").into_bytes()),
            true,
        ),
        (
            "X-Authorization",
            Some(format!("Bearer {t}").into_bytes()),
            true,
        ),
    ];
    for (i, (header, value, strict)) in auths.iter().enumerate() {
        for (method, path, body) in &valid_ops {
            let public = PUBLIC.contains(&path.as_str());
            let mut r = Req::new(method, path).note(format!("bad token #{i}"));
            if let Some(v) = value {
                r = r.header(header, v);
            }
            if let Some(b) = body {
                r = r.json(b.clone());
            }
            r.expect = match (public, strict) {
                (true, _) => Expect::Any,
                (false, true) => Expect::Status(401),
                (false, false) => Expect::Fail,
            };
            out.push(r);
        }
    }

    // 3. Valid requests by the wrong user: bob on the admin's things and on admin-only routes,
    //    the admin on bob's secrets, key and tokens. All 403.
    let a = &w.admin_name;
    let forbidden: Vec<(&str, &str, String, Option<Vec<u8>>)> = vec![
        (w.bob.as_str(), "GET", "users".into(), None),
        (w.bob.as_str(), "POST", "users".into(), Some(user.clone())),
        (w.bob.as_str(), "DELETE", format!("users/{a}"), None),
        (w.bob.as_str(), "DELETE", "users/bob".into(), None),
        (w.bob.as_str(), "GET", format!("users/{a}"), None),
        (w.bob.as_str(), "GET", format!("users/{a}/secrets"), None),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/secrets"),
            Some(create.clone()),
        ),
        (
            w.bob.as_str(),
            "GET",
            format!("users/{a}/secrets/alpha"),
            None,
        ),
        (
            w.bob.as_str(),
            "PATCH",
            format!("users/{a}/secrets/alpha"),
            Some(patch.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("users/{a}/secrets/alpha"),
            None,
        ),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/secrets:import"),
            Some(import.clone()),
        ),
        (w.bob.as_str(), "GET", format!("users/{a}/key"), None),
        (
            w.bob.as_str(),
            "PUT",
            format!("users/{a}/key"),
            Some(key.clone()),
        ),
        (w.bob.as_str(), "GET", format!("users/{a}/login-keys"), None),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/login-keys"),
            Some(login.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("users/{a}/login-keys/{}", w.login_fp_enc),
            None,
        ),
        (w.bob.as_str(), "GET", format!("users/{a}/tokens"), None),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/tokens"),
            Some(token.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("users/{a}/tokens/fuzz-second"),
            None,
        ),
        (w.bob.as_str(), "GET", format!("audit?user={a}"), None),
        (w.admin.as_str(), "GET", "users/bob/secrets".into(), None),
        (
            w.admin.as_str(),
            "POST",
            "users/bob/secrets".into(),
            Some(create.clone()),
        ),
        (
            w.admin.as_str(),
            "GET",
            "users/bob/secrets/bob-secret".into(),
            None,
        ),
        (
            w.admin.as_str(),
            "PATCH",
            "users/bob/secrets/bob-secret".into(),
            Some(patch.clone()),
        ),
        (
            w.admin.as_str(),
            "DELETE",
            "users/bob/secrets/bob-secret".into(),
            None,
        ),
        (
            w.admin.as_str(),
            "POST",
            "users/bob/secrets:import".into(),
            Some(import.clone()),
        ),
        (w.admin.as_str(), "GET", "users/bob/key".into(), None),
        (
            w.admin.as_str(),
            "PUT",
            "users/bob/key".into(),
            Some(key.clone()),
        ),
        (w.admin.as_str(), "GET", "users/bob/tokens".into(), None),
        (
            w.admin.as_str(),
            "POST",
            "users/bob/tokens".into(),
            Some(token.clone()),
        ),
        (
            w.admin.as_str(),
            "DELETE",
            "users/bob/tokens/bob-laptop".into(),
            None,
        ),
    ];
    for (tok, method, path, body) in forbidden {
        let mut r = Req::new(method, &path)
            .bearer(tok)
            .expect(Expect::Status(403))
            .note("wrong user");
        if let Some(b) = body {
            r = r.json(b);
        }
        out.push(r);
    }

    // 4. Odd path segments in every parameter position, with bodies that would be valid at
    //    the right place. None of them decodes to a name that exists.
    let protected: BTreeSet<Vec<u8>> = [
        "me",
        a.as_str(),
        "bob",
        "alpha",
        "beta",
        "gamma",
        "delta",
        "bob-secret",
        "fuzz-second",
        "bob-laptop",
        w.boot_token_name.as_str(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let fp_enc = &w.login_fp_enc;
    let positions: Vec<(&str, String, Option<Vec<u8>>, Expect)> = vec![
        ("GET", "users/{}/secrets".into(), None, Expect::Any),
        (
            "POST",
            "users/{}/secrets".into(),
            Some(create.clone()),
            Expect::Fail,
        ),
        ("GET", "users/me/secrets/{}".into(), None, Expect::Any),
        (
            "PATCH",
            "users/me/secrets/{}".into(),
            Some(patch.clone()),
            Expect::Fail,
        ),
        ("DELETE", "users/me/secrets/{}".into(), None, Expect::Fail),
        (
            "DELETE",
            "users/{}/secrets/alpha".into(),
            None,
            Expect::Fail,
        ),
        (
            "POST",
            "users/{}/secrets:import".into(),
            Some(import.clone()),
            Expect::Fail,
        ),
        (
            "PUT",
            "users/{}/key".into(),
            Some(key.clone()),
            Expect::Fail,
        ),
        (
            "POST",
            "users/{}/login-keys".into(),
            Some(login.clone()),
            Expect::Fail,
        ),
        (
            "DELETE",
            "users/me/login-keys/{}".into(),
            None,
            Expect::Fail,
        ),
        (
            "DELETE",
            format!("users/{{}}/login-keys/{fp_enc}"),
            None,
            Expect::Fail,
        ),
        (
            "POST",
            "users/{}/tokens".into(),
            Some(token.clone()),
            Expect::Fail,
        ),
        ("DELETE", "users/me/tokens/{}".into(), None, Expect::Fail),
        (
            "DELETE",
            "users/{}/tokens/fuzz-second".into(),
            None,
            Expect::Fail,
        ),
        ("GET", "users/{}".into(), None, Expect::Any),
        ("DELETE", "users/{}".into(), None, Expect::Fail),
        ("GET", "audit?user={}".into(), None, Expect::Any),
        ("GET", "audit?since={}".into(), None, Expect::Any),
    ];
    for seg in odd_segments() {
        assert!(
            !protected.contains(&pct_decode(&seg)),
            "test bug: odd segment {} names something that exists",
            short(&seg, 40)
        );
        for (method, tmpl, body, expect) in &positions {
            let (before, after) = tmpl.split_once("{}").unwrap();
            let mut path = before.as_bytes().to_vec();
            path.extend_from_slice(&seg);
            path.extend_from_slice(after.as_bytes());
            let mut r = Req::new(method, path)
                .bearer(&w.admin)
                .expect(*expect)
                .note("odd segment");
            if let Some(b) = body {
                r = r.json(b.clone());
            }
            out.push(r);
        }
    }

    // 5. Odd request-targets with read methods, DELETE and a broken POST.
    for target in odd_targets() {
        for (method, expect) in [
            ("GET", Expect::Any),
            ("HEAD", Expect::Any),
            ("OPTIONS", Expect::Any),
            ("DELETE", Expect::Fail),
            ("POST", Expect::Fail),
        ] {
            let mut r = Req::raw_target(method.as_bytes(), target.clone())
                .bearer(&w.admin)
                .expect(expect)
                .note("odd target");
            if method == "POST" {
                r = r.json(b"{\"name\":".to_vec());
            }
            out.push(r);
        }
    }

    // 6. Bodies over the 2 MiB limit: 413 with a valid token and a JSON content type, by
    //    Content-Length or chunked; refused some other way otherwise.
    let huge = |n: usize| -> Vec<u8> {
        let mut b = b"{\"name\":\"huge\",\"value\":\"".to_vec();
        b.resize(n - 2, b'A');
        b.extend_from_slice(b"\"}");
        b
    };
    let three_mib = huge(3 * 1024 * 1024);
    for r in &routes {
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .json(three_mib.clone())
                .expect(Expect::Status(413))
                .note("3 MiB"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .json(three_mib.clone())
                .chunked()
                .expect(Expect::Status(413))
                .note("3 MiB chunked"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .json(huge(MAX_BODY + 1))
                .expect(Expect::Status(413))
                .note("limit + 1"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .json(three_mib.clone())
                .expect(Expect::Fail)
                .note("3 MiB, no token"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .body_as(three_mib.clone(), Some(b"text/plain"))
                .expect(Expect::Fail)
                .note("3 MiB, text/plain"),
        );
    }
    out.push(
        Req::new("GET", "users/me/secrets")
            .bearer(&w.admin)
            .json(three_mib.clone())
            .note("3 MiB on a GET"),
    );
    out.push(
        Req::new("DELETE", "users/me/secrets/no-such-name")
            .bearer(&w.admin)
            .json(three_mib)
            .expect(Expect::Fail)
            .note("3 MiB on a DELETE"),
    );

    // 7. A few fixed cases, so that what they show does not depend on the PRNG: a login-key
    //    body with no key in it, and request values with a double quote inside (error messages
    //    must not echo them).
    for (method, path, body) in [
        (
            "POST",
            "users/me/login-keys",
            json!({"public_key": ""}).to_string(),
        ),
        (
            "POST",
            "users/me/login-keys",
            json!({"public_key": "# only a comment\n"}).to_string(),
        ),
        (
            "PATCH",
            "users/me/secrets/alpha",
            json!({"enabled": format!("x\"{CANARY}")}).to_string(),
        ),
        (
            "POST",
            "users/me/secrets",
            json!({"name": "fresh-q", "value": CANARY, "enabled": format!("\"{CANARY}\"")})
                .to_string(),
        ),
        (
            "POST",
            "users/me/secrets:import",
            Value::String(String::from_utf8(import.clone()).unwrap()).to_string(),
        ),
    ] {
        out.push(
            Req::new(method, path)
                .bearer(&w.admin)
                .json(body)
                .expect(Expect::Fail)
                .note("fixed case"),
        );
    }

    // 8. Seeded random mutations of the bodies that would be valid.
    for _ in 0..900 {
        let r = rng.pick(&routes);
        let (what, body, ct) = mutate(rng, r);
        let mut req = Req::new(r.method, &r.path)
            .bearer(&w.admin)
            .body_as(body, ct)
            .expect(Expect::Fail)
            .note(format!("mutation: {what}"));
        if rng.below(10) == 0 {
            req = req.chunked();
        }
        out.push(req);
    }
    out
}

/// Sets up the admin (bootstrap) with secrets, a second token and a login key, and bob (not an
/// admin) with a secret and a token; returns the running daemon.
fn world(sb: &Sandbox) -> (common::Daemon, World) {
    let first = sb.serve();
    let admin = sb.bootstrap_token();
    first.stop();
    let bob = {
        let mut v = sb.vault();
        common::add_user(&mut v, "bob");
        v.create_secret(
            &Actor::System,
            "bob",
            &SecretSpec {
                name: "bob-secret".into(),
                value: SecretBytes::new(BOB_VALUE.as_bytes().to_vec()),
                description: String::new(),
                env: Some("BOB_SECRET".into()),
                file: None,
                enabled: None,
            },
        )
        .unwrap();
        v.create_token(&Actor::System, "bob", "bob-laptop")
            .unwrap()
            .token
            .to_string()
    };
    let daemon = sb.serve();
    let h = Http::new(&daemon.url, Some(&admin));
    let admin_name = h.get("users/me").json()["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(admin_name, me().name);

    let delta = [&[0u8, 0xff][..], DELTA_MARK.as_bytes(), &[1, 2, 0]].concat();
    for body in [
        json!({"name": "alpha", "value": ALPHA, "env": "ALPHA_TOKEN"}),
        json!({"name": "beta", "value": BETA, "file": "~/.fz/beta", "description": "beta file"}),
        json!({"name": "gamma", "value": GAMMA, "enabled": false}),
        json!({"name": "delta", "value_base64": base64::engine::general_purpose::STANDARD.encode(&delta),
               "file": "~/.fz/delta.bin"}),
        json!({"name": "delta-env", "value": "plain", "env": "DELTA_ENV_TAKEN"}),
    ] {
        let r = h.send("POST", "users/me/secrets", &body);
        assert_eq!(r.status, 201, "{body}: {}", r.body);
    }
    let r = h.send("POST", "users/me/tokens", &json!({"name": "fuzz-second"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let login = KeyPair::generate(KeyType::Ed25519, "fz-login").unwrap();
    let login_line = login.public_line().unwrap();
    let r = h.send(
        "POST",
        "users/me/login-keys",
        &json!({"public_key": login_line}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let login_fp = r.json()[0]["fingerprint"].as_str().unwrap().to_string();
    let fresh_line = KeyPair::generate(KeyType::Ed25519, "fz-fresh")
        .unwrap()
        .public_line()
        .unwrap();
    let tokens = h.get("users/me/tokens").json();
    let boot_token_name = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .find(|n| *n != "fuzz-second")
        .unwrap()
        .to_string();
    // The canary is nowhere yet: every later sighting is an echo.
    assert!(!dump(&sb.db()).contains(CANARY));
    (
        daemon,
        World {
            admin,
            admin_name,
            bob,
            login_line,
            login_fp_enc: pct(&login_fp),
            fresh_line,
            boot_token_name,
        },
    )
}

#[test]
fn malformed_and_mutated_requests_never_get_5xx_and_change_nothing() {
    let sb = Sandbox::new();
    let (daemon, w) = world(&sb);
    let addr = daemon.url.strip_prefix("http://").unwrap().to_string();
    let before = state(&sb);
    for value in [ALPHA, BETA, GAMMA, DELTA_MARK, BOB_VALUE] {
        assert!(!before.contains(value), "values are stored sealed");
    }

    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let reqs = requests(&w, &mut rng);
    assert!(reqs.len() >= 1_000, "only {} requests", reqs.len());

    let delta_b64 = base64::engine::general_purpose::STANDARD
        .encode([&[0u8, 0xff][..], DELTA_MARK.as_bytes(), &[1, 2, 0]].concat());
    let forbidden: Vec<&[u8]> = vec![
        ALPHA.as_bytes(),
        BETA.as_bytes(),
        GAMMA.as_bytes(),
        DELTA_MARK.as_bytes(),
        delta_b64.as_bytes(),
        BOB_VALUE.as_bytes(),
        CANARY.as_bytes(),
        w.admin.as_bytes(),
        w.bob.as_bytes(),
    ];
    let mut failures = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for req in &reqs {
        let answer = match send(&addr, req) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{e}\n  {}", req.describe()));
                continue;
            }
        };
        *statuses.entry(answer.status).or_default() += 1;
        let shown = || {
            format!(
                "{} {}\n  {}",
                answer.status,
                short(&answer.body, 300),
                req.describe()
            )
        };
        if answer.status >= 500 {
            failures.push(format!("5xx: {}", shown()));
        }
        match req.expect {
            Expect::Any => {}
            Expect::Fail if !(400..500).contains(&answer.status) => {
                failures.push(format!("an invalid request was not refused: {}", shown()));
            }
            Expect::Status(s) if s != answer.status => {
                failures.push(format!("expected {s}: {}", shown()));
            }
            _ => {}
        }
        for f in &forbidden {
            if common::contains(&answer.body, f) || common::contains(&answer.head, f) {
                failures.push(format!(
                    "response contains {}: {}",
                    String::from_utf8_lossy(f),
                    shown()
                ));
            }
        }
    }
    println!("sent {} requests; statuses: {statuses:?}", reqs.len());

    let after = state(&sb);
    let health = Http::new(&daemon.url, None).get("healthz");
    let log = daemon.log();
    // Everything is checked before anything is asserted, so one run reports every problem.
    let mut report = Vec::new();
    if !failures.is_empty() {
        report.push(format!(
            "{} of {} requests failed; the first 25:\n{}",
            failures.len(),
            reqs.len(),
            failures
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if before != after {
        report.push(format!(
            "invalid requests changed the database:\n{}",
            diff(&before, &after)
        ));
    }
    if health.status != 200 {
        report.push(format!(
            "healthz after the run: {} {}",
            health.status, health.body
        ));
    }
    if log.contains("panicked") {
        report.push(format!("the daemon panicked:\n{log}"));
    }
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}
