//! Re-pinning the host keys of a workspace whose sshd was rebuilt: `keyport workspace pin NAME
//! --host-key …` replaces every key pinned before; `--scan` against a real OpenSSH sshd prints
//! the fingerprints pinned beside the one it reads and pins only after a yes (a piped or typed
//! "no" changes nothing); bad input names its field and changes nothing; and
//! `PUT /api/v1/workspaces/{name}/host-keys` is for admins only (403 for users, owners
//! included; 404 for an unknown workspace), answering only statuses its OpenAPI description
//! declares. Each change is one `workspace.pinned` event with the old and new fingerprints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "workspaces/support.rs"]
mod support;

use std::collections::BTreeSet;

use common::output::{error_line, stderr};
use common::sshd::Sshd;
use common::{Http, Sandbox, dump, me};
use serde_json::{Value, json};
use support::{
    api_user, host_key, keygen_fingerprint, on_a_terminal, piped, sandbox, show_json,
    workspace_events,
};

/// The host keys of a workspace as `show -o json` or the API present them: (fingerprint,
/// source).
fn keys_of(info: &Value) -> Vec<(String, String)> {
    info["host_keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no host keys: {info}"))
        .iter()
        .map(|k| {
            let field = |name: &str| k[name].as_str().unwrap().to_string();
            (field("fingerprint"), field("source"))
        })
        .collect()
}

/// The details of the `workspace.pinned` events, oldest first, each with its actor.
fn pinned_events(sb: &Sandbox) -> Vec<(String, Value)> {
    workspace_events(sb)
        .into_iter()
        .filter(|(action, ..)| action == "workspace.pinned")
        .map(|(_, actor, user, detail)| {
            assert_eq!(user, "", "a workspace event concerns no user: {detail}");
            (actor, detail)
        })
        .collect()
}

/// `keyport workspace add NAME --address ADDRESS … --host-key LINE…` (owner alice).
fn add(sb: &Sandbox, name: &str, address: &str, keys: &[&str]) {
    let mut args = vec!["workspace", "add", name, "--address", address];
    args.extend(["--os-user", "dev", "--owner", "alice"]);
    for key in keys {
        args.extend(["--host-key", key]);
    }
    sb.ok(&args);
}

#[test]
fn cli_pin_replaces_every_pinned_key() {
    let sb = sandbox();
    let (old1, fp_old1) = host_key(&sb, "old1");
    let (old2, fp_old2) = host_key(&sb, "old2");
    let (new, fp_new) = host_key(&sb, "new");
    add(&sb, "dev1", "127.0.0.1:2200", &[&old1, &old2]);

    let out = sb.ok(&["workspace", "pin", "dev1", "--host-key", &new]);
    for line in [
        format!("unpinned host key {fp_old1} (pinned)"),
        format!("unpinned host key {fp_old2} (pinned)"),
        format!("pinned host key {fp_new} (pinned)"),
        "re-pinned workspace dev1".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} missing: {out}");
    }
    let info = show_json(&sb, "dev1");
    assert_eq!(keys_of(&info), [(fp_new.clone(), "pinned".into())]);
    let shown = sb.ok(&["workspace", "show", "dev1"]);
    let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("SHA256:")).collect();
    assert_eq!(rows.len(), 1, "{shown}");
    assert!(rows[0].starts_with(&fp_new), "{shown}");
    // Only the keys change: the address, the login and the grants stay.
    assert_eq!(info["address"], "127.0.0.1:2200");
    assert_eq!(info["os_user"], "dev");
    assert_eq!(info["grants"][0]["user"], "alice");
    assert_eq!(info["grants"][0]["owner"], true);

    // --host-key repeats; a key pinned before may be pinned again.
    sb.ok(&[
        "workspace",
        "pin",
        "dev1",
        "--host-key",
        &old1,
        "--host-key",
        &new,
    ]);
    let mut keys: Vec<String> = keys_of(&show_json(&sb, "dev1"))
        .into_iter()
        .map(|(fp, _)| fp)
        .collect();
    keys.sort();
    let mut expected = vec![fp_old1.clone(), fp_new.clone()];
    expected.sort();
    assert_eq!(keys, expected);

    // One event per change, naming the fingerprints replaced and pinned, by the CLI's OS user.
    let events = pinned_events(&sb);
    assert_eq!(events.len(), 2, "{events:?}");
    let actor = format!("cli:{}", me().name);
    assert!(events.iter().all(|(a, _)| *a == actor), "{events:?}");
    let mut old = vec![fp_old1, fp_old2];
    old.sort();
    assert_eq!(
        events[0].1,
        json!({ "workspace": "dev1", "old_host_keys": old, "new_host_keys": [fp_new],
                "source": "pinned" })
    );
    assert_eq!(events[1].1["old_host_keys"], json!([fp_new]));
}

