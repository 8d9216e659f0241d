//! Nothing about a file secret fails silently: a target the OS account cannot write is told
//! in interactive sessions, recorded as the secret's delivery (`failed`, with the reason, in
//! the API's listing) and not counted as received in the audit's `session.start`; and a
//! managed file the user edited is never overwritten unseen — their version is saved beside
//! it as `FILE.keyport-saved` (0600), and the notice and the audit say so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Stdio;

use common::output::mode;
use common::{Daemon, OsAccount, keyport_user, me, require_tool};
use serde_json::json;

/// A pty session running `command`; returns what it printed (stdout, then stderr, where
/// keyport's notices go).
fn pty_session(daemon: &Daemon, user: &str, key: &Path, command: &str) -> String {
    let out = daemon
        .ssh(user, key)
        .args(["-tt", command])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output::stderr(&out));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn delivery_of<'a>(secrets: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let secret = secrets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no secret {name} in {secrets}"));
    &secret["deliveries"][0]
}

#[test]
fn an_unwritable_target_is_told_recorded_and_not_counted_as_received() {
    if !keyport::testing::needs_root("a session of a non-root OS account") {
        return;
    }
    require_tool("useradd");
    // Served from a binary every account can run: the session uses the in-session CLI.
    let sb = common::Sandbox::new();
    sb.client_key("id_ed25519");
    let daemon = sb.serve_public(&[]);
    let admin = common::Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let account = OsAccount::create("kpd");
    let (login, api) = keyport_user(&sb, &daemon, &admin, "nf", &account);
    // A directory only root could create: the account's own permissions say no.
    let target = format!("/etc/keyport-nowrite-{}/token", std::process::id());
    for body in [
        json!({"name": "blocked", "value": "v-blocked", "file": target}),
        json!({"name": "envok", "value": "v-env", "env": "ENV_OK"}),
    ] {
        let r = api.send("POST", "users/me/secrets", &body);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let shown = pty_session(&daemon, "nf", &login, "echo ENV_OK=$ENV_OK");
    assert!(
        shown.contains("keyport: file secret blocked was not written to /etc/keyport-nowrite-")
            && shown.contains("(keyport secret check)"),
        "{shown}"
    );
    assert!(shown.contains("ENV_OK=v-env"), "{shown}");
    assert!(!Path::new(&target).parent().unwrap().exists());
    let listed = api.get("users/me/secrets").json();
    let delivery = delivery_of(&listed, "blocked");
    assert_eq!(delivery["outcome"], "failed", "{listed}");
    assert_eq!(delivery["place"], account.name.as_str());
    assert_eq!(delivery["path"], target.as_str());
    assert!(
        delivery["reason"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{delivery}"
    );
    // The in-session CLI, with no login: the table and `secret check` say what failed.
    let out = daemon
        .ssh("nf", &login)
        .arg("keyport secret list; keyport secret check; echo rc=$?")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        common::output::stderr(&out)
    );
    assert!(
        said.contains("FAILED (") && said.contains("DELIVERED"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "blocked: not written to {target} (account {}",
            account.name
        )),
        "{said}"
    );
    assert!(said.contains("rc=1"), "{said}");
    let starts = admin.audit_rows("session.start");
    let start = starts
        .iter()
        .rev()
        .find(|r| r["user_name"] == "nf")
        .unwrap_or(&starts[0]);
    let received = start["detail"]["secrets"].to_string();
    assert!(
        !received.contains("blocked") && received.contains("envok"),
        "{start}"
    );
    assert!(
        start["detail"]["failed_files"]
            .to_string()
            .contains("blocked"),
        "{start}"
    );
}

#[test]
fn a_managed_file_the_user_edited_is_saved_beside_when_the_value_changes() {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    let file = sb.dir.path().join("cfg/npmrc");
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "npm", "value": "v1", "file": file.display().to_string()}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    pty_session(&daemon, &me().name, &key, "true");
    assert_eq!(std::fs::read(&file).unwrap(), b"v1");
    let listed = api.get("users/me/secrets").json();
    assert_eq!(
        delivery_of(&listed, "npm")["outcome"],
        "written",
        "{listed}"
    );
    // The user edits the file, then the value changes.
    std::fs::write(&file, "registry=mine\n").unwrap();
    let r = api.send("PATCH", "users/me/secrets/npm", &json!({"value": "v2"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = pty_session(&daemon, &me().name, &key, "true");
    let saved = format!("{}.keyport-saved", file.display());
    assert_eq!(std::fs::read(&file).unwrap(), b"v2");
    assert_eq!(std::fs::read(&saved).unwrap(), b"registry=mine\n");
    assert_eq!(mode(Path::new(&saved)), 0o600);
    assert!(
        shown.contains(&format!("had changes of yours: kept as {saved}")),
        "{shown}"
    );
    let audit = api.audit_rows("file.saved-edit");
    assert!(json!(audit).to_string().contains(&saved), "{audit:?}");
    // What keyport itself wrote is replaced without a copy.
    let r = api.send("PATCH", "users/me/secrets/npm", &json!({"value": "v3"}));
    assert_eq!(r.status, 200, "{}", r.body);
    pty_session(&daemon, &me().name, &key, "true");
    assert_eq!(std::fs::read(&file).unwrap(), b"v3");
    assert!(!Path::new(&format!("{saved}.1")).exists());
}
