//! Several `keyport serve` replicas on one real PostgreSQL (Debian's package, started by the
//! test as an unprivileged account on a private port), each with its own data dir holding a
//! copy of the one master key, driven by the real OpenSSH client and the API: one host key
//! for all, a change through one seen by the other's next session, a removal through one
//! ending sessions on the other, per-user limits across replicas, a replica killed mid-write,
//! the database restarted under them, and a replica without the key refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::{Daemon, Http, Sandbox, me, require_tool};
use keyport::store::Database;
use serde_json::json;

/// Two replicas, A and B, of one database; the admin (named after the OS user) logs in with
/// `key` and calls either API.
struct Replicas {
    sb: Sandbox,
    pg: Postgres,
    a: Daemon,
    b: Daemon,
    key: PathBuf,
    api_a: Http,
    api_b: Http,
    // The server's own sandbox, last: dropped after the server.
    _pg_host: Sandbox,
}

fn replicas() -> Replicas {
    require_tool("ssh");
    let pg_host = Sandbox::new();
    let pg = Postgres::start(&pg_host);
    pg.psql("CREATE DATABASE keyport");
    let url = pg.url(Postgres::SUPERUSER, Postgres::SUPERUSER_PASSWORD, "keyport");
    let sb = Sandbox::on(Database::Postgres(url));
    // Quick heartbeats, so a rotation's wait for every replica is short here.
    let config = sb.home().join(".config/keyport");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("keyport.toml"),
        "[replicas]\nheartbeat_secs = 1\nalive_secs = 3\n",
    )
    .unwrap();
    let key = sb.client_key("id_ed25519");
    let a = sb.serve();
    let b = replica(&sb, "data-b", true);
    let token = sb.bootstrap_token();
    let api_a = Http::new(&a.url, Some(&token));
    let api_b = Http::new(&b.url, Some(&token));
    Replicas {
        sb,
        pg,
        a,
        b,
        key,
        api_a,
        api_b,
        _pg_host: pg_host,
    }
}

/// A replica with the data dir `name` in the sandbox; with a copy of the first one's master
/// key when `with_key`.
fn replica(sb: &Sandbox, name: &str, with_key: bool) -> Daemon {
    sb.serve_command(replica_command(sb, name, with_key), &[])
}

fn replica_command(sb: &Sandbox, name: &str, with_key: bool) -> std::process::Command {
    use std::os::unix::fs::PermissionsExt;
    let dir = sb.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if with_key {
        std::fs::copy(sb.data().join("master.key"), dir.join("master.key")).unwrap();
    }
    let mut cmd = sb.keyport();
    cmd.env("KEYPORT_DATA_DIR", &dir);
    cmd
}

fn fingerprint(d: &Daemon) -> String {
    d.log()
        .lines()
        .find_map(|l| l.strip_prefix("host key fingerprint: "))
        .unwrap()
        .trim()
        .to_string()
}

fn secrets(api: &Http) -> Vec<serde_json::Value> {
    let r = api.get(&format!("users/{}/secrets", me().name));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v.as_array()
        .or_else(|| v["secrets"].as_array())
        .unwrap()
        .clone()
}