#[test]
fn cli_pin_bad_input_names_the_field_and_changes_nothing() {
    let sb = sandbox();
    let (old, _) = host_key(&sb, "old");
    let (new, _) = host_key(&sb, "new");
    add(&sb, "dev1", "127.0.0.1:2200", &[&old]);
    // Nothing listens on port 1: a scan there fails.
    add(&sb, "dead", "127.0.0.1:1", &[&old]);
    let before = dump(&sb.db());
    let known_hosts = format!("dev1.internal {new}");
    let cases: &[(i32, &str, &[&str])] = &[
        (
            2,
            "host-key: is not an OpenSSH public key",
            &["dev1", "--host-key", "ssh-ed25519"],
        ),
        (2, "host-key: is empty", &["dev1", "--host-key", ""]),
        (
            2,
            "host-key: is a private key",
            &["dev1", "--host-key=-----BEGIN OPENSSH PRIVATE KEY-----"],
        ),
        (
            2,
            "drop the host name in front of the key type",
            &["dev1", "--host-key", &known_hosts],
        ),
        // One bad key among good ones: none is pinned.
        (
            2,
            "host-key: is not an OpenSSH public key",
            &["dev1", "--host-key", &new, "--host-key", "nope"],
        ),
        (3, "workspace nope not found", &["nope", "--host-key", &new]),
        // Looked up before any scan: no scan error shows.
        (3, "workspace nope not found", &["nope", "--scan", "-y"]),
        (1, "scan: 127.0.0.1:1", &["dead", "--scan", "-y"]),
        (
            2,
            "cannot be used with",
            &["dev1", "--host-key", &new, "--scan"],
        ),
        (2, "<--host-key <KEY>|--scan>", &["dev1"]),
        (2, "<NAME>", &["--scan"]),
    ];
    for (code, message, rest) in cases {
        let mut args = vec!["workspace", "pin"];
        args.extend(rest.iter());
        let out = sb.run(&args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {text}");
        assert!(text.contains(message), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        if text.contains("keyport: ") {
            // Ours: one line, and it is the last.
            let line = error_line(&out);
            assert!(line.starts_with("keyport: "), "{args:?}: {text}");
            assert_eq!(text.matches("keyport: ").count(), 1, "{args:?}: {text}");
        } else {
            // clap's usage errors: one `error:` line.
            assert_eq!(text.matches("error:").count(), 1, "{args:?}: {text}");
        }
        assert_eq!(dump(&sb.db()), before, "{args:?} changed the database");
    }
}

#[test]
fn scan_repins_the_rebuilt_sshds_key_only_after_yes() {
    if !keyport::testing::needs_root("a real sshd") {
        return;
    }
    let sb = sandbox();
    let sshd = Sshd::start(&sb, &me().name);
    let address = format!("127.0.0.1:{}", sshd.port);
    // `Sshd` keeps its host key in the sandbox's `sshd/` directory.
    let expected = keygen_fingerprint(&sb.dir.path().join("sshd/host_ed25519.pub"));
    // The key its sshd had before it was rebuilt.
    let (old, fp_old) = host_key(&sb, "before_rebuild");
    add(&sb, "dev1", &address, &[&old]);
    let before = dump(&sb.db());
    let args = ["workspace", "pin", "dev1", "--scan"];
    // The admin sees what is pinned now and what would be pinned instead.
    let was = format!("Workspace dev1 has pinned {fp_old} (pinned)");
    let announced = format!("The host key of {address} is ED25519 {expected}");

    // stdin not a terminal: a piped "no" — or even "yes" — changes nothing.
    for stdin in ["no\n", "yes\n", ""] {
        let out = piped(sb.keyport().args(args), stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&was) && text.contains(&announced), "{text}");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(error_line(&out).contains("not pinned"), "{}", stderr(&out));
        assert_eq!(dump(&sb.db()), before, "pinned without a yes");
    }
    // On a terminal, "no" changes nothing either.
    let out = on_a_terminal(&sb, &args, "no");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&announced), "{text}");
    assert!(
        text.contains("Replace the host keys pinned for workspace dev1"),
        "{text}"
    );
    assert!(text.contains("not pinned"), "{text}");
    assert!(!out.status.success(), "{text}");
    assert_eq!(dump(&sb.db()), before, "pinned after a no");

    // -y: the sshd's key replaces the old one.
    let out = piped(sb.keyport().args(args).arg("-y"), "");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        was,
        announced,
        format!("unpinned host key {fp_old} (pinned)"),
        format!("pinned host key {expected} (scan)"),
    ] {
        assert!(text.contains(&line), "{line:?} missing: {text}");
    }
    let info = show_json(&sb, "dev1");
    assert_eq!(keys_of(&info), [(expected.clone(), "scan".into())]);
    let events = pinned_events(&sb);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].1,
        json!({ "workspace": "dev1", "old_host_keys": [fp_old], "new_host_keys": [expected],
                "source": "scan" })
    );
}

