//! What the workspace tests share (tests/workspaces.rs and tests/workspace_pin.rs): a sandbox
//! with users, host keys and their `ssh-keygen` fingerprints, the workspace audit trail, the
//! CLI's `show -o json`, a command fed a given stdin (or run on a terminal, typing an answer),
//! and API users on a running daemon.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::output::stderr;
use crate::common::{Daemon, Http, Sandbox, add_user, me, require_tool};

/// `ssh-keygen -l -f FILE`'s fingerprint (`SHA256:…`).
pub fn keygen_fingerprint(path: &std::path::Path) -> String {
    require_tool("ssh-keygen");
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path)
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

/// A key pair standing in for a workspace's host key: its public line and fingerprint.
pub fn host_key(sb: &Sandbox, name: &str) -> (String, String) {
    let path = sb.client_key(name).with_extension("pub");
    let line = std::fs::read_to_string(&path).unwrap().trim().to_string();
    (line, keygen_fingerprint(&path))
}

/// A sandbox with users alice, bob and carol (no daemon, so the CLI works on the data dir).
pub fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    let mut vault = sb.vault();
    for name in ["alice", "bob", "carol"] {
        add_user(&mut vault, name);
    }
    sb
}

/// The workspace events in the audit log: (action, actor, user, detail).
pub fn workspace_events(sb: &Sandbox) -> Vec<(String, String, String, Value)> {
    sb.vault()
        .audit_events(None, 0)
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("workspace."))
        .map(|e| (e.action, e.actor, e.user_name, e.detail))
        .collect()
}

/// `keyport workspace show NAME -o json`.
pub fn show_json(sb: &Sandbox, name: &str) -> Value {
    serde_json::from_str(&sb.ok(&["workspace", "show", name, "-o", "json"])).unwrap()
}

/// Runs `cmd` with `input` on its stdin (then end of file), collecting its output.
pub fn piped(cmd: &mut Command, input: &str) -> Output {
    crate::common::procs::output_with_input(cmd, std::sync::Arc::new(input.as_bytes().to_vec()))
}

/// `keyport ARGS` on a terminal (through `script`), typing `answer`.
pub fn on_a_terminal(sb: &Sandbox, args: &[&str], answer: &str) -> Output {
    require_tool("script");
    let template = sb.keyport();
    let mut cmd = Command::new("script");
    cmd.env_clear();
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    // Arguments here are plain words: quoting each in '' is enough for sh.
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_keyport"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect();
    piped(
        cmd.args(["-qec", &line.join(" "), "/dev/null"]),
        &format!("{answer}\n"),
    )
}

/// A keyport user on the daemon (running as this OS user) and their API client.
pub fn api_user(sb: &Sandbox, daemon: &Daemon, admin: &Http, name: &str) -> Http {
    let r = admin.send(
        "POST",
        "users",
        &json!({"name": name, "os_user": me().name}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = sb.ok(&["token", "create", "t", "--user", name]);
    Http::new(&daemon.url, Some(token.trim()))
}
