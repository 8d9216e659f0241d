//! External secret sources (design.md, "External sources"; issue 16) with the real binary, the
//! real `ssh`, a real OpenBao (`bao server -dev`, tests/common/openbao.rs) and a real
//! PostgreSQL behind OpenBao's database engine (tests/common/postgres.rs):
//!
//! - `kv`: a `vault://` reference reaches a session's env; a changed value reaches the
//!   sessions after `kv_ttl`; `secret list`, the API, the trace log and the database never hold
//!   it; `secret test`; the API's and the CLI's `source` XOR value rules and bad references;
//!   bad `[sources]` config is a startup error naming the key; audit events and metrics.
//! - `leases`: a `vault-dyn://` database password (a renewable lease) logs in to PostgreSQL,
//!   is renewed while its session lives and revoked when it ends (`lease_end = "revoke"`), or
//!   left to expire (`"expire"`); a PKI certificate issued with parameters (a write).
//! - `jwt`: keyport's own JWT key (`keyport admin jwt-key`) trusted by OpenBao: alice's read is
//!   alice's in OpenBao's audit log, and bob's JWT cannot read alice's path.
//! - `outage`: OpenBao stopped: the cached value within `max_stale` (audited as stale); past
//!   it, a required secret refuses the session and another is skipped with a pty notice.
//! - `exec`: an exec provider runs as `run_as` with a clean environment; one that hangs times
//!   out, one that prints too much is refused.
//!
//! Values are canaries (`…-canary-…`) that must never show up where they do not belong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "sources/exec.rs"]
mod exec;
#[path = "sources/jwt.rs"]
mod jwt;
#[path = "sources/kv.rs"]
mod kv;
#[path = "sources/leases.rs"]
mod leases;
#[path = "sources/outage.rs"]
mod outage;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::openbao::OpenBao;
use common::{Daemon, Http, Sandbox};
use serde_json::Value;

