//! Relay mode's harness: a root keyport daemon, keyport users with OS accounts of their own,
//! a workspace OS account behind a real OpenSSH sshd, the workspace registered with the
//! `keyport workspace` CLI, and the same command run through keyport (`alice:dev1@`) and
//! directly against the sshd, so tests can insist both answer alike.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::sshd::{Sshd, SshdBuilder};
use super::{Daemon, Http, OsAccount, Sandbox, keyport_user, require_tool, ssh_options};

/// The `AcceptEnv` line a workspace sshd needs for the secrets the tests give.
pub const ACCEPT_ENV: &str = "AcceptEnv GITHUB_TOKEN NPM_TOKEN KEYPORT_*";

/// What a command left: exit code (`None` when killed), stdout, stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

impl Ran {
    pub fn of(out: &Output) -> Self {
        Self {
            code: out.status.code(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Insists it exited 0; returns stdout.
    pub fn ok(self, what: &str) -> String {
        assert_eq!(self.code, Some(0), "{what}: {self:?}");
        self.out
    }

    /// The first stderr line, which keyport's own messages start with `keyport: `.
    pub fn first_err_line(&self) -> &str {
        self.err.lines().next().unwrap_or_default()
    }
}

/// Runs `cmd` with no stdin.
pub fn run(cmd: &mut Command) -> Ran {
    Ran::of(&cmd.stdin(Stdio::null()).output().unwrap())
}

/// Runs `cmd` with `input` on its stdin (written from a thread).
pub fn run_with_input(cmd: &mut Command, input: Arc<Vec<u8>>) -> Ran {
    Ran::of(&super::procs::output_with_input(cmd, input))
}

/// Asserts `ran` is a keyport failure message: exit 255, first stderr line `keyport: `, and
/// every one of `fragments` somewhere in stderr.
pub fn assert_keyport_failure(ran: &Ran, fragments: &[&str], what: &str) {
    assert_eq!(ran.code, Some(255), "{what}: {ran:?}");
    assert!(
        ran.first_err_line().starts_with("keyport: "),
        "{what}: stderr does not start with `keyport: `: {ran:?}"
    );
    for fragment in fragments {
        assert!(
            ran.err.contains(fragment),
            "{what}: stderr lacks {fragment:?}: {ran:?}"
        );
    }
}

/// An OS account made for one relay test: a name no earlier account of this test run had
/// (so no home an earlier one left behind is reused), and on drop, before the account is
/// removed, every process still running as it is killed (by pid): sshd leaves a session's
/// program running when its channel closes, and `userdel` refuses a busy account.
pub struct Account(OsAccount);

impl Account {
    pub fn create(prefix: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let account = OsAccount::create(&format!("{prefix}{n}x"));
        let owner = std::fs::metadata(&account.home).map(|m| m.uid()).ok();
        assert_eq!(
            owner,
            Some(account.uid),
            "{}'s home {} is not its own (left by an earlier account?)",
            account.name,
            account.home.display()
        );
        Self(account)
    }

    /// The pids running as this account.
    pub fn processes(&self) -> Vec<i32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                continue;
            };
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
            if uid == Some(self.0.uid) {
                found.push(pid);
            }
        }
        found
    }
}

