//! The real `keyport` binary on a real data dir: user and key commands, `ssh-keygen` agreeing
//! with the printed fingerprints, `serve`'s first start, config precedence, and bad input that
//! exits non-zero with one clear line and changes nothing. (Master key and data dir errors:
//! `master_key.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::output::{error_line, mode, stderr};
use common::{Sandbox, dump, me, require_tool};

fn ssh_keygen_fingerprint(sb: &Sandbox, line: &str) -> String {
    require_tool("ssh-keygen");
    let path = sb.dir.path().join("key.pub");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // "256 SHA256:… comment (ED25519)"
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// A client key pair in the sandbox's `~/.ssh`; returns its public key line.
fn client_key(sb: &Sandbox, name: &str) -> String {
    let path = sb.client_key(name);
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn user_add_and_key_show_agree_with_ssh_keygen_for_both_key_types() {
    let sb = Sandbox::new();
    let os = me().name;
    for (name, kind, prefix) in [
        ("alice", "ed25519", "ssh-ed25519 "),
        ("bob", "ecdsa-p256", "ecdsa-sha2-nistp256 "),
    ] {
        let added = sb.ok(&["user", "add", name, "--os-user", &os, "--key-type", kind]);
        assert!(added.contains(&format!("created user {name}")), "{added}");
        let shown = sb.ok(&["key", "show", "--user", name]);
        let mut lines = shown.lines();
        let line = lines.next().unwrap();
        assert!(line.starts_with(prefix), "{line}");
        assert!(line.ends_with(&format!("keyport:{name}")), "{line}");
        let fingerprint = lines
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        assert!(fingerprint.starts_with("SHA256:"));
        assert_eq!(ssh_keygen_fingerprint(&sb, line), fingerprint, "{kind}");
        // The same key as `user add` printed, and as JSON.
        assert!(added.contains(line));
        let json: serde_json::Value =
            serde_json::from_str(&sb.ok(&["key", "show", "--user", name, "-o", "json"])).unwrap();
        assert_eq!(json["fingerprint"], fingerprint.as_str());
        assert_eq!(json["algorithm"], kind);
        // Not the word "PRIVATE": the key itself, in any form, is in neither output.
        let custody = common::custody::Custody::of(&sb.vault().open_user_key(name).unwrap());
        assert_eq!(custody.found_in(shown.as_bytes()), None, "{shown}");
        assert_eq!(
            custody.found_in(json.to_string().as_bytes()),
            None,
            "{json}"
        );
    }
    // The whole key-show output is usable as an authorized_keys file.
    let path = sb.dir.path().join("authorized_keys");
    std::fs::write(&path, sb.ok(&["key", "show", "--user", "alice"])).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn users_and_login_keys_round_trip() {
    let sb = Sandbox::new();
    let os = me().name;
    let k1 = client_key(&sb, "k1");
    let k2 = client_key(&sb, "k2");
    let file = sb.dir.path().join("keys");
    std::fs::write(&file, format!("# laptop\n{k2}\n\n")).unwrap();
    sb.ok(&[
        "user",
        "add",
        "alice",
        "--admin",
        "--os-user",
        &os,
        "--login-key",
        &k1,
        "--login-key-file",
        file.to_str().unwrap(),
    ]);
    let listed = sb.ok(&["user", "list"]);
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(
        listed.contains("alice") && listed.contains("yes"),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&sb.ok(&["user", "list", "-o", "json"])).unwrap();
    assert_eq!(json[0]["name"], "alice");
    assert_eq!(json[0]["is_admin"], true);
    assert_eq!(json[0]["login_keys"], 2);

    let keys: serde_json::Value =
        serde_json::from_str(&sb.ok(&["login-key", "list", "--user", "alice", "-o", "json"]))
            .unwrap();
    let fp1 = keys[0]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(keys[0]["comment"], "k1");
    assert_eq!(ssh_keygen_fingerprint(&sb, &k1), fp1);

    sb.ok(&["login-key", "remove", "--user", "alice", &fp1]);
    let out = sb.run(&["login-key", "remove", "--user", "alice", &fp1]);
    assert_eq!(out.status.code(), Some(3), "not found");
    assert!(
        error_line(&out).contains("not found"),
        "{}",
        error_line(&out)
    );
    sb.ok(&["login-key", "add", "--user", "alice", &k1]);
    let out = sb.run(&["login-key", "add", "--user", "alice", &k1]);
    assert_eq!(out.status.code(), Some(4), "conflict: {}", stderr(&out));
    sb.ok(&["login-key", "remove", "--user", "alice", &k2]);
    let listed = sb.ok(&["login-key", "list", "--user", "alice"]);
    assert!(
        listed.contains(&fp1) && listed.lines().count() == 2,
        "{listed}"
    );

    // Removing needs -y without a terminal.
    let out = sb.run(&["user", "remove", "alice"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(error_line(&out).contains("-y"), "{}", error_line(&out));
    // The last admin stays.
    let out = sb.run(&["user", "remove", "alice", "-y"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        error_line(&out).contains("alice is the last admin"),
        "{}",
        error_line(&out)
    );
    sb.ok(&["user", "add", "root2", "--admin", "--os-user", &os]);
    sb.ok(&["user", "remove", "alice", "-y"]);
    let left: serde_json::Value =
        serde_json::from_str(&sb.ok(&["user", "list", "-o", "json"])).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["name"], "root2");
}

#[test]
fn bad_input_exits_non_zero_with_one_line_and_changes_nothing() {
    let sb = Sandbox::new();
    let os = me().name;
    sb.ok(&["user", "add", "alice", "--os-user", &os]);
    let private = sb.dir.path().join("id");
    client_key(&sb, "id");
    std::fs::copy(sb.home().join(".ssh/id"), &private).unwrap();
    let before = dump(&sb.db());
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["user", "add", "alice", "--os-user", &os],
            4,
            "user: a user named alice already exists",
        ),
        (
            &["user", "add", "_bad", "--os-user", &os],
            2,
            "user: must be",
        ),
        (
            &["user", "add", "a:b", "--os-user", &os],
            2,
            "user: must be",
        ),
        (
            &["user", "add", "me", "--os-user", &os],
            2,
            "user: 'me' is reserved",
        ),
        (
            &["user", "add", "carol", "--os-user", "no-such-os-user-xyz"],
            2,
            "os-user: no OS account",
        ),
        (
            &[
                "user",
                "add",
                "carol",
                "--os-user",
                &os,
                "--login-key",
                "ssh-ed25519 AAAA",
            ],
            2,
            "login-key: line 1: not an OpenSSH public key",
        ),
        (
            &[
                "user",
                "add",
                "carol",
                "--os-user",
                &os,
                "--login-key-file",
                private.to_str().unwrap(),
            ],
            2,
            "login-key: line 1: this is a private key",
        ),
        (
            &[
                "user",
                "add",
                "carol",
                "--os-user",
                &os,
                "--login-key-file",
                "/nonexistent/keys",
            ],
            2,
            "login-key-file /nonexistent/keys",
        ),
        (
            &["user", "add", "carol", "--key-type", "rsa"],
            2,
            "invalid value 'rsa'",
        ),
        (
            &["user", "remove", "nobody", "-y"],
            3,
            "user nobody not found",
        ),
        (
            &["key", "show", "--user", "nobody"],
            3,
            "user nobody not found",
        ),
        (
            &["login-key", "list", "--user", "nobody"],
            3,
            "user nobody not found",
        ),
        (
            &["login-key", "remove", "--user", "alice", "SHA256:nope"],
            3,
            "login key SHA256:nope not found",
        ),
    ];
    for (args, code, message) in cases {
        let out = sb.run(args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains(message), "{args:?}: {text}");
        if *code != 2 || !message.starts_with("invalid value") {
            let line = error_line(&out);
            assert!(line.starts_with("keyport: "), "{args:?}: {line}");
        }
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        assert_eq!(dump(&sb.db()), before, "{args:?} changed the database");
    }
}

#[test]
fn serve_first_start_creates_the_data_dir_and_an_admin_then_restarts_cleanly() {
    let sb = Sandbox::new();
    let key = client_key(&sb, "id_ed25519");
    std::fs::write(sb.home().join(".ssh/broken.pub"), "not a key\n").unwrap();
    // Port 0 for both listeners: a keyport already running on 2222 and 7070 (the README's
    // first command) must not fail this test.
    let first = serve_until_ready(&sb);
    assert!(first.contains("host key fingerprint: SHA256:"), "{first}");
    let os = me().name;
    assert!(
        first.contains(&format!(
            "created admin user {os} with 1 login key from ~/.ssh"
        )),
        "{first}"
    );
    // It says how to connect, with the address it really listens on, and where the CLI's
    // credentials went.
    let listening = |what: &str| {
        first
            .lines()
            .find_map(|l| l.strip_prefix(what))
            .unwrap_or_else(|| panic!("no '{what}' line: {first}"))
            .trim()
            .to_string()
    };
    let ssh_port = listening("ssh listening on ")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let api_url = listening("api listening on ");
    assert!(
        first.contains(&format!("connect: ssh -p {ssh_port} {os}@127.0.0.1\n")),
        "{first}"
    );
    let creds = sb.home().join(".config/keyport/cli.toml");
    assert!(
        first.contains(&format!("uses the credentials in {}", creds.display())),
        "{first}"
    );
    // Root is told what that means: every user's data in one dir, sessions as their accounts.
    assert_eq!(
        first.contains("running as root:") && first.contains("their own OS account"),
        keyport::osuser::is_root(),
        "{first}"
    );
    assert_eq!(mode(&sb.data()), 0o700);
    // Every file in the data dir, whatever SQLite or the lock made: 0600.
    let files: Vec<_> = std::fs::read_dir(sb.data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for name in ["keyport.db", "master.key", "lock"] {
        assert!(files.contains(&sb.data().join(name)), "{name}: {files:?}");
    }
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&creds), 0o600);
    assert_eq!(mode(creds.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&creds).unwrap();
    assert!(
        text.contains(&format!("url = \"{api_url}\"")) && text.contains("token = \"kpt_"),
        "{text}"
    );
    // The host key is stored sealed: no key file in the data dir.
    let names: Vec<String> = std::fs::read_dir(sb.data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("keyport.db") || n == "master.key" || n == "lock"),
        "{names:?}"
    );
    let users: serde_json::Value =
        serde_json::from_str(&sb.ok(&["user", "list", "-o", "json"])).unwrap();
    assert_eq!(users[0]["name"], os.as_str());
    assert_eq!(users[0]["is_admin"], true);
    let keys = sb.ok(&["login-key", "list", "--user", &os]);
    assert!(keys.contains(&ssh_keygen_fingerprint(&sb, &key)), "{keys}");

    let second = serve_until_ready(&sb);
    let fp = |s: &str| {
        s.lines()
            .find(|l| l.contains("host key fingerprint"))
            .unwrap()
            .to_string()
    };
    assert_eq!(fp(&first), fp(&second), "the host key persists");
    assert!(!second.contains("created admin user"), "{second}");
}

/// Starts `keyport serve` on ports the kernel picks, waits for its ready log line, stops it
/// with SIGTERM and returns its stdout. Checks it exits 0.
fn serve_until_ready(sb: &Sandbox) -> String {
    let mut child = sb
        .keyport()
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log on a thread, so a daemon that never gets ready fails the test after a
    // deadline instead of hanging it.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("keyport ready") {
            break;
        }
    }
    if !log.contains("keyport ready") {
        let _ = child.kill();
        panic!("serve did not get ready within 30 s:\n{log}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "serve exited with {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn config_precedence_is_flag_over_env_over_file_over_default() {
    let sb = Sandbox::new();
    let printed = sb.ok(&["config", "print-default"]);
    assert!(
        printed.contains("ssh_listen = \"127.0.0.1:2222\""),
        "{printed}"
    );
    let dir = |n: &str| sb.dir.path().join(n);
    let config = dir("keyport.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir("from-file").display()),
    )
    .unwrap();
    let os = me().name;
    let mut cmd = sb.keyport();
    cmd.env_remove("KEYPORT_DATA_DIR")
        .env("KEYPORT_CONFIG", &config);
    assert!(
        cmd.args(["user", "add", "f", "--os-user", &os])
            .status()
            .unwrap()
            .success()
    );
    assert!(dir("from-file/keyport.db").exists());

    let mut cmd = sb.keyport();
    cmd.env("KEYPORT_CONFIG", &config)
        .env("KEYPORT_DATA_DIR", dir("from-env"));
    assert!(
        cmd.args(["user", "add", "e", "--os-user", &os])
            .status()
            .unwrap()
            .success()
    );
    assert!(dir("from-env/keyport.db").exists());

    let mut cmd = sb.keyport();
    cmd.env("KEYPORT_CONFIG", &config)
        .env("KEYPORT_DATA_DIR", dir("from-env"));
    let flag = dir("from-flag");
    assert!(
        cmd.args([
            "--data-dir",
            flag.to_str().unwrap(),
            "user",
            "add",
            "g",
            "--os-user",
            &os
        ])
        .status()
        .unwrap()
        .success()
    );
    assert!(dir("from-flag/keyport.db").exists());
    // After the subcommand too (where `--help` shows it), beating one before it.
    let mut cmd = sb.keyport();
    cmd.env("KEYPORT_DATA_DIR", dir("from-env"));
    let after = dir("after-subcommand");
    let args = ["--data-dir", flag.to_str().unwrap(), "user", "add", "h"];
    assert!(
        cmd.args(args)
            .args(["--os-user", &os, "--data-dir", after.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    assert!(after.join("keyport.db").exists());

    std::fs::write(&config, "no_such_setting = 1\n").unwrap();
    let out = sb
        .keyport()
        .env("KEYPORT_CONFIG", &config)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("no_such_setting"),
        "{}",
        error_line(&out)
    );
}