/// `printenv NAME` in a new session on `d`.
fn session_env(key: &std::path::Path, d: &Daemon, name: &str) -> String {
    let out = d
        .ssh(&me().name, key)
        .arg(format!("printenv {name}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// User bob (on the OS user's account) made through `api`, and his session on `on`, logged in
/// and running (`sleep 60`).
fn bob_session(r: &Replicas, api: &Http, on: &Daemon) -> std::process::Child {
    let bob_key = r.sb.client_key("bob_login");
    let line = std::fs::read_to_string(bob_key.with_extension("pub")).unwrap();
    let made = api.send(
        "POST",
        "users",
        &json!({"name": "bob", "os_user": me().name, "login_keys": [line]}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let mut session = on
        .ssh("bob", &bob_key)
        .arg("echo ready; sleep 60")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(session.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "ready");
    session
}

#[test]
fn a_secret_created_through_one_replica_is_injected_by_the_other_with_one_host_key() {
    let r = replicas();
    assert_eq!(
        fingerprint(&r.a),
        fingerprint(&r.b),
        "the replicas' host keys differ"
    );
    let created = r.api_b.send(
        "POST",
        &format!("users/{}/secrets", me().name),
        &json!({"name": "gh", "value": "from-replica-b", "env": "GH_TOKEN"}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(session_env(&r.key, &r.a, "GH_TOKEN"), "from-replica-b");
    // And a change through A is the next session's on B.
    let patched = r.api_a.send(
        "PATCH",
        &format!("users/{}/secrets/gh", me().name),
        &json!({"value": "changed-on-a"}),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(session_env(&r.key, &r.b, "GH_TOKEN"), "changed-on-a");
    // The host key B presents is the one A created (sealed in the database), not its own.
    assert!(!r.b.log().contains("created admin user"), "{}", r.b.log());
}

#[test]
fn removing_a_user_through_one_replica_ends_their_sessions_on_the_other_within_2_s() {
    let r = replicas();
    let mut session = bob_session(&r, &r.api_a, &r.b);
    // `keyport user remove` on A's data dir (A's host), as an operator would.
    let removed_at = Instant::now();
    r.sb.ok(&["user", "remove", "bob", "--yes"]);
    let status = loop {
        if let Some(status) = session.try_wait().unwrap() {
            break status;
        }
        assert!(
            removed_at.elapsed() < Duration::from_secs(10),
            "bob's session on B outlived his removal through A by 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = removed_at.elapsed();
    assert!(!status.success());
    assert!(
        took <= Duration::from_secs(2),
        "bob's session on B ended {took:?} after his removal through A"
    );
}

#[test]
fn creates_and_patches_through_both_replicas_at_once_keep_the_limit_and_lose_no_update() {
    let r = replicas();
    let user = me().name;
    // 200 creates, split over both replicas in 8 threads: the default limit is 100 secrets.
    let created = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let api = if t % 2 == 0 { &r.api_a } else { &r.api_b };
            let (created, user) = (&created, &user);
            s.spawn(move || {
                for i in 0..25 {
                    let reply = api.send(
                        "POST",
                        &format!("users/{user}/secrets"),
                        &json!({"name": format!("s{t}-{i}"), "value": "v", "env": format!("S{t}_{i}")}),
                    );
                    match reply.status {
                        201 => {
                            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => assert!(reply.body.contains("limit"), "{}", reply.body),
                    }
                }
            });
        }
    });
    assert_eq!(created.load(std::sync::atomic::Ordering::Relaxed), 100);
    assert_eq!(secrets(&r.api_a).len(), 100);
    assert_eq!(secrets(&r.api_b).len(), 100);

    // 2 × 20 PATCHes of one secret, through A and through B at once: each lands, each audited.
    let values: Vec<String> = std::thread::scope(|s| {
        let writers: Vec<_> = [("a", &r.api_a), ("b", &r.api_b)]
            .into_iter()
            .map(|(side, api)| {
                let user = &user;
                s.spawn(move || {
                    (0..20)
                        .map(|i| {
                            let value = format!("{side}-{i}");
                            let reply = api.send(
                                "PATCH",
                                &format!("users/{user}/secrets/s0-0"),
                                &json!({"value": value}),
                            );
                            assert_eq!(reply.status, 200, "{}", reply.body);
                            value
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let updates = r
        .api_a
        .audit_rows("secret.update")
        .into_iter()
        .filter(|e| e.to_string().contains("\"s0-0\""))
        .count();
    assert_eq!(updates, 40, "every PATCH is audited");
    let last = session_env(&r.key, &r.a, "S0_0");
    assert!(values.contains(&last), "{last}");
    assert!(
        last == "a-19" || last == "b-19",
        "the last writer wins: {last}"
    );
}

#[test]
fn a_replica_killed_mid_write_loses_no_committed_change_and_the_other_keeps_serving() {
    let r = replicas();
    let user = me().name;
    let done = std::sync::Mutex::new(Vec::<String>::new());
    let a_pid = r.a.pid();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..1000 {
                let name = format!("k{i}");
                // The request the kill cuts gets no answer (the client panics): the end.
                let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    r.api_a.send(
                        "POST",
                        &format!("users/{user}/secrets"),
                        &json!({"name": name, "value": "v", "env": format!("K{i}")}),
                    )
                }));
                if !matches!(&sent, Ok(reply) if reply.status == 201) {
                    return;
                }
                done.lock().unwrap().push(name);
            }
        });
        while done.lock().unwrap().len() < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(a_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let stored: Vec<String> = secrets(&r.api_b)
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    for name in done.lock().unwrap().iter() {
        assert!(
            stored.contains(name),
            "{name} was committed through A and is gone"
        );
    }
    let out = r.b.ssh(&user, &r.key).arg("printenv K0").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
}

#[test]
fn replicas_reconnect_after_the_database_restarts_and_hear_changes_again() {
    let mut r = replicas();
    let user = me().name;
    assert_eq!(
        r.api_b
            .send(
                "POST",
                &format!("users/{user}/secrets"),
                &json!({"name": "t", "value": "before", "env": "T"})
            )
            .status,
        201
    );
    assert_eq!(session_env(&r.key, &r.a, "T"), "before");
    // Sessions keep starting on A while the server restarts under both replicas.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (a, key) = (&r.a, &r.key);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = session_env(key, a, "T");
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        r.pg.restart();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // A change right after, through B, is the next session's on A.
    let patched = r.api_b.send(
        "PATCH",
        &format!("users/{user}/secrets/t"),
        &json!({"value": "after"}),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(session_env(&r.key, &r.a, "T"), "after");
    // And A listens again: a removal through B still ends A's sessions.
    let mut session = bob_session(&r, &r.api_b, &r.a);
    let removed_at = Instant::now();
    assert!(r.api_b.send("DELETE", "users/bob", &json!({})).status < 300);
    while session.try_wait().unwrap().is_none() {
        assert!(
            removed_at.elapsed() < Duration::from_secs(5),
            "bob's session on A outlived his removal through B after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_replica_without_the_master_key_or_with_another_refuses_to_start_naming_the_key() {
    let r = replicas();
    let out = replica_command(&r.sb, "data-c", false)
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("master key is missing") && said.contains("sealed under key"),
        "{said}"
    );
    let dir = r.sb.dir.path().join("data-d");
    std::fs::create_dir_all(&dir).unwrap();
    let other = keyport_keys::MasterKey::generate().unwrap();
    let out = replica_command(&r.sb, "data-d", false)
        .env("KEYPORT_MASTER_KEY", other.to_base64().as_str())
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains(&other.id()), "{said}");
}

/// `keyport admin nodes` on the first replica's data dir.
fn nodes(r: &Replicas) -> String {
    r.sb.ok(&["admin", "nodes"])
}

/// Waits (up to 10 s) until `admin nodes` shows `count` live rows holding `text`.
fn wait_nodes(r: &Replicas, text: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = nodes(r);
        let n = list
            .lines()
            .filter(|l| l.contains(text) && l.contains(" live "))
            .count();
        if n == count {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {count} live nodes with {text}:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_rotation_waits_for_every_replica_to_hold_the_new_key_and_an_old_key_is_refused_after() {
    let r = replicas();
    let user = me().name;
    let made = r.api_a.send(
        "POST",
        &format!("users/{user}/secrets"),
        &json!({"name": "r", "value": "sealed-before", "env": "R"}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let old_text = std::fs::read_to_string(r.sb.data().join("master.key")).unwrap();
    let old = keyport_keys::MasterKey::from_base64(&old_text).unwrap();
    let list = wait_nodes(&r, &old.id(), 2);
    assert!(list.starts_with("NODE"), "{list}");

    // Nothing staged on B: refused, naming B, and nothing changed.
    let refused = r.sb.run(&["admin", "rotate-master-key"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    let b_dir = std::fs::canonicalize(r.sb.dir.path().join("data-b")).unwrap();
    assert!(
        said.contains(&b_dir.display().to_string()) && said.contains("does not hold the new key"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(r.sb.data().join("master.key")).unwrap(),
        old_text
    );
    assert!(!r.sb.data().join("master.key.next").exists());

    // The new key staged on both: both report it, then the rotation seals under it.
    let new = keyport_keys::MasterKey::generate().unwrap();
    for dir in [r.sb.data(), r.sb.dir.path().join("data-b")] {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("master.key.new"))
            .unwrap();
        std::io::Write::write_all(&mut f, new.to_base64().as_bytes()).unwrap();
    }
    wait_nodes(&r, &new.id(), 2);
    let rotated = r.sb.ok(&["admin", "rotate-master-key"]);
    assert!(rotated.contains(&new.id()), "{rotated}");

    // B takes up the staged key and keeps serving what was sealed before, now under the new key.
    let deadline = Instant::now() + Duration::from_secs(10);
    while session_env(&r.key, &r.b, "R") != "sealed-before" {
        assert!(
            Instant::now() < deadline,
            "B did not take up the new key:\n{}",
            r.b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_nodes(&r, &new.id(), 2);
    let b_key = std::fs::read_to_string(r.sb.dir.path().join("data-b/master.key")).unwrap();
    assert_eq!(
        keyport_keys::MasterKey::from_base64(&b_key).unwrap().id(),
        new.id()
    );
    assert!(!r.sb.dir.path().join("data-b/master.key.new").exists());

    // A replica started with the old key now is refused, with both key ids.
    let out = replica_command(&r.sb, "data-e", false)
        .env("KEYPORT_MASTER_KEY", old.to_base64().as_str())
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains(&new.id()) && said.contains(&old.id()),
        "{said}"
    );
}
