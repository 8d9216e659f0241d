//! The one test harness: a private temp dir per test with its own HOME, config and data dir,
//! the real `keyport` binary run against it, and a full dump of the database for
//! "nothing changed" comparisons.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keyport::secrets::Limits;
use keyport::vault::{Actor, NewUserSpec, Vault};

pub mod ca;
pub mod client_agent;
pub mod conformance;
pub mod custody;
pub mod jwt;
pub mod mux;
pub mod openbao;
pub mod openbao_engines;
pub mod output;
pub mod postgres;
pub mod procs;
pub mod pty;
pub mod relay;
pub mod sshd;
pub mod state;

/// A sandbox: temp dir with `home/` and `data/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The store, when not the data dir's SQLite file (a conformance case on PostgreSQL).
    pub database: Option<keyport::store::Database>,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        Self {
            dir,
            database: None,
        }
    }

    /// A sandbox whose vault keeps its store at `database`.
    pub fn on(database: keyport::store::Database) -> Self {
        Self {
            database: Some(database),
            ..Self::new()
        }
    }

    /// Where the vault's store is.
    pub fn database(&self) -> keyport::store::Database {
        self.database
            .clone()
            .unwrap_or_else(|| keyport::store::Database::File(self.db()))
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db(&self) -> PathBuf {
        self.data().join("keyport.db")
    }

    /// The real binary with a clean environment pointing at this sandbox.
    pub fn keyport(&self) -> Command {
        self.keyport_at(Path::new(env!("CARGO_BIN_EXE_keyport")))
    }

    /// The binary at `bin` with a clean environment pointing at this sandbox.
    pub fn keyport_at(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("KEYPORT_DATA_DIR", self.data())
            .env("KEYPORT_LOG", "debug");
        if let Some(keyport::store::Database::Postgres(url)) = &self.database {
            cmd.env("KEYPORT_DATABASE", url);
        }
        cmd
    }

    /// Runs `keyport ARGS`, returning the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.keyport().args(args).output().unwrap()
    }

    /// Runs `keyport ARGS` and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keyport {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Opens the vault in-process with default limits.
    pub fn vault(&self) -> Vault {
        self.vault_with(Limits::default())
    }

    pub fn vault_with(&self, limits: Limits) -> Vault {
        Vault::open_at(&self.data(), &self.database(), limits).unwrap()
    }
}

/// The OS user tests run as (sessions and `~` resolve against it).
pub fn me() -> keyport::osuser::OsUser {
    keyport::osuser::current().unwrap()
}

/// Adds user `name` running as the current OS user.
pub fn add_user(vault: &mut Vault, name: &str) {
    vault
        .add_user(
            &Actor::System,
            &NewUserSpec {
                name: name.into(),
                os_user: Some(me().name),
                ..NewUserSpec::default()
            },
        )
        .unwrap();
}

/// Every row of every table, as text, in a stable order: equal dumps mean equal state.
pub fn dump(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut tables: Vec<String> = conn
        // A running daemon's heartbeat (`nodes`) is not state: it is rewritten every few seconds.
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'nodes' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    let mut out = String::new();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{table}: {}\n", row.unwrap().join(" | ")));
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Installs nothing: tells the developer which tool is missing (scripts/test installs them).
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed; run scripts/test, which installs it"
    );
}

/// Every route the API serves: (method, path under `/api/v1/`).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "workspaces"),
    ("POST", "workspaces"),
    ("GET", "workspaces/{name}"),
    ("DELETE", "workspaces/{name}"),
    ("PUT", "workspaces/{name}/grants/{user}"),
    ("DELETE", "workspaces/{name}/grants/{user}"),
    ("PUT", "workspaces/{name}/host-keys"),
    ("GET", "users/{user}/secrets"),
    ("POST", "users/{user}/secrets"),
    ("GET", "users/{user}/secrets/{name}"),
    ("PATCH", "users/{user}/secrets/{name}"),
    ("DELETE", "users/{user}/secrets/{name}"),
    ("POST", "users/{user}/secrets:import"),
    ("GET", "users/{user}/required"),
    ("POST", "users/{user}/secrets/{name}/test"),
    ("GET", "users/{user}/key"),
    ("PUT", "users/{user}/key"),
    ("GET", "users/{user}/login-keys"),
    ("POST", "users/{user}/login-keys"),
    ("DELETE", "users/{user}/login-keys/{fingerprint}"),
    ("GET", "users/{user}/tokens"),
    ("POST", "users/{user}/tokens"),
    ("DELETE", "users/{user}/tokens/{name}"),
    ("POST", "users/{user}/web-login"),
    ("GET", "users"),
    ("POST", "users"),
    ("GET", "users/{user}"),
    ("DELETE", "users/{user}"),
    ("GET", "audit"),
    ("GET", "healthz"),
    ("GET", "metrics"),
    ("GET", "openapi.json"),
];