/// What keyport's AppRole may do in these tests: read KV and database credentials, issue
/// certificates, and renew and revoke its leases.
pub const KEYPORT_POLICY: &str = r#"
path "secret/data/*" { capabilities = ["read"] }
path "database/creds/*" { capabilities = ["read"] }
path "pki/issue/*" { capabilities = ["create", "update"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/renew/*" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/leases/revoke/*" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
"#;

/// An OpenBao keyport logs in to with AppRole: the server, and the `[sources.vault]` lines
/// that say how (address, auth, role id, the secret id's file).
pub struct Bao {
    pub server: OpenBao,
    role_id: String,
    secret_id_file: PathBuf,
}

impl Bao {
    /// A server in `sb` with [`KEYPORT_POLICY`] for keyport's AppRole.
    pub fn start(sb: &Sandbox) -> Self {
        let server = OpenBao::start(sb);
        server.write_policy("keyport", KEYPORT_POLICY);
        let (role_id, secret_id) = server.enable_approle("keyport");
        let secret_id_file = sb.dir.path().join("approle-secret-id");
        std::fs::write(&secret_id_file, &secret_id).unwrap();
        std::fs::set_permissions(&secret_id_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            server,
            role_id,
            secret_id_file,
        }
    }

    /// `[sources.vault]` for this server with AppRole, then `extra` lines (`kv_ttl = "1s"`).
    pub fn vault_table(&self, extra: &str) -> String {
        format!(
            "[sources.vault]\naddress = \"{}\"\nauth = \"approle\"\nrole_id = \"{}\"\n\
             secret_id_file = \"{}\"\n{extra}\n",
            self.server.addr(),
            self.role_id,
            self.secret_id_file.display()
        )
    }
}

/// A running keyport with a config file: the daemon, the bootstrap admin's login key (the
/// admin is named after the OS user the tests run as) and API client.
pub struct Gateway {
    pub daemon: Daemon,
    pub key: PathBuf,
    pub api: Http,
}

/// Writes `config` to `NAME.toml` in the sandbox and starts keyport with it (and `env`, e.g.
/// `KEYPORT_LOG=trace`). The sandbox's `~/.ssh/id_ed25519` is the admin's login key.
pub fn gateway(sb: &Sandbox, name: &str, config: &str, env: &[(&str, &str)]) -> Gateway {
    common::require_tool("ssh");
    let path = sb.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let key = sb.client_key("id_ed25519");
    let mut all = vec![("KEYPORT_CONFIG", path.to_str().unwrap())];
    all.extend_from_slice(env);
    let daemon = sb.serve_with(&all);
    let api = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    Gateway { daemon, key, api }
}

/// The admin (the OS user's name) as a keyport user.
pub fn admin() -> String {
    common::me().name
}

/// Text of a command's stdout and stderr together (a pty merges them anyway).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `keyport ARGS` (the CLI logged in as the admin), no stdin.
pub fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    sb.keyport()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `keyport ARGS`, which must succeed; its stdout.
pub fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = cli(sb, args);
    assert!(out.status.success(), "keyport {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An exec session (no pty) of `user` with `key` running `command`.
pub fn exec_as(daemon: &Daemon, user: &str, key: &Path, command: &str) -> Output {
    daemon
        .ssh(user, key)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// An exec session of the admin.
pub fn exec(g: &Gateway, command: &str) -> Output {
    exec_as(&g.daemon, &admin(), &g.key, command)
}

/// A session with a pty (`ssh -tt`: the server is asked for a terminal, as for an interactive
/// login) of the admin running `command`; the terminal's output is stdout.
pub fn pty(g: &Gateway, command: &str) -> Output {
    g.daemon
        .ssh(&admin(), &g.key)
        .arg("-tt")
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What an exec session printed on stdout, insisting it ran (exit 0).
pub fn stdout_of(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The audit events `action` of secret `secret`.
pub fn events(api: &Http, action: &str, secret: &str) -> Vec<Value> {
    api.audit_rows(action)
        .into_iter()
        .filter(|e| e["secret_name"] == secret)
        .collect()
}

/// Polls (up to `within`) until there are at least `n` events `action` of `secret`; returns
/// them (panics, saying what there was, if they do not come).
pub fn await_events(
    api: &Http,
    action: &str,
    secret: &str,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let rows = events(api, action, secret);
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{n} {action} events of {secret} expected within {within:?}, got {rows:#?}\nall source events: {:#?}",
            source_events(api)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every `source.*` audit event, for failure messages.
pub fn source_events(api: &Http) -> Vec<Value> {
    let r = api.get("audit?limit=1000");
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .unwrap_or_default()
                .starts_with("source.")
        })
        .cloned()
        .collect()
}

/// Polls `check` every 100 ms for up to `within`; whether it came true.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Prometheus samples named `name` (exactly), each with its labels.
pub fn samples(metrics: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => {
                    let (labels, value) = rest.split_once('}')?;
                    (labels, value)
                }
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// The value of sample `name` with exactly labels `labels` (0 when absent: a counter not
/// counted yet).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(metrics, name)
        .into_iter()
        .find(|(l, _)| *l == want)
        .map_or(0.0, |(_, v)| v)
}

/// Reads `secret test`'s success line, `ok: NAME from REF: N bytes` then, for a lease,
/// `, lease Ts` (` (renewable)`, `, revoked after the test`), then the latency ` (L ms)`:
/// returns N and the lease part (empty without a lease). Panics when the line is not that.
pub fn ok_line(stdout: &str, name: &str, reference: &str) -> (usize, String) {
    let parsed = stdout
        .strip_suffix('\n')
        .filter(|line| !line.contains('\n'))
        .and_then(|line| line.strip_prefix(&format!("ok: {name} from {reference}: ")))
        .and_then(|rest| rest.split_once(" bytes"))
        .and_then(|(bytes, rest)| Some((bytes.parse::<usize>().ok()?, rest)));
    let Some((bytes, rest)) = parsed else {
        panic!("not an ok line for {name} from {reference}: {stdout:?}")
    };
    let is_latency = |text: &str| {
        text.strip_suffix(" ms)")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let rest = match rest.rsplit_once(" (") {
        Some((before, latency)) if is_latency(latency) => before,
        _ => rest,
    };
    (bytes, rest.to_string())
}

/// Every byte of every file in the data dir (the database, its WAL, the lock, the key file).
pub fn data_dir_bytes(sb: &Sandbox) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(sb.data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// `value` is in none of: the daemon's log, the database (every row, and every file of the
/// data dir as bytes), any response `api` received.
pub fn assert_nowhere(sb: &Sandbox, g: &Gateway, value: &str) {
    assert!(
        !g.daemon.log().contains(value),
        "the daemon logged a value: {value}"
    );
    assert!(
        !common::dump(&sb.db()).contains(value),
        "the database holds {value}"
    );
    for (path, bytes) in data_dir_bytes(sb) {
        assert!(
            !common::contains(&bytes, value.as_bytes()),
            "{} holds {value}",
            path.display()
        );
    }
    g.api.assert_never_returned(value);
}
