//! Live file secrets (design.md, "Secret lifecycle": "Live files"): a file secret created,
//! updated (value, path, enabled) or deleted while a session of its user lives is applied to
//! that session's OS account within a second — through the CLI, the API, or the data dir from
//! another process — under the ledger's rules (an unchanged file removed, an edited one kept
//! and audited, an edited one about to be replaced saved beside it first), and audited as
//! `files.refresh` with secret names, never values. Other users' files are not touched and
//! they get no pass; nothing is written where no session lives; a running program keeps the
//! environment it started with. As root: each OS account's files are written as that account;
//! a relayed session's files are rewritten on its workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::custody::{environs_below, live_session};
use common::{Daemon, Http, OsAccount, keyport_user, me, require_tool};
use keyport::secrets::SecretPatch;
use keyport::vault::Actor;
use serde_json::json;

/// What the feature promises.
const WITHIN: Duration = Duration::from_secs(1);

/// Polls `done` until it holds, at most [`WITHIN`] after `since` (when the change was made);
/// prints and returns how long it took.
fn within_a_second(what: &str, since: Instant, mut done: impl FnMut() -> bool) -> Duration {
    loop {
        let took = since.elapsed();
        if done() {
            println!("live file latency: {what}: {} ms", took.as_millis());
            return took;
        }
        assert!(took < WITHIN, "{what}: not seen within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Inode, size, mtime and ctime to the nanosecond: equal stamps mean the file was not
/// rewritten (an atomic replace makes a new inode; a rewrite in place moves ctime).
fn stamp(path: &Path) -> (u64, u64, i64, i64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

fn create(api: &Http, spec: serde_json::Value) {
    let r = api.send("POST", "users/me/secrets", &spec);
    assert_eq!(r.status, 201, "{spec}: {}", r.body);
}

fn patch(api: &Http, name: &str, body: serde_json::Value) {
    let r = api.send("PATCH", &format!("users/me/secrets/{name}"), &body);
    assert_eq!(r.status, 200, "{body}: {}", r.body);
}

/// `user`'s audit events with `action`.
fn audited(admin: &Http, user: &str, action: &str) -> Vec<serde_json::Value> {
    admin
        .audit_rows(action)
        .into_iter()
        .filter(|e| e["user_name"] == user)
        .collect()
}

/// The secret's deliveries, as the API lists them.
fn deliveries(api: &Http, name: &str) -> serde_json::Value {
    let listed = api.get("users/me/secrets").json();
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["deliveries"].clone())
        .unwrap_or_else(|| panic!("no secret {name} in {listed}"))
}

/// Waits until the daemon holds no TCP connection on its SSH port (`/proc/net/tcp*`): the
/// sessions before have ended on its side too.
fn no_connections(daemon: &Daemon) {
    let port = format!(":{:04X}", daemon.ssh_port);
    let established = || {
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
            std::fs::read_to_string(table)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // ESTABLISHED, or CLOSE_WAIT: the client left, the daemon has not yet.
                    fields.len() > 3
                        && fields[1].ends_with(&port)
                        && (fields[3] == "01" || fields[3] == "08")
                })
        })
    };
    common::procs::wait_for(
        "the daemon's connections ended",
        Duration::from_secs(10),
        || !established(),
    );
}

