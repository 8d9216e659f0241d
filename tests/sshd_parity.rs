//! keyport answers as OpenSSH's sshd does where clients depend on it (issue 11): every case runs
//! the same client — paramiko or asyncssh for requests OpenSSH's client cannot send, else the
//! real `ssh`/`sftp` — against keyport and against a real sshd started for the test, and both
//! answers must be the one sshd is known to give.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::sshd::Sshd;
use common::{Daemon, OsAccount, Sandbox, keyport_user, require_tool, ssh_daemon};
use serde_json::{Value, json};

/// keyport and sshd, both letting one OS account in with one key (a non-root account: sshd
/// treats root logins differently, e.g. it refuses their `signal` requests).
struct Peers {
    sb: Sandbox,
    keyport: Daemon,
    sshd: Sshd,
    key: PathBuf,
    /// keyport's name for the user, and the OS account both servers run sessions as.
    user: String,
    account: OsAccount,
}

impl Peers {
    /// `None` without root (sshd needs it to start as a peer).
    fn start() -> Option<Self> {
        if !keyport::testing::needs_root("a real sshd to compare with") {
            return None;
        }
        require_tool("python3");
        let (sb, keyport, _admin_key, admin) = ssh_daemon(&[]);
        let account = OsAccount::create("kpsp");
        let user = "parity".to_string();
        let (key, _api) = keyport_user(&sb, &keyport, &admin, &user, &account);
        let sshd = Sshd::start(&sb, &account.name);
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        sshd.authorize(&[public.trim()]);
        Some(Self {
            sb,
            keyport,
            sshd,
            key,
            user,
            account,
        })
    }

    /// The login name on the server on `port`.
    fn login(&self, port: u16) -> &str {
        if port == self.sshd.port {
            &self.account.name
        } else {
            &self.user
        }
    }

    /// A directory the account owns, for files its sessions make.
    fn scratch(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        common::sshd::chown_tree(dir.path(), &self.account);
        dir
    }

    /// Runs `tests/clients/SCRIPT CASE` against both; returns (keyport's, sshd's) answers.
    fn probe(&self, script: &str, case: &str, arg: Option<&str>) -> (Value, Value) {
        (
            self.probe_port(script, case, arg, self.keyport.ssh_port),
            self.probe_port(script, case, arg, self.sshd.port),
        )
    }

    /// Runs `tests/clients/SCRIPT CASE` against the server on `port`.
    fn probe_port(&self, script: &str, case: &str, arg: Option<&str>, port: u16) -> Value {
        let run = |port: u16| {
            let out = Command::new("python3")
                .arg(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/clients")
                        .join(script),
                )
                .args([case, &port.to_string(), self.login(port)])
                .arg(&self.key)
                .args(arg)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script} {case} on port {port}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        run(port)
    }

    /// Asserts both servers answer `case` with `expected`.
    fn agree(&self, script: &str, case: &str, arg: Option<&str>, expected: Value) {
        let (keyport, sshd) = self.probe(script, case, arg);
        assert_eq!(sshd, expected, "sshd's answer to {case} (the reference)");
        assert_eq!(keyport, expected, "keyport's answer to {case}");
    }
}

#[test]
fn x11_req_is_refused_and_the_channel_still_runs_its_command() {
    let Some(peers) = Peers::start() else { return };
    let expected = json!({"x11-req": "failure", "exec": "success", "stdout": "hi\n", "status": 4});
    peers.agree("probe.py", "x11", None, expected);
}

#[test]
fn paramikos_request_x11_returns_and_the_connection_goes_on() {
    let Some(peers) = Peers::start() else { return };
    let expected = json!({"x11": "raised", "stdout": "after\n", "status": 3});
    peers.agree("probe.py", "x11-api", None, expected);
}

#[test]
fn plink_with_x_forwarding_exits_with_the_commands_status() {
    let Some(peers) = Peers::start() else { return };
    require_tool("plink");
    require_tool("puttygen");
    let ppk = peers.sb.dir.path().join("key.ppk");
    let status = Command::new("puttygen")
        .arg(&peers.key)
        .args(["-O", "private", "-o"])
        .arg(&ppk)
        .status()
        .unwrap();
    assert!(status.success());
    let run = |port: u16, fingerprint: &str| {
        Command::new("plink")
            .args(["-ssh", "-batch", "-X", "-P", &port.to_string(), "-i"])
            .arg(&ppk)
            .args([
                "-hostkey",
                fingerprint,
                "-l",
                peers.login(port),
                "127.0.0.1",
            ])
            .arg("echo hi; exit 4")
            .env("DISPLAY", ":99")
            .env("HOME", peers.sb.home())
            .output()
            .unwrap()
    };
    let keyport_fp = host_fingerprint(&peers.keyport);
    for (who, out) in [
        ("sshd", run(peers.sshd.port, &peers.sshd.host_fingerprint())),
        ("keyport", run(peers.keyport.ssh_port, &keyport_fp)),
    ] {
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned()
            ),
            (Some(4), "hi\n".to_string()),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// keyport's host key fingerprint, as `serve` printed it.
fn host_fingerprint(daemon: &Daemon) -> String {
    let log = daemon.log();
    log.lines()
        .find_map(|l| l.strip_prefix("host key fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in {log}"))
        .trim()
        .to_string()
}

#[test]
fn a_second_program_on_a_busy_channel_is_refused() {
    let Some(peers) = Peers::start() else { return };
    let expected =
        json!({"first": "success", "second": "failure", "stdout": "first\n", "status": 0});
    peers.agree("probe.py", "second-exec", None, expected);
}

#[test]
fn set_up_requests_after_the_program_started_are_refused() {
    let Some(peers) = Peers::start() else { return };
    let expected = json!({
        "env": "failure", "pty-req": "failure", "agent": "failure",
        "stdout": "done\n", "status": 0,
    });
    peers.agree("probe.py", "after-start", None, expected);
}

#[test]
fn break_reaches_a_pty_and_is_refused_without_one() {
    let Some(peers) = Peers::start() else { return };
    let expected = json!({
        "pty": "success", "no-pty": "failure", "pty-status": 5,
        "plain-status": 6, "plain-stdout": "plain\n",
    });
    peers.agree("probe.py", "break", None, expected);
    // A Linux pty shows no break to its programs; what keyport did is in its log.
    let log = peers.keyport.log();
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("break sent to the terminal"))
        .collect();
    assert_eq!(sent.len(), 1, "one break, on the pty channel:\n{log}");
    assert!(sent[0].contains("sent=true"), "{}", sent[0]);
}