/// A running `keyport serve` on free ports, stopped (SIGTERM, then waited for) on drop.
pub struct Daemon {
    child: std::process::Child,
    /// The API base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The SSH port.
    pub ssh_port: u16,
    /// Everything the daemon wrote to stdout and stderr so far (filled by reader threads).
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sandbox {
    /// Starts the daemon and waits (up to 30 s) until its API answers.
    pub fn serve(&self) -> Daemon {
        self.serve_with(&[])
    }

    /// Starts the daemon with extra environment (e.g. a canary the sessions must not see).
    pub fn serve_with(&self, env: &[(&str, &str)]) -> Daemon {
        self.serve_command(self.keyport(), env)
    }

    /// Starts the daemon from [`Sandbox::public_binary`], so that sessions of other OS
    /// accounts can run it (`GIT_SSH_COMMAND`, the in-session CLI).
    pub fn serve_public(&self, env: &[(&str, &str)]) -> Daemon {
        self.serve_command(self.keyport_at(&self.public_binary()), env)
    }

    /// The keyport binary at a path every OS account can run: the checkout may sit under a
    /// private home. Only the sandbox's `bin/` is opened up (the sandbox itself to traversal).
    pub fn public_binary(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.dir.path().join("bin");
        let path = bin.join("keyport");
        if !path.exists() {
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))
                .unwrap();
            let built = env!("CARGO_BIN_EXE_keyport");
            if std::fs::hard_link(built, &path).is_err() {
                std::fs::copy(built, &path).unwrap();
            }
        }
        path
    }

    /// Starts the daemon from `command` (a [`Sandbox::keyport`] the caller prepared further).
    pub fn serve_command(&self, mut command: Command, env: &[(&str, &str)]) -> Daemon {
        use std::io::BufRead;
        let mut child = command
            .args([
                "serve",
                "--ssh-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // stdout and stderr come through different threads, in either order.
        let (mut url, mut ssh_port, mut ready) = (None, None, false);
        while url.is_none() || ssh_port.is_none() || !ready {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                break;
            };
            if let Some(rest) = line.strip_prefix("api listening on ") {
                url = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("ssh listening on ") {
                ssh_port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            ready |= line.contains("keyport ready");
        }
        let (Some(url), Some(ssh_port), true) = (url, ssh_port, ready) else {
            let _ = child.kill();
            panic!(
                "serve did not start within 30 s:\n{}",
                output.lock().unwrap()
            );
        };
        Daemon {
            child,
            url,
            ssh_port,
            output,
        }
    }

    /// A client key pair in this sandbox's `~/.ssh` (the first start takes `~/.ssh/*.pub` as
    /// the admin's login keys). Returns the private key's path.
    pub fn client_key(&self, name: &str) -> PathBuf {
        let path = self.home().join(".ssh").join(name);
        if !path.exists() {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
        }
        path
    }

    /// The bootstrap admin's token from the credentials file `serve` wrote.
    pub fn bootstrap_token(&self) -> String {
        let text = std::fs::read_to_string(self.home().join(".config/keyport/cli.toml")).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        value["token"].as_str().unwrap().to_string()
    }
}

impl Daemon {
    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.child.wait().unwrap()
    }

    /// Kills the daemon with SIGKILL (a crash: nothing of it runs after) and reaps it.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A minimal HTTP client for tests: every status is an answer, never an error.
pub struct Http {
    agent: ureq::Agent,
    pub base: String,
    pub token: Option<String>,
    /// Every response body this client received, for "no value in any response" checks.
    pub seen: std::sync::Mutex<String>,
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Http {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            base: base.to_string(),
            token: token.map(str::to_string),
            seen: std::sync::Mutex::new(String::new()),
        }
    }

    /// `METHOD /api/v1/PATH` with an optional raw body (sent as JSON unless `content_type`).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: Option<&str>,
    ) -> Reply {
        let url = format!("{}/api/v1/{path}", self.base);
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header("Content-Type", content_type.unwrap_or("application/json"));
        }
        let request = builder
            .body(body.map(<[u8]>::to_vec).unwrap_or_default())
            .unwrap();
        let mut response = self.agent.run(request).unwrap();
        let reply = Reply {
            status: response.status().as_u16(),
            body: response.body_mut().read_to_string().unwrap_or_default(),
        };
        self.seen.lock().unwrap().push_str(&reply.body);
        reply
    }

    /// Announces a `len`-byte JSON body for `POST path` and sends only the headers: the
    /// server must refuse from Content-Length alone. Returns the status it answers with.
    /// (Sending the whole body races the server closing the connection after its 413.)
    pub fn oversized_post(&self, path: &str, len: usize) -> u16 {
        use std::io::{BufRead, Write};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "POST /api/v1/{path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .unwrap();
        let mut status_line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut status_line)
            .unwrap();
        status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Fails if any response body so far contained `value`.
    pub fn assert_never_returned(&self, value: &str) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.contains(value), "a response carried {value}");
    }

    pub fn get(&self, path: &str) -> Reply {
        self.raw("GET", path, None, None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.raw("DELETE", path, None, None)
    }

    pub fn send(&self, method: &str, path: &str, body: &serde_json::Value) -> Reply {
        self.raw(method, path, Some(body.to_string().as_bytes()), None)
    }

    /// Every audit event (all pages) whose action is `action`.
    pub fn audit_rows(&self, action: &str) -> Vec<serde_json::Value> {
        let (mut rows, mut after) = (Vec::new(), 0);
        loop {
            let r = self.get(&format!("audit?limit=1000&after={after}"));
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.json().as_array().unwrap().clone();
            let Some(last) = page.last() else {
                return rows;
            };
            after = last["id"].as_i64().unwrap();
            let full = page.len() == 1000;
            rows.extend(page.into_iter().filter(|e| e["action"] == action));
            if !full {
                return rows;
            }
        }
    }
}