#[test]
fn a_live_session_follows_its_file_secrets_within_a_second() {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    let me = me().name;
    let dir = sb.dir.path().join("live");
    let npmrc = dir.join("npmrc");
    let spec = json!({"name": "npm", "value": "npm-v1", "env": "NPM_TOKEN", "file": npmrc});
    create(&api, spec);
    let errors = sb.dir.path().join("session.err");
    let (_session, _) = live_session(&daemon, &me, &key, "true", &errors);
    assert_eq!(read(&npmrc).as_deref(), Some("npm-v1"));

    // The CLI (over the API), then the API itself: the file changes under the session.
    let t = Instant::now();
    sb.ok(&["secret", "update", "npm", "--value", "npm-v2"]);
    let returned = Instant::now();
    within_a_second("keyport secret update --value", returned, || {
        read(&npmrc).as_deref() == Some("npm-v2")
    });
    println!(
        "live file latency: keyport secret update, from its start: {} ms",
        t.elapsed().as_millis()
    );
    // The program that runs keeps the environment it started with.
    let environs = environs_below(daemon.pid());
    assert!(
        environs
            .iter()
            .any(|(_, env)| common::contains(env, b"NPM_TOKEN=npm-v1")),
        "the session's program is gone?"
    );
    assert!(
        !environs
            .iter()
            .any(|(_, env)| common::contains(env, b"npm-v2")),
        "a running program's environment changed"
    );
    let t = Instant::now();
    patch(&api, "npm", json!({"value": "npm-v3"}));
    within_a_second("API PATCH value", t, || {
        read(&npmrc).as_deref() == Some("npm-v3")
    });

    // Moved: the old file goes, the new one comes; disabled: gone; enabled: back.
    let moved = dir.join("moved/npmrc");
    let t = Instant::now();
    patch(&api, "npm", json!({"file": moved.display().to_string()}));
    within_a_second("API PATCH file (moved)", t, || {
        !npmrc.exists() && read(&moved).as_deref() == Some("npm-v3")
    });
    let t = Instant::now();
    patch(&api, "npm", json!({"enabled": false}));
    within_a_second("API PATCH enabled=false", t, || !moved.exists());
    let t = Instant::now();
    patch(&api, "npm", json!({"enabled": true}));
    within_a_second("API PATCH enabled=true", t, || {
        read(&moved).as_deref() == Some("npm-v3")
    });

    // A new file secret appears; deleted while unchanged, it disappears.
    let cert = dir.join("cert.pem");
    let t = Instant::now();
    create(
        &api,
        json!({"name": "cert", "value": "cert-v1", "file": cert.display().to_string()}),
    );
    within_a_second("API POST (created)", t, || {
        read(&cert).as_deref() == Some("cert-v1")
    });
    let t = Instant::now();
    assert_eq!(api.delete("users/me/secrets/cert").status, 204);
    within_a_second("API DELETE (unchanged file)", t, || !cert.exists());

    // The data dir, changed by another process (here: this test's own vault).
    let t = Instant::now();
    let changed = SecretPatch {
        value: Some("npm-v4".into()),
        ..SecretPatch::default()
    };
    sb.vault()
        .update_secret(&Actor::cli(), &me, "npm", &changed)
        .unwrap();
    within_a_second("data dir, another process", t, || {
        read(&moved).as_deref() == Some("npm-v4")
    });

    // Each pass is audited with the names of what it wrote and removed, never a value; the
    // deliveries say what is in place.
    common::procs::wait_for("files.refresh events", WITHIN, || {
        audited(&api, &me, "files.refresh").len() >= 8
    });
    let refreshed = audited(&api, &me, "files.refresh");
    for row in &refreshed {
        assert_eq!(row["detail"]["os_user"], me.as_str(), "{row}");
    }
    let text = json!(refreshed).to_string();
    for value in ["npm-v1", "npm-v2", "npm-v3", "npm-v4", "cert-v1"] {
        assert!(!text.contains(value), "a value in the audit: {text}");
    }
    let named = |field: &str, name: &str| {
        refreshed.iter().any(|r| {
            r["detail"][field]
                .as_array()
                .unwrap()
                .contains(&json!(name))
        })
    };
    assert!(
        named("written", "npm") && named("written", "cert"),
        "{text}"
    );
    assert!(
        named("removed", "npm") && named("removed", "cert"),
        "{text}"
    );
    // One pass per change: none repeated, none for nothing (a look a poll or two later).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(audited(&api, &me, "files.refresh").len(), 8, "{text}");
    let delivered = deliveries(&api, "npm");
    assert_eq!(delivered[0]["outcome"], "written", "{delivered}");
    assert_eq!(delivered[0]["path"], moved.display().to_string().as_str());
}

#[test]
fn under_a_live_session_an_edited_file_is_kept_or_saved_as_at_a_session_start() {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    let me = me().name;
    let dir = sb.dir.path().join("edits");
    let (kept, saved) = (dir.join("kept.cfg"), dir.join("saved.cfg"));
    create(
        &api,
        json!({"name": "kept", "value": "kept-v1", "file": kept.display().to_string()}),
    );
    create(
        &api,
        json!({"name": "saved", "value": "saved-v1", "file": saved.display().to_string()}),
    );
    let errors = sb.dir.path().join("session.err");
    let (_session, _) = live_session(&daemon, &me, &key, "true", &errors);
    assert_eq!(read(&kept).as_deref(), Some("kept-v1"));

    // Edited, then its secret deleted: the user's file stays, and that is reported.
    std::fs::write(&kept, "the user's own").unwrap();
    let t = Instant::now();
    assert_eq!(api.delete("users/me/secrets/kept").status, 204);
    within_a_second("an edited file's secret deleted: reported", t, || {
        audited(&api, &me, "file.kept-changed")
            .iter()
            .any(|r| r["detail"]["paths"] == json!([kept.display().to_string()]))
    });
    assert_eq!(read(&kept).as_deref(), Some("the user's own"));
    // The pass's own event comes right after the ledger's.
    common::procs::wait_for("files.refresh naming the kept file", WITHIN, || {
        audited(&api, &me, "files.refresh")
            .iter()
            .any(|r| r["detail"]["kept_changed"] == json!(["kept"]))
    });

    // Edited, then a new value: the user's version is saved beside it first.
    std::fs::write(&saved, "mine, edited").unwrap();
    let t = Instant::now();
    patch(&api, "saved", json!({"value": "saved-v2"}));
    let beside = dir.join("saved.cfg.keyport-saved");
    within_a_second(
        "an edited file's new value, the edit saved beside",
        t,
        || read(&saved).as_deref() == Some("saved-v2"),
    );
    assert_eq!(read(&beside).as_deref(), Some("mine, edited"));
    assert_eq!(common::output::mode(&beside), 0o600);
    common::procs::wait_for("file.saved-edit", WITHIN, || {
        json!(audited(&api, &me, "file.saved-edit"))
            .to_string()
            .contains(&beside.display().to_string())
    });
}