#[test]
fn eow_closes_the_programs_stdout() {
    let Some(peers) = Peers::start() else { return };
    peers.agree("probe.py", "eow", None, json!({"status": 7}));
}

#[test]
fn no_more_sessions_is_honoured() {
    let Some(peers) = Peers::start() else { return };
    peers.agree(
        "probe.py",
        "no-more-sessions",
        None,
        json!({"second": "refused"}),
    );
}

#[test]
fn unknown_global_requests_are_refused() {
    let Some(peers) = Peers::start() else { return };
    peers.agree("probe.py", "global", None, json!({"keepalive": "failure"}));
}

#[test]
fn pty_terminal_modes_are_applied() {
    let Some(peers) = Peers::start() else { return };
    let expected = json!({"intr": "^A", "erase": "^H", "echo": false, "iutf8": true});
    peers.agree("asyncprobe.py", "modes", None, expected);
}

#[test]
fn sftp_symlinks_point_where_the_client_meant() {
    let Some(peers) = Peers::start() else { return };
    for (who, port) in [
        ("sshd", peers.sshd.port),
        ("keyport", peers.keyport.ssh_port),
    ] {
        let dir = peers.scratch();
        let base = dir.path().display().to_string();
        std::fs::write(dir.path().join("target.txt"), "t").unwrap();
        // asyncssh picks the argument order from the server's version string.
        let answer = peers.probe_port("asyncprobe.py", "symlink", Some(&base), port);
        assert_eq!(
            answer,
            json!({"link": format!("{base}/target.txt")}),
            "{who}"
        );
        let link = std::fs::read_link(dir.path().join("link.txt")).unwrap();
        assert_eq!(link, dir.path().join("target.txt"), "{who}: asyncssh");
        std::fs::remove_file(dir.path().join("link.txt")).unwrap();
        // OpenSSH's sftp sends its own order, whatever the server.
        let out = sftp(
            &peers,
            port,
            &format!("ln -s {base}/target.txt {base}/link.txt\n"),
        );
        assert!(
            out.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let link = std::fs::read_link(dir.path().join("link.txt")).unwrap();
        assert_eq!(link, dir.path().join("target.txt"), "{who}: sftp ln -s");
    }
}

fn sftp(peers: &Peers, port: u16, batch: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("sftp")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-i"])
        .arg(&peers.key)
        .args(["-P", &port.to_string(), "-b", "-"])
        .arg(format!("{}@127.0.0.1", peers.login(port)))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn compression_is_offered_after_authentication() {
    let Some(peers) = Peers::start() else { return };
    let out = peers
        .keyport
        .ssh(&peers.user, &peers.key)
        .args(["-C", "-v", "echo compressed"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "compressed\n",
        "{log}"
    );
    assert!(
        log.contains("compression: zlib@openssh.com"),
        "ssh -C did not negotiate zlib@openssh.com:\n{log}"
    );
}

#[test]
fn a_running_program_takes_window_changes_and_signals_and_nothing_unknown() {
    let Some(peers) = Peers::start() else { return };
    let expected = json!({
        "window-change": "success", "unknown": "failure", "signal": "success",
        "stdout": "got\n", "status": 3,
    });
    peers.agree("probe.py", "running", None, expected);
}

#[test]
fn unix_socket_forwarding_is_refused() {
    // sshd allows it by default (AllowStreamLocalForwarding yes); keyport forwards no sockets.
    let Some(peers) = Peers::start() else { return };
    let socket = peers.sb.dir.path().join("fwd.sock");
    let answer = peers.probe_port(
        "probe.py",
        "streamlocal",
        Some(socket.to_str().unwrap()),
        peers.keyport.ssh_port,
    );
    assert_eq!(answer, json!({"streamlocal-forward": "failure"}));
    assert!(!socket.exists());
}