impl std::ops::Deref for Account {
    type Target = OsAccount;
    fn deref(&self) -> &OsAccount {
        &self.0
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.processes();
            if left.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A keyport user: their login key, API client, local OS account and keyport public key line.
pub struct Member {
    pub name: String,
    pub login: PathBuf,
    pub api: Http,
    /// The OS account their *local* sessions run as (never the workspace's).
    pub local: Account,
    /// Their keyport key's public line (`ssh-ed25519 AAAA… keyport:NAME`).
    pub public: String,
}

impl Member {
    /// The public line without its comment: `ssh-ed25519 AAAA…`.
    pub fn public_blob(&self) -> String {
        self.public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The keyport key's `SHA256:` fingerprint.
    pub fn fingerprint(&self) -> String {
        keyport_keys::LoginKey::parse(&self.public)
            .unwrap()
            .fingerprint()
    }

    /// Creates a secret through the user's API (`spec` as `POST users/me/secrets` takes it).
    pub fn secret(&self, spec: serde_json::Value) {
        let r = self.api.send("POST", "users/me/secrets", &spec);
        assert_eq!(r.status, 201, "{spec}: {}", r.body);
    }
}

/// A root keyport daemon and its bootstrap admin. Fields drop in order: the daemon stops
/// (ending every upstream connection) before accounts and the sandbox go.
pub struct Gateway {
    pub daemon: Daemon,
    pub admin: Http,
    pub sb: Sandbox,
}

impl Gateway {
    /// `None` without root: OS accounts and a real sshd are needed.
    pub fn start(env: &[(&str, &str)]) -> Option<Self> {
        if !keyport::testing::needs_root("OS accounts behind a real sshd (relay mode)") {
            return None;
        }
        for tool in ["ssh", "sshd", "useradd", "ssh-keygen"] {
            require_tool(tool);
        }
        let sb = Sandbox::new();
        sb.client_key("id_ed25519");
        let daemon = sb.serve_with(env);
        let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
        Some(Self { daemon, admin, sb })
    }

    /// Adds keyport user `name` with a local OS account of their own.
    pub fn member(&self, name: &str) -> Member {
        let local = Account::create("kpl");
        let (login, api) = keyport_user(&self.sb, &self.daemon, &self.admin, name, &local);
        let out = self.sb.ok(&["key", "show", "--user", name, "-o", "json"]);
        let key: serde_json::Value = serde_json::from_str(&out).unwrap();
        Member {
            name: name.into(),
            login,
            api,
            local,
            public: key["public_key"].as_str().unwrap().trim().to_string(),
        }
    }

    /// `keyport workspace add NAME --address ADDR --os-user LOGIN --owner OWNER --host-key KEY`.
    pub fn add_workspace(&self, name: &str, address: &str, login: &str, owner: &str, key: &str) {
        self.sb.ok(&[
            "workspace",
            "add",
            name,
            "--address",
            address,
            "--os-user",
            login,
            "--owner",
            owner,
            "--host-key",
            key,
        ]);
    }

    /// `keyport workspace grant NAME USER [--os-user LOGIN]`.
    pub fn grant(&self, workspace: &str, user: &str, login: Option<&str>) {
        let mut args = vec!["workspace", "grant", workspace, user];
        if let Some(login) = login {
            args.extend(["--os-user", login]);
        }
        self.sb.ok(&args);
    }

    /// `ssh USER:WORKSPACE@keyport` with `key`.
    pub fn ssh(&self, user: &str, workspace: &str, key: &Path) -> Command {
        self.daemon.ssh(&format!("{user}:{workspace}"), key)
    }

    /// The Prometheus text of `/api/v1/metrics`.
    pub fn metrics(&self) -> String {
        Http::new(&self.daemon.url, None).get("metrics").body
    }

    /// The sample `name` (labels included, e.g. `x_total{kind="auth"}`); 0 when absent.
    pub fn sample(&self, name: &str) -> f64 {
        let metrics = self.metrics();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// `user`'s audit events with `action`.
    pub fn audit(&self, user: &str, action: &str) -> Vec<serde_json::Value> {
        self.admin
            .audit_rows(action)
            .into_iter()
            .filter(|e| e["user_name"] == user)
            .collect()
    }
}

/// The usual relay set-up: a gateway, `alice`, a workspace OS account behind an sshd that
/// accepts the secrets' env names, trusting alice's keyport key and a direct client key, and
/// workspace `dev1` pointing at it, owned by alice. Fields drop in order: the daemon first.
pub struct Relay {
    pub gw: Gateway,
    pub sshd: Sshd,
    pub alice: Member,
    /// The workspace's OS login.
    pub ws: Account,
    /// Further OS logins the sshd lets in (e.g. one of bob's own).
    pub others: Vec<Account>,
    /// A client key the sshd trusts for direct (not relayed) comparisons.
    pub direct: PathBuf,
}

impl Relay {
    /// `None` without root.
    pub fn start() -> Option<Self> {
        Self::start_with(&[], 0, |b| b)
    }

    /// As [`Relay::start`], the daemon with `env`, `others` more OS logins on the sshd, and
    /// the sshd configured by `sshd` further.
    pub fn start_with(
        env: &[(&str, &str)],
        others: usize,
        sshd: impl FnOnce(SshdBuilder) -> SshdBuilder,
    ) -> Option<Self> {
        let gw = Gateway::start(env)?;
        let alice = gw.member("alice");
        let ws = Account::create("kpw");
        let others: Vec<Account> = (0..others).map(|_| Account::create("kpv")).collect();
        let mut builder = Sshd::build(&gw.sb, "ws").login(&ws.name).config(ACCEPT_ENV);
        for other in &others {
            builder = builder.login(&other.name);
        }
        let sshd = sshd(builder).start();
        let direct = gw.sb.client_key("direct");
        let relay = Self {
            gw,
            sshd,
            alice,
            ws,
            others,
            direct,
        };
        relay
            .sshd
            .authorize(&[&relay.alice.public, &relay.direct_line()]);
        relay.gw.add_workspace(
            "dev1",
            &relay.sshd.address(),
            &relay.ws.name,
            "alice",
            relay.sshd.host_line(),
        );
        Some(relay)
    }

    /// `ssh alice:dev1@keyport`.
    pub fn relayed(&self) -> Command {
        self.gw.ssh("alice", "dev1", &self.alice.login)
    }

    /// `ssh WSLOGIN@sshd` with the direct key: the reference.
    pub fn direct(&self) -> Command {
        direct_ssh(&self.sshd, &self.ws.name, &self.direct)
    }

    /// The direct client key's public line.
    pub fn direct_line(&self) -> String {
        std::fs::read_to_string(self.direct.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// `scp` through keyport as `user` (`alice:dev1`: scp's own syntax takes the first `:` as
/// the end of the host, so the login name goes in `-o User=`); remote paths as
/// `127.0.0.1:PATH`; `extra` options first (e.g. `-O`).
pub fn scp(daemon: &Daemon, user: &str, key: &Path, extra: &[&str], from: &str, to: &str) -> Ran {
    let mut cmd = Command::new("scp");
    cmd.args(ssh_options(key))
        .args(["-o", &format!("User={user}")])
        .args(["-P", &daemon.ssh_port.to_string()])
        .args(extra)
        .args([from, to])
        .env_remove("SSH_AUTH_SOCK");
    run(&mut cmd)
}

/// `sftp -b -` through keyport as `user` (in `-o User=`, as for [`scp`]) running `batch`.
pub fn sftp(daemon: &Daemon, user: &str, key: &Path, batch: &str) -> Ran {
    let mut cmd = Command::new("sftp");
    cmd.args(ssh_options(key))
        .args(["-o", &format!("User={user}")])
        .args(["-P", &daemon.ssh_port.to_string(), "-b", "-", "127.0.0.1"])
        .env_remove("SSH_AUTH_SOCK");
    run_with_input(&mut cmd, Arc::new(batch.as_bytes().to_vec()))
}

/// A loopback port nothing listens on (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh ed25519 public key line no server holds (a wrong pin).
pub fn stranger_host_key(sb: &Sandbox, name: &str) -> String {
    let path = sb.dir.path().join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// The real `ssh` straight to `sshd` as `login` with `key` (the harness's options).
pub fn direct_ssh(sshd: &Sshd, login: &str, key: &Path) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(ssh_options(key))
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg(format!("{login}@127.0.0.1"))
        .env_remove("SSH_AUTH_SOCK");
    cmd
}

/// `cmd`'s program and arguments, for a pty driver.
pub fn argv(cmd: &Command) -> Vec<String> {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect()
}

/// `n` bytes that do not compress and do not repeat.
pub fn payload(n: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(n + 8);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while data.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(n);
    data
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sha256 of the file at `path`.
pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Names in an audit detail field: a JSON array of strings, or one string of names
/// separated by commas or spaces.
pub fn names(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        serde_json::Value::String(text) => text
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// What a russh client saw of one exec channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSeen {
    pub stdout: String,
    pub exit_status: Option<u32>,
    /// The exit-signal's name (`TERM`, `KILL`, …).
    pub exit_signal: Option<String>,
}

/// A russh client handler that trusts any host key (tests reach their own servers only).
pub struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Runs `command` on an exec channel of a russh client logged in to `port` as `user` with
/// `key`; once stdout has shown `ready`, sends `signal` (if any) as a `signal` request.
pub fn russh_exec(
    port: u16,
    user: &str,
    key: &Path,
    command: &str,
    signal: Option<russh::Sig>,
) -> ChannelSeen {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = Arc::new(russh::client::Config::default());
        let mut session = russh::client::connect(config, ("127.0.0.1", port), AnyHost)
            .await
            .unwrap();
        let private = russh::keys::load_secret_key(key, None).unwrap();
        let auth = session
            .authenticate_publickey(
                user,
                russh::keys::PrivateKeyWithHashAlg::new(Arc::new(private), None),
            )
            .await
            .unwrap();
        assert!(auth.success(), "{user} on port {port}: login refused");
        let mut channel = session.channel_open_session().await.unwrap();
        channel.exec(true, command).await.unwrap();
        let mut seen = ChannelSeen {
            stdout: String::new(),
            exit_status: None,
            exit_signal: None,
        };
        let mut sent = signal.is_none();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
            match msg {
                russh::ChannelMsg::Data { data } => {
                    seen.stdout.push_str(&String::from_utf8_lossy(&data));
                    if !sent && seen.stdout.contains("ready") {
                        sent = true;
                        if let Some(sig) = signal.clone() {
                            channel.signal(sig).await.unwrap();
                        }
                    }
                }
                russh::ChannelMsg::ExitStatus { exit_status } => {
                    seen.exit_status = Some(exit_status)
                }
                russh::ChannelMsg::ExitSignal { signal_name, .. } => {
                    seen.exit_signal = Some(format!("{signal_name:?}"))
                }
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
        seen
    })
}