impl Daemon {
    /// The real OpenSSH client, logging in as `user` with `key`, to this daemon; no known-hosts
    /// file, no agent, no config file, only that key offered.
    pub fn ssh(&self, user: &str, key: &Path) -> Command {
        self.ssh_with(user, key, &[])
    }

    /// [`Daemon::ssh`] with more client options (`-c CIPHER`, `-o …`) before the host.
    pub fn ssh_with(&self, user: &str, key: &Path, options: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(ssh_options(key))
            .args(options)
            .arg("-p")
            .arg(self.ssh_port.to_string())
            .arg(format!("{user}@127.0.0.1"))
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// `scp` to or from this daemon (remote paths as `127.0.0.1:PATH`).
    pub fn scp(&self, user: &str, key: &Path, from: &str, to: &str) -> Output {
        Self::scp_command(user, key, self.ssh_port, from, to)
            .output()
            .unwrap()
    }

    /// `sftp -b -` to this daemon with `batch` as its commands.
    pub fn sftp(&self, user: &str, key: &Path, batch: &str) -> Output {
        let mut child = Self::sftp_command(user, key, self.ssh_port, &["-b", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `sftp` with `options` to a daemon on `port`.
    pub fn sftp_command(user: &str, key: &Path, port: u16, options: &[&str]) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.args(ssh_options(key))
            .args(["-P", &port.to_string()])
            .args(options)
            .arg(format!("{user}@127.0.0.1"))
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// The `scp` command [`Daemon::scp`] runs, for a daemon on `port`.
    pub fn scp_command(user: &str, key: &Path, port: u16, from: &str, to: &str) -> Command {
        let remote = |p: &str| p.replace("127.0.0.1:", &format!("{user}@127.0.0.1:"));
        let mut cmd = Command::new("scp");
        cmd.args(ssh_options(key))
            .arg("-P")
            .arg(port.to_string())
            .args([remote(from), remote(to)])
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }
}

fn ssh_options(key: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([key.display().to_string()])
    .collect()
}

/// The value of the Prometheus sample `name` (exact name, no labels) in `metrics`.
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
}

/// A daemon whose bootstrap admin (named after the OS user) logs in over SSH with
/// `~/.ssh/id_ed25519`, and that admin's API client.
pub fn ssh_daemon(env: &[(&str, &str)]) -> (Sandbox, Daemon, PathBuf, Http) {
    require_tool("ssh");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let daemon = sb.serve_with(env);
    let api = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    (sb, daemon, key, api)
}

/// An OS account made for one test and removed after it.
pub struct OsAccount {
    pub name: String,
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl OsAccount {
    pub fn create(prefix: &str) -> Self {
        // A name no account has yet: an existing one is never touched. Tests in other threads
        // pick names too: useradd refusing a name taken meanwhile (exit 9) means the next one.
        let name = (0..100)
            .map(|n| format!("{prefix}{}{n}", std::process::id() % 100_000))
            .filter(|name| keyport::osuser::lookup(name).is_err())
            .find(|name| {
                let status = Command::new("useradd")
                    .args(["-m", "-s", "/bin/sh", name])
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(
                    status.success() || status.code() == Some(9),
                    "useradd {name}"
                );
                status.success()
            })
            .unwrap();
        // Not locked (sshd refuses locked accounts), and no password either.
        let status = Command::new("usermod")
            .args(["-p", "*", &name])
            .status()
            .unwrap();
        assert!(status.success(), "usermod {name}");
        let os = keyport::osuser::lookup(&name).unwrap();
        Self {
            name,
            home: PathBuf::from(os.home),
            uid: os.uid,
            gid: os.gid,
        }
    }
}

impl Drop for OsAccount {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A keyport user `name` on OS account `account`, logging in with a fresh client key; returns
/// that key and the user's API client.
pub fn keyport_user(
    sb: &Sandbox,
    daemon: &Daemon,
    admin: &Http,
    name: &str,
    account: &OsAccount,
) -> (PathBuf, Http) {
    let key = sb.client_key(&format!("{name}_login"));
    let line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = admin.send(
        "POST",
        "users",
        &serde_json::json!({"name": name, "os_user": account.name, "login_keys": [line]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = sb.ok(&["token", "create", "t", "--user", name]);
    (key, Http::new(&daemon.url, Some(token.trim())))
}