#[test]
fn api_repins_for_admins_only() {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let alice = api_user(&sb, &daemon, &admin, "alice");
    let bob = api_user(&sb, &daemon, &admin, "bob");
    let anon = Http::new(&daemon.url, None);
    let (old, fp_old) = host_key(&sb, "old");
    let (new, fp_new) = host_key(&sb, "new");
    let r = admin.send(
        "POST",
        "workspaces",
        &json!({ "name": "dev1", "address": "10.0.0.5:22", "os_user": "dev",
                 "owners": ["alice"], "host_keys": [old] }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let path = "workspaces/dev1/host-keys";
    let pin = json!({ "host_keys": [new] });
    let mut answered = BTreeSet::new();
    let mut expect = |who: &Http, path: &str, body: &Value, status: u16| -> Value {
        // A fresh connection each time: a request refused before its body is read makes the
        // server close the connection it came on.
        let r = Http::new(&daemon.url, who.token.as_deref()).send("PUT", path, body);
        assert_eq!(r.status, status, "PUT {path} {body}: {}", r.body);
        answered.insert(r.status);
        r.json()
    };

    // A pinned key is what keeps a man in the middle out: no user may change it, not even an
    // owner, and whether the workspace exists is not theirs to learn.
    expect(&alice, path, &pin, 403);
    expect(&bob, path, &pin, 403);
    expect(&bob, "workspaces/nope/host-keys", &pin, 403);
    expect(&anon, path, &pin, 401);
    expect(&admin, "workspaces/nope/host-keys", &pin, 404);
    for body in [
        json!({ "host_keys": [] }),
        json!({ "host_keys": ["ssh-ed25519 AAAA"] }),
        json!({ "host_keys": [new, "nope"] }),
    ] {
        let reply = expect(&admin, path, &body, 400);
        let fields: Vec<&str> = reply["validations"]
            .as_array()
            .unwrap_or_else(|| panic!("no validations: {reply}"))
            .iter()
            .map(|v| v["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["host-key"], "{body}: {reply}");
    }
    for body in [
        json!({}),
        json!({ "host_keys": new }),
        json!({ "host_keys": [new], "address": "10.0.0.6:22" }),
    ] {
        expect(&admin, path, &body, 400);
    }
    let info = admin.get("workspaces/dev1").json();
    assert_eq!(keys_of(&info), [(fp_old.clone(), "pinned".into())]);

    // The admin re-pins: the answer is the workspace, with only the new key.
    let info = expect(&admin, path, &pin, 200);
    assert_eq!(info["name"], "dev1");
    assert_eq!(info["address"], "10.0.0.5:22");
    assert_eq!(keys_of(&info), [(fp_new.clone(), "pinned".into())]);
    assert_eq!(admin.get("workspaces/dev1").json(), info);
    // The owner sees the new key too.
    let seen = alice.get("workspaces/dev1").json();
    assert_eq!(keys_of(&seen), [(fp_new.clone(), "pinned".into())]);

    // One event, by the API caller, for the one change that landed.
    let admin_name = admin.get("users/me").json()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let rows = admin.audit_rows("workspace.pinned");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], format!("user:{admin_name}"));
    assert_eq!(
        rows[0]["detail"],
        json!({ "workspace": "dev1", "old_host_keys": [fp_old], "new_host_keys": [fp_new],
                "source": "pinned" })
    );

    // Every status answered is one the OpenAPI document declares for the operation.
    let doc = anon.get("openapi.json").json();
    let declared = doc["paths"]["/api/v1/workspaces/{name}/host-keys"]["put"]["responses"]
        .as_object()
        .expect("PUT /api/v1/workspaces/{name}/host-keys is documented");
    for status in &answered {
        assert!(
            declared.contains_key(&status.to_string()),
            "{status} is not declared: {:?}",
            declared.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        answered,
        BTreeSet::from([200, 400, 401, 403, 404]),
        "the sweep reached every kind of answer"
    );
}
