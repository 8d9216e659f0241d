//! Local-mode SSH sessions through the real OpenSSH client: secrets injected into every new
//! session by design.md's precedence, live changes, exit codes and signals, stdio, a pty, scp
//! over the sftp subsystem, per-user isolation under concurrency, logins refused alike for
//! unknown users and wrong keys, and no value in the daemon's most verbose log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{Daemon, Http, me, require_tool};
use serde_json::json;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A daemon whose bootstrap admin (named after the OS user) logs in with `id_ed25519`.
use common::ssh_daemon as started;

/// Runs `command` over SSH as the admin and returns the output.
fn run(daemon: &Daemon, key: &Path, command: &str) -> Output {
    daemon
        .ssh(&me().name, key)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs ssh with `args`, writes `input` to its stdin and closes it; returns the output.
fn with_stdin(daemon: &Daemon, key: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = daemon
        .ssh(&me().name, key)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(daemon: &Daemon, key: &Path, command: &str) -> String {
    let out = run(daemon, key, command);
    assert!(out.status.success(), "{command}: {:?}", text(&out));
    text(&out).0
}

#[test]
fn secrets_win_over_operator_and_client_env_and_the_daemons_env_never_leaks() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("keyport.toml");
    std::fs::write(
        &config,
        "accept_env = [\"LANG\", \"LC_*\", \"TOKEN\", \"CLIENT_ONLY\"]\n\
         [env]\nTOKEN = \"from-operator\"\nOPERATOR_ONLY = \"op\"\n",
    )
    .unwrap();
    let (_sb, daemon, key, api) = started(&[
        ("KEYPORT_CONFIG", config.to_str().unwrap()),
        ("KEYPORT_CANARY", "canary-Zr81xQ"),
    ]);
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "token", "value": "from-secret", "env": "TOKEN"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let out = daemon
        .ssh(&me().name, &key)
        .args([
            "-o",
            "SetEnv=TOKEN=from-client CLIENT_ONLY=c REFUSED_X=r LANG=C.UTF-8",
        ])
        .arg("env")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (env, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let has = |line: &str| env.lines().any(|l| l == line);
    assert!(
        has("TOKEN=from-secret"),
        "a secret beats operator and client env:\n{env}"
    );
    assert!(has("OPERATOR_ONLY=op"), "{env}");
    assert!(has("CLIENT_ONLY=c"), "accepted client env applies:\n{env}");
    assert!(has("LANG=C.UTF-8"), "{env}");
    assert!(
        !env.contains("REFUSED_X"),
        "refused client env is not applied:\n{env}"
    );
    assert!(
        !env.contains("canary-Zr81xQ") && !env.contains("KEYPORT_CANARY"),
        "daemon env leaked:\n{env}"
    );
    assert!(
        has(&format!("USER={}", me().name)) && has(&format!("HOME={}", me().home)),
        "{env}"
    );
    assert!(
        env.lines()
            .any(|l| l.starts_with("SSH_CONNECTION=127.0.0.1 ")),
        "{env}"
    );
    assert!(has(&format!("KEYPORT_USER={}", me().name)), "{env}");
}

#[test]
fn a_change_shows_in_the_next_session_without_a_restart() {
    let (_sb, daemon, key, api) = started(&[]);
    assert_eq!(run(&daemon, &key, "printenv LIVE").status.code(), Some(1));
    api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "live", "value": "v1", "env": "LIVE"}),
    );
    assert_eq!(stdout(&daemon, &key, "printenv LIVE"), "v1\n");
    api.send(
        "PATCH",
        "users/me/secrets/live",
        &json!({"value": "second-live-value"}),
    );
    assert_eq!(
        stdout(&daemon, &key, "printenv LIVE"),
        "second-live-value\n"
    );
    api.send("PATCH", "users/me/secrets/live", &json!({"enabled": false}));
    assert_eq!(
        run(&daemon, &key, "printenv LIVE").status.code(),
        Some(1),
        "disabled: gone"
    );
    api.send(
        "PATCH",
        "users/me/secrets/live",
        &json!({"enabled": true, "value": "v3\nwith newline"}),
    );
    assert_eq!(
        stdout(&daemon, &key, "printenv LIVE"),
        "v3\nwith newline\n",
        "byte-exact"
    );
    assert_eq!(api.delete("users/me/secrets/live").status, 204);
    assert_eq!(
        run(&daemon, &key, "printenv LIVE").status.code(),
        Some(1),
        "deleted: gone"
    );
    // Each session's start is audited with the names it received, never the values: the six
    // sessions above got nothing, `live`, `live`, nothing (disabled), `live`, nothing.
    let want = vec![
        vec![],
        vec!["live"],
        vec!["live"],
        vec![],
        vec!["live"],
        vec![],
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (audit, names) = loop {
        let audit = api.get("audit").body;
        let events: Vec<serde_json::Value> = serde_json::from_slice(audit.as_bytes()).unwrap();
        let names: Vec<Vec<String>> = events
            .iter()
            .filter(|e| e["action"] == "session.start")
            .map(|e| {
                e["detail"]["secrets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
                    .collect()
            })
            .collect();
        // Session starts are recorded off the session's path: wait for the sixth.
        if names.len() >= want.len() || std::time::Instant::now() > deadline {
            break (audit, names);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(names, want, "session.start names: {audit}");
    // The injection counter counts the sessions that received a secret: three of the six.
    let metrics = common::Http::new(&daemon.url, None).get("metrics").body;
    assert_eq!(
        common::metric(&metrics, "keyport_ssh_injections_total"),
        3.0,
        "{metrics}"
    );
    // (A short value like "v2" could turn up inside a base64 fingerprint by chance.)
    assert!(!audit.contains("second-live-value") && !audit.contains("with newline"));
}

#[test]
fn exit_codes_signals_stdio_and_stdin_eof() {
    let (_sb, daemon, key, _api) = started(&[]);
    for code in [0, 1, 3, 255] {
        let out = run(&daemon, &key, &format!("exit {code}"));
        assert_eq!(
            out.status.code(),
            Some(code),
            "exit {code}: {:?}",
            text(&out)
        );
        // 255 is also what ssh says for its own errors: there must have been none.
        assert_eq!(text(&out).1, "", "exit {code}");
    }
    let out = run(&daemon, &key, "echo to-out; echo to-err >&2");
    assert_eq!(
        text(&out),
        ("to-out\n".to_string(), "to-err\n".to_string()),
        "kept apart"
    );

    // stdin reaches the command and its end is passed on (cat ends).
    let out = with_stdin(&daemon, &key, &["cat; echo END"], b"line one\nline two");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line one\nline twoEND\n"
    );

    // A command killed by a signal is reported as exit-signal, which ssh turns into 255.
    let out = daemon
        .ssh(&me().name, &key)
        .args(["-v", "kill -9 $$"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out).1.contains("rtype exit-signal"),
        "{}",
        text(&out).1
    );
}

#[test]
fn a_pty_session_has_a_terminal_and_the_clients_term() {
    let (_sb, daemon, key, _api) = started(&[]);
    let out = daemon
        .ssh(&me().name, &key)
        .args([
            "-tt",
            "tty; echo TERM=$TERM; echo SSH_TTY=$SSH_TTY; stat -c owner=%U:%a $(tty)",
        ])
        .env("TERM", "xterm-keyport")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (got, err) = text(&out);
    assert!(out.status.success(), "{got}{err}");
    assert!(got.contains("/dev/pts/"), "{got}");
    assert!(got.contains("TERM=xterm-keyport"), "{got}");
    let tty = got.lines().next().unwrap().trim();
    assert!(got.contains(&format!("SSH_TTY={tty}")), "{got}");
    assert!(
        got.contains(&format!("owner={}:620", me().name)),
        "the terminal is the user's: {got}"
    );
}

#[test]
fn a_shell_request_runs_the_login_shell_in_home() {
    let (_sb, daemon, key, _api) = started(&[]);
    let out = with_stdin(
        &daemon,
        &key,
        &["-tt"],
        b"echo argv0=$0 pwd=$(pwd); exit 4\n",
    );
    let got = String::from_utf8_lossy(&out.stdout);
    let shell = keyport::osuser::current().unwrap().shell;
    let base = shell.rsplit('/').next().unwrap();
    assert!(
        got.contains(&format!("argv0=-{base} pwd={}", me().home)),
        "{got}"
    );
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn scp_and_sftp_move_ten_megabytes_both_ways_byte_exact() {
    require_tool("scp");
    let (sb, daemon, key, _api) = started(&[]);
    let mut data = Vec::with_capacity(10 * 1024 * 1024);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 10 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let local = sb.dir.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = sb.dir.path().join("remote.bin");
    let out = daemon.scp(
        &me().name,
        &key,
        local.to_str().unwrap(),
        &format!("127.0.0.1:{}", remote.display()),
    );
    assert!(out.status.success(), "upload: {:?}", text(&out));
    assert_eq!(std::fs::read(&remote).unwrap(), data, "upload byte-exact");
    let back = sb.dir.path().join("down.bin");
    let out = daemon.scp(
        &me().name,
        &key,
        &format!("127.0.0.1:{}", remote.display()),
        back.to_str().unwrap(),
    );
    assert!(out.status.success(), "download: {:?}", text(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data, "download byte-exact");

    // And `sftp` itself, in batch mode: mkdir, put, rename, ls, get, rm.
    require_tool("sftp");
    let dir = sb.dir.path().join("sftp-dir");
    let again = sb.dir.path().join("again.bin");
    let batch = format!(
        "mkdir {dir}\nput {local} {dir}/a.bin\nrename {dir}/a.bin {dir}/b.bin\nls {dir}\n\
         get {dir}/b.bin {again}\nrm {dir}/b.bin\n",
        dir = dir.display(),
        local = local.display(),
        again = again.display()
    );
    let out = daemon.sftp(&me().name, &key, &batch);
    assert!(out.status.success(), "sftp: {:?}", text(&out));
    assert!(text(&out).0.contains("b.bin"), "ls: {:?}", text(&out));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        data,
        "sftp round trip byte-exact"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "rm removed it");
}

#[test]
fn fifty_concurrent_sessions_each_get_only_their_own_secrets() {
    // 50 logins at once from one address: more unauthenticated connections than sshd's
    // MaxStartups defaults let in (tests/limits.rs shows those), so this daemon has room.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[ssh]\nmax_startups = \"100:30:200\"\nper_source_startups = 100\nper_source_rate = 1000\n",
    )
    .unwrap();
    let (sb, daemon, alice_key, api) =
        started(&[("KEYPORT_CONFIG", config.path().to_str().unwrap())]);
    let bob_key = sb.client_key("bob_key");
    let bob_pub = std::fs::read_to_string(bob_key.with_extension("pub")).unwrap();
    let r = api.send(
        "POST",
        "users",
        &json!({"name": "bob", "os_user": me().name, "login_keys": [bob_pub]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "t", "value": "alice-value", "env": "TOKEN"}),
    );
    let bob_token = sb
        .ok(&["token", "create", "t", "--user", "bob"])
        .trim()
        .to_string();
    let bob = Http::new(&daemon.url, Some(&bob_token));
    bob.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "t", "value": "bob-value", "env": "TOKEN"}),
    );
    let daemon = &daemon;
    std::thread::scope(|scope| {
        let sessions: Vec<_> = (0..50)
            .map(|i| {
                let (user, key, want) = if i % 2 == 0 {
                    (me().name, alice_key.clone(), "alice-value")
                } else {
                    ("bob".to_string(), bob_key.clone(), "bob-value")
                };
                scope.spawn(move || {
                    let out = daemon
                        .ssh(&user, &key)
                        .arg("printenv TOKEN; printenv KEYPORT_USER")
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    (user, want, out)
                })
            })
            .collect();
        for session in sessions {
            let (user, want, out) = session.join().unwrap();
            assert!(out.status.success(), "{user}: {:?}", text(&out));
            assert_eq!(
                text(&out).0,
                format!("{want}\n{user}\n"),
                "{user} got another's secret"
            );
        }
    });
}