/// Two keyport users on one OS account (a non-root daemon runs every session as itself), each
/// with a live session: a change of alice's rewrites her file only, and bob gets no pass.
#[test]
fn another_users_live_session_is_left_alone() {
    let (sb, daemon, alice_key, alice) = common::ssh_daemon(&[]);
    let me = me().name;
    let bob_key = sb.client_key("bob_key");
    let bob_pub = std::fs::read_to_string(bob_key.with_extension("pub")).unwrap();
    sb.ok(&[
        "user",
        "add",
        "bob",
        "--os-user",
        &me,
        "--login-key",
        bob_pub.trim(),
    ]);
    let token = sb.ok(&["token", "create", "t", "--user", "bob"]);
    let bob = Http::new(&daemon.url, Some(token.trim()));
    let (alice_file, bob_file) = (
        sb.dir.path().join("a/alice.cfg"),
        sb.dir.path().join("b/bob.cfg"),
    );
    create(
        &alice,
        json!({"name": "cfg", "value": "alice-v1", "file": alice_file.display().to_string()}),
    );
    create(
        &bob,
        json!({"name": "cfg", "value": "bob-v1", "file": bob_file.display().to_string()}),
    );
    let errors = sb.dir.path().join("session.err");
    let (_alice_session, _) = live_session(&daemon, &me, &alice_key, "true", &errors);
    let (_bob_session, _) = live_session(&daemon, "bob", &bob_key, "true", &errors);
    assert_eq!(read(&bob_file).as_deref(), Some("bob-v1"));
    let bob_stamp = stamp(&bob_file);
    let bob_delivered = deliveries(&bob, "cfg");

    let t = Instant::now();
    patch(&alice, "cfg", json!({"value": "alice-v2"}));
    within_a_second("alice's change, alice's file", t, || {
        read(&alice_file).as_deref() == Some("alice-v2")
    });
    common::procs::wait_for("alice's files.refresh", WITHIN, || {
        !audited(&alice, &me, "files.refresh").is_empty()
    });
    // Bob's own audit events of the next few polls could only come from a pass of his.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(stamp(&bob_file), bob_stamp, "bob's file was rewritten");
    assert_eq!(read(&bob_file).as_deref(), Some("bob-v1"));
    assert_eq!(
        deliveries(&bob, "cfg"),
        bob_delivered,
        "bob got a file pass"
    );
    for action in [
        "files.refresh",
        "file.removed",
        "file.saved-edit",
        "file.failed",
    ] {
        assert!(
            audited(&alice, "bob", action).is_empty(),
            "bob got a {action} event"
        );
    }
}

