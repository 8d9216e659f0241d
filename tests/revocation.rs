//! Revocation reaches live sessions (issue 12): removing a user — on the data dir, by another
//! process — ends their live connections and programs within 2 s with a message on the
//! client's stderr, and applies the file ledger's rules to their files at once; removing one
//! login key ends only the connections that logged in with it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Daemon, Http, Sandbox, me, procs, require_tool, ssh_daemon};
use serde_json::json;

/// An `ssh` client left running, its stderr kept.
struct Client(procs::Running);

impl Client {
    fn start(daemon: &Daemon, user: &str, key: &std::path::Path, args: &[&str]) -> Self {
        Self(procs::Running(
            daemon
                .ssh(user, key)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    /// Waits (up to `within`) for the client to end; returns its stderr.
    fn ended_within(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.0.0.try_wait().unwrap().is_some() {
                let mut err = String::new();
                self.0
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return Some(err);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn running(&mut self) -> bool {
        self.0.0.try_wait().unwrap().is_none()
    }
}

/// A user `name` on the test's OS account with a fresh login key; returns the key.
fn user(sb: &Sandbox, api: &Http, name: &str) -> std::path::PathBuf {
    let key = sb.client_key(&format!("{name}_key"));
    let line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = api.send(
        "POST",
        "users",
        &json!({"name": name, "os_user": me().name, "login_keys": [line]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    key
}

#[test]
fn removing_a_user_ends_their_sessions_and_cleans_their_files_at_once() {
    require_tool("ssh");
    let (sb, daemon, _admin_key, api) = ssh_daemon(&[]);
    let key = user(&sb, &api, "bob");
    let token = sb.ok(&["token", "create", "t", "--user", "bob"]);
    let bob = Http::new(&daemon.url, Some(token.trim()));
    let home = common::me().home;
    let dir = tempfile::tempdir_in(&home).unwrap();
    let (kept, edited) = (dir.path().join("kept.txt"), dir.path().join("edited.txt"));
    for (name, path) in [("kept", &kept), ("edited", &edited)] {
        let r = bob.send(
            "POST",
            "users/me/secrets",
            &json!({"name": name, "value": format!("{name}-value"), "file": path.display().to_string()}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // Three live sessions: two commands and a pty shell.
    let mut clients = vec![
        Client::start(&daemon, "bob", &key, &["sleep 300"]),
        Client::start(&daemon, "bob", &key, &["sleep 301"]),
        Client::start(&daemon, "bob", &key, &["-tt"]),
    ];
    let pid = daemon.pid();
    procs::wait_for("bob's sessions running", Duration::from_secs(20), || {
        let below = procs::below(pid);
        let has = |n: &str| below.iter().any(|(_, c)| c.contains(n));
        has("sleep 300") && has("sleep 301") && below.iter().any(|(_, c)| c.starts_with('-'))
    });
    procs::shells_settled(pid);
    assert!(kept.exists() && edited.exists(), "written for the sessions");
    std::fs::write(&edited, "bob changed this").unwrap();
    // (The daemon's session reaper stays: it is not bob's.)
    let sessions: Vec<_> = procs::below(pid)
        .into_iter()
        .filter(|(_, c)| !c.contains("session-reaper"))
        .collect();

    let removed = Instant::now();
    sb.ok(&["user", "remove", "bob", "-y"]);
    for client in &mut clients {
        let err = client
            .ended_within(Duration::from_secs(2))
            .expect("the connection ends within 2 s");
        assert!(err.contains("your access was revoked"), "{err}");
    }
    procs::wait_for("bob's programs gone", Duration::from_secs(2), || {
        sessions
            .iter()
            .all(|(p, _)| !std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    procs::wait_for("his unchanged file removed", Duration::from_secs(5), || {
        !kept.exists()
    });
    eprintln!("revoked in {:?}", removed.elapsed());
    assert_eq!(
        std::fs::read_to_string(&edited).unwrap(),
        "bob changed this",
        "an edited file is kept"
    );
    let audit = api.get("audit").json();
    let kept_rows: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "file.kept-changed" && e["user_name"] == "bob")
        .collect();
    assert_eq!(kept_rows.len(), 1, "{audit}");
    assert_eq!(
        kept_rows[0]["detail"]["paths"],
        json!([edited.display().to_string()])
    );
}

#[test]
fn removing_a_login_key_ends_only_the_connections_that_used_it() {
    require_tool("ssh");
    let (sb, daemon, _admin_key, api) = ssh_daemon(&[]);
    let first = user(&sb, &api, "carol");
    let second = sb.client_key("carol_second");
    let line = std::fs::read_to_string(second.with_extension("pub")).unwrap();
    sb.ok(&["login-key", "add", "--user", "carol", line.trim()]);
    let mut by_first = Client::start(&daemon, "carol", &first, &["sleep 300"]);
    let mut by_second = Client::start(&daemon, "carol", &second, &["sleep 301"]);
    let pid = daemon.pid();
    procs::wait_for("both sessions running", Duration::from_secs(20), || {
        let below = procs::below(pid);
        below.iter().any(|(_, c)| c.contains("sleep 300"))
            && below.iter().any(|(_, c)| c.contains("sleep 301"))
    });
    procs::shells_settled(pid);
    sb.ok(&["login-key", "remove", "--user", "carol", line.trim()]);
    let err = by_second
        .ended_within(Duration::from_secs(2))
        .expect("the connection that used the key ends");
    assert!(err.contains("your access was revoked"), "{err}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(by_first.running(), "the other key's connection goes on");
}

#[test]
fn a_revoked_client_that_stops_reading_is_cut_off_too() {
    require_tool("ssh");
    let (sb, daemon, _admin_key, api) = ssh_daemon(&[]);
    let key = user(&sb, &api, "dave");
    // Its output is never read: the window fills, and a polite disconnect cannot get through.
    let mut child = daemon
        .ssh("dave", &key)
        .arg("yes")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = daemon.pid();
    procs::wait_for("dave's program running", Duration::from_secs(20), || {
        procs::below(pid).iter().any(|(_, c)| c.trim() == "yes")
    });
    procs::shells_settled(pid);
    std::thread::sleep(Duration::from_millis(500)); // the window is full by now
    sb.ok(&["user", "remove", "dave", "-y"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the connection was not cut");
        std::thread::sleep(Duration::from_millis(20));
    }
    procs::wait_for("dave's program gone", Duration::from_secs(3), || {
        !procs::below(pid).iter().any(|(_, c)| c.trim() == "yes")
    });
}