#[test]
fn unknown_users_and_wrong_keys_are_refused_alike() {
    let (sb, daemon, key, api) = started(&[]);
    let stranger = sb.client_key("stranger");
    let unknown_user = daemon
        .ssh("nobody-here", &key)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let wrong_key = daemon
        .ssh(&me().name, &stranger)
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    for out in [&unknown_user, &wrong_key] {
        assert_eq!(out.status.code(), Some(255));
        assert!(
            text(out).1.contains("Permission denied (publickey)"),
            "{:?}",
            text(out)
        );
    }
    assert_eq!(
        text(&unknown_user).1.replace("nobody-here", "X"),
        text(&wrong_key).1.replace(&me().name, "X")
    );
    // Failures are audited once the connection ends: the first from an address at once, the
    // rest of the window's in one row later (tests/limits.rs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = api.get("audit").body;
        if audit.matches("ssh.login-failed").count() >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed login audited: {audit}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let metrics = Http::new(&daemon.url, None).get("metrics").body;
    assert_eq!(
        common::metric(&metrics, "keyport_ssh_auth_failures_total"),
        2.0,
        "{metrics}"
    );
}

#[test]
fn no_secret_value_in_the_daemon_log_at_the_most_verbose_level() {
    let (_sb, daemon, key, api) = started(&[("KEYPORT_LOG", "trace")]);
    let value = "log-canary-Pq93Lx7Wv";
    api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "c", "value": value, "env": "CANARY_ENV"}),
    );
    let file_value = "file-canary-Hs82Kd4Nm";
    let file = _sb.dir.path().join("canary-file");
    api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "f", "value": file_value, "file": file.display().to_string()}),
    );
    assert_eq!(
        stdout(&daemon, &key, "printenv CANARY_ENV"),
        format!("{value}\n")
    );
    api.send(
        "PATCH",
        "users/me/secrets/c",
        &json!({"value": format!("{value}-2")}),
    );
    assert_eq!(
        stdout(&daemon, &key, "printenv CANARY_ENV"),
        format!("{value}-2\n")
    );
    let log = daemon.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging is on"
    );
    assert!(log.contains("session start"), "{log}");
    assert!(!log.contains(value), "a secret value reached the log");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), file_value);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(file_value);
    assert!(
        !log.contains(file_value) && !log.contains(&encoded),
        "a file value reached the log"
    );
}