#[test]
fn without_a_live_session_nothing_is_written_until_the_next_one() {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    let me = me().name;
    let file = sb.dir.path().join("later/token");
    create(
        &api,
        json!({"name": "t", "value": "t-v1", "file": file.display().to_string()}),
    );
    // Twice the time a live session would have it.
    std::thread::sleep(2 * WITHIN);
    assert!(!file.exists(), "written with no session");

    // A session writes it; once it has ended, a change waits for the next one.
    let out = daemon
        .ssh(&me, &key)
        .arg(format!("cat {}", file.display()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t-v1");
    no_connections(&daemon);
    patch(&api, "t", json!({"value": "t-v2"}));
    std::thread::sleep(2 * WITHIN);
    assert_eq!(
        read(&file).as_deref(),
        Some("t-v1"),
        "written with no session"
    );
    assert!(audited(&api, &me, "files.refresh").is_empty());
    let out = daemon
        .ssh(&me, &key)
        .arg(format!("cat {}", file.display()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t-v2");
}

/// As root, two users with OS accounts of their own: a live pass writes as the session's
/// account (its owner, 0600), in that account only.
#[test]
fn as_root_a_live_pass_writes_as_the_sessions_own_account() {
    if !keyport::testing::needs_root("creates OS accounts") {
        return;
    }
    require_tool("useradd");
    let (sb, daemon, _key, admin) = common::ssh_daemon(&[]);
    let alice_os = OsAccount::create("kpla");
    let bob_os = OsAccount::create("kplb");
    let (alice_key, alice) = keyport_user(&sb, &daemon, &admin, "alice", &alice_os);
    let (bob_key, bob) = keyport_user(&sb, &daemon, &admin, "bob", &bob_os);
    for (api, user) in [(&alice, "alice"), (&bob, "bob")] {
        create(
            api,
            json!({"name": "s", "value": format!("{user}-v1"), "file": "~/.kp/live"}),
        );
    }
    let errors = sb.dir.path().join("session.err");
    let (_a, _) = live_session(&daemon, "alice", &alice_key, "true", &errors);
    let (_b, _) = live_session(&daemon, "bob", &bob_key, "true", &errors);
    let (alice_file, bob_file) = (alice_os.home.join(".kp/live"), bob_os.home.join(".kp/live"));
    assert_eq!(read(&bob_file).as_deref(), Some("bob-v1"));
    let bob_stamp = stamp(&bob_file);

    let t = Instant::now();
    patch(&alice, "s", json!({"value": "alice-v2"}));
    within_a_second("as root, alice's account", t, || {
        read(&alice_file).as_deref() == Some("alice-v2")
    });
    let meta = std::fs::metadata(&alice_file).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (alice_os.uid, 0o600));
    let t = Instant::now();
    create(
        &alice,
        json!({"name": "n", "value": "alice-new", "file": "~/.kp/new"}),
    );
    let new = alice_os.home.join(".kp/new");
    within_a_second("as root, a new secret in alice's account", t, || {
        read(&new).as_deref() == Some("alice-new")
    });
    assert_eq!(std::fs::metadata(&new).unwrap().uid(), alice_os.uid);
    common::procs::wait_for("alice's two files.refresh events", WITHIN, || {
        audited(&admin, "alice", "files.refresh").len() >= 2
    });
    let refreshed = audited(&admin, "alice", "files.refresh");
    assert!(
        refreshed
            .iter()
            .all(|r| r["detail"]["os_user"] == alice_os.name.as_str()),
        "{refreshed:?}"
    );
    assert_eq!(stamp(&bob_file), bob_stamp, "bob's file was rewritten");
    assert!(audited(&admin, "bob", "files.refresh").is_empty());
    let _ = bob;
}

/// Relay mode: a relayed session's files are on the workspace; a change is written there
/// while it lives, over the same connection, and nothing is written locally for it.
#[test]
fn a_relayed_live_session_gets_its_changed_files_on_the_workspace() {
    let Some(r) = common::relay::Relay::start() else {
        return;
    };
    r.alice
        .secret(json!({"name": "cfg", "value": "cfg-v1", "file": "~/.kp/cfg"}));
    let errors = r.gw.sb.dir.path().join("relayed.err");
    let (_session, _) = live_session(&r.gw.daemon, "alice:dev1", &r.alice.login, "true", &errors);
    let cfg = r.ws.home.join(".kp/cfg");
    assert_eq!(read(&cfg).as_deref(), Some("cfg-v1"));

    let t = Instant::now();
    patch(&r.alice.api, "cfg", json!({"value": "cfg-v2"}));
    within_a_second("relayed, API PATCH value", t, || {
        read(&cfg).as_deref() == Some("cfg-v2")
    });
    let t = Instant::now();
    r.alice
        .secret(json!({"name": "new", "value": "new-v1", "file": "~/.kp/new"}));
    let new = r.ws.home.join(".kp/new");
    within_a_second("relayed, API POST", t, || {
        read(&new).as_deref() == Some("new-v1")
    });
    assert_eq!(std::fs::metadata(&new).unwrap().uid(), r.ws.uid);
    let t = Instant::now();
    assert_eq!(r.alice.api.delete("users/me/secrets/cfg").status, 204);
    within_a_second("relayed, API DELETE", t, || !cfg.exists());
    // Alice has no local session: her local account got nothing.
    assert!(!r.alice.local.home.join(".kp").exists());
    common::procs::wait_for("three files.refresh events", WITHIN, || {
        r.gw.audit("alice", "files.refresh").len() >= 3
    });
    let refreshed = r.gw.audit("alice", "files.refresh");
    for row in &refreshed {
        let place = row["detail"]["place"].as_str().unwrap_or_default();
        assert!(place.starts_with("workspace:"), "{row}");
    }
    let named = |field: &str, name: &str| {
        refreshed.iter().any(|r| {
            r["detail"][field]
                .as_array()
                .unwrap()
                .contains(&json!(name))
        })
    };
    assert!(
        named("written", "cfg") && named("written", "new") && named("removed", "cfg"),
        "{refreshed:?}"
    );
}
