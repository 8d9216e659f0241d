//! Who may use a workspace: one a user may not use looks like one that does not exist; a
//! granted user gets their own login, key and secrets upstream, never another's, also 40 at once.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::procs::{Running, wait_for};

use crate::common::relay::{Gateway, Relay, run};
use serde_json::json;

use super::owner_mode;

/// `ssh USER:WORKSPACE@` and `ssh USER:nope@` (a workspace that does not exist) fail alike.
fn assert_like_no_workspace(gw: &Gateway, user: &str, key: &Path, workspace: &str) {
    let real = run(gw.ssh(user, workspace, key).arg("id -un"));
    let none = run(gw.ssh(user, "nope", key).arg("id -un"));
    assert_ne!(real.code, Some(0), "{user}:{workspace} got in: {real:?}");
    assert_eq!(real.code, none.code, "{user}:{workspace} vs {user}:nope");
    assert_eq!(real.out, none.out);
    assert_eq!(
        real.err,
        none.err.replace("nope", workspace),
        "{user}:{workspace} vs {user}:nope (stderr)"
    );
}

#[test]
fn a_workspace_bob_may_not_use_looks_like_none_until_granted_and_he_gets_only_his_own() {
    let Some(r) = Relay::start_with(&[], 1, |b| b) else {
        return;
    };
    let bob = r.gw.member("bob");
    let bob_login = &r.others[0];
    r.alice
        .secret(json!({"name": "github", "value": "alice-gh-value", "env": "GITHUB_TOKEN"}));
    r.alice
        .secret(json!({"name": "tok", "value": "alice-file-value", "file": "~/.tok"}));
    bob.secret(json!({"name": "github", "value": "bob-gh-value", "env": "GITHUB_TOKEN"}));
    bob.secret(json!({"name": "tok", "value": "bob-file-value", "file": "~/.tok"}));

    assert_like_no_workspace(&r.gw, "bob", &bob.login, "dev1");

    // Granted, with a login of his own: his key upstream (the only one trusted now), his
    // secrets, never alice's.
    r.gw.grant("dev1", "bob", Some(&bob_login.name));
    r.sshd.authorize(&[&bob.public]);
    let out = run(r
        .gw
        .ssh("bob", "dev1", &bob.login)
        .arg("id -un; echo \"$KEYPORT_USER\"; echo \"$GITHUB_TOKEN\"; cat ~/.tok; echo; env"))
    .ok("bob relayed");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        [
            bob_login.name.as_str(),
            "bob",
            "bob-gh-value",
            "bob-file-value"
        ],
        "{out}"
    );
    assert!(!out.contains("alice-"), "bob saw alice's secrets: {out}");
    assert_eq!(
        owner_mode(&bob_login.home.join(".tok")),
        (bob_login.uid, 0o600)
    );
    assert!(
        !r.ws.home.join(".tok").exists(),
        "bob's session wrote alice's file"
    );

    // Alice still gets hers, in her login's home.
    r.sshd.authorize(&[&r.alice.public, &bob.public]);
    let out = run(r
        .relayed()
        .arg("id -un; echo \"$GITHUB_TOKEN\"; cat ~/.tok"))
    .ok("alice relayed");
    assert_eq!(
        out,
        format!("{}\nalice-gh-value\nalice-file-value", r.ws.name)
    );
    assert_eq!(
        std::fs::read_to_string(bob_login.home.join(".tok")).unwrap(),
        "bob-file-value"
    );

    // Revoked: like a workspace that does not exist again.
    r.gw.sb.ok(&["workspace", "revoke", "dev1", "bob"]);
    assert_like_no_workspace(&r.gw, "bob", &bob.login, "dev1");
    // Granted without a login of his own: the workspace's login (a shared home), still his
    // secrets only.
    r.gw.grant("dev1", "bob", None);
    let out = run(r
        .gw
        .ssh("bob", "dev1", &bob.login)
        .arg("id -un; echo \"$KEYPORT_USER\"; echo \"$GITHUB_TOKEN\""))
    .ok("bob on the shared login");
    assert_eq!(out, format!("{}\nbob\nbob-gh-value\n", r.ws.name));
    run(r.relayed().arg("true")).ok("alice beside bob");

    // Removing a user ends their live relayed connections.
    let mut live = Running(
        r.gw.ssh("bob", "dev1", &bob.login)
            .arg("echo ready; exec sleep 60")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut ready = [0u8; 6];
    live.0
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    r.gw.sb.ok(&["user", "remove", "bob", "-y"]);
    wait_for(
        "bob's relayed session to end",
        Duration::from_secs(10),
        || live.0.try_wait().unwrap().is_some(),
    );
    assert_like_no_workspace(&r.gw, "bob", &bob.login, "dev1");
    r.gw.sb.ok(&["workspace", "remove", "dev1", "-y"]);
    assert_like_no_workspace(&r.gw, "alice", &r.alice.login, "dev1");
}

#[test]
fn forty_concurrent_relayed_sessions_each_get_only_their_own_secrets() {
    // 40 logins at once from one address: more than MaxStartups' defaults (keyport's and
    // sshd's) let in unauthenticated, so both have room here.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[ssh]\nmax_startups = \"100:30:200\"\nper_source_startups = 100\nper_source_rate = 1000\n",
    )
    .unwrap();
    let env = [("KEYPORT_CONFIG", config.path().to_str().unwrap())];
    let Some(r) = Relay::start_with(&env, 1, |b| b.config("MaxStartups 100:30:200")) else {
        return;
    };
    let bob = r.gw.member("bob");
    let bob_login = r.others[0].name.clone();
    r.gw.grant("dev1", "bob", Some(&bob_login));
    r.sshd.authorize(&[&r.alice.public, &bob.public]);
    // Each user's first sessions all create the same new directories upstream at once.
    for (member, who) in [(&r.alice, "alice"), (&bob, "bob")] {
        member.secret(json!({"name": "t", "value": format!("{who}-value"), "env": "GITHUB_TOKEN"}));
        member.secret(
            json!({"name": "f", "value": format!("{who}-file"), "file": "~/.kp/deep/er/t"}),
        );
    }
    let gw = &r.gw;
    let (alice_login, ws_name) = (r.alice.login.clone(), r.ws.name.clone());
    std::thread::scope(|scope| {
        let sessions: Vec<_> = (0..40)
            .map(|i| {
                let (user, key, login) = if i % 2 == 0 {
                    ("alice", alice_login.clone(), ws_name.clone())
                } else {
                    ("bob", bob.login.clone(), bob_login.clone())
                };
                scope.spawn(move || {
                    let ran = run(gw.ssh(user, "dev1", &key).arg(
                        "id -un; echo \"$KEYPORT_USER\"; echo \"$GITHUB_TOKEN\"; cat ~/.kp/deep/er/t",
                    ));
                    (user, login, ran)
                })
            })
            .collect();
        for session in sessions {
            let (user, login, ran) = session.join().unwrap();
            assert_eq!(ran.code, Some(0), "{user}: {ran:?}");
            assert_eq!(
                ran.out,
                format!("{login}\n{user}\n{user}-value\n{user}-file"),
                "{user} got another's secret"
            );
        }
    });
}

#[test]
fn a_requirement_scoped_to_a_workspace_warns_or_blocks_only_relayed_sessions_there() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[[required]]\nenv = \"GITHUB_TOKEN\"\ndescription = \"GitHub on dev1\"\n\
         workspaces = [\"dev1\"]\nmode = \"block\"\n\
         [[required]]\nenv = \"NPM_TOKEN\"\nworkspaces = [\"dev1\"]\n",
    )
    .unwrap();
    let env = [("KEYPORT_CONFIG", config.path().to_str().unwrap())];
    let Some(r) = Relay::start_with(&env, 0, |b| b) else {
        return;
    };
    // Blocked on dev1: the reason, exit 1, nothing run upstream, audited.
    let refused = run(r.relayed().arg("touch ~/ran"));
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.err.contains(
            "keyport: dev1: sessions here need a secret you have not set: \
             GITHUB_TOKEN (GitHub on dev1)"
        ) && refused
            .err
            .contains("keyport secret create github_token --env GITHUB_TOKEN"),
        "{refused:?}"
    );
    assert!(!r.ws.home.join("ran").exists(), "nothing ran upstream");
    let blocked = r.gw.audit("alice", "session.blocked");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0]["detail"]["workspace"], "dev1");
    assert_eq!(blocked[0]["detail"]["missing"], json!(["GITHUB_TOKEN"]));
    // A local session is not dev1's: it runs.
    let local = run(r.gw.daemon.ssh("alice", &r.alice.login).arg("echo local"));
    assert_eq!(local.code, Some(0), "{local:?}");
    // With the blocking one set, dev1 runs; the warning one is told to pty sessions only.
    r.alice
        .secret(json!({"name": "github", "value": "ghp-dev1-req", "env": "GITHUB_TOKEN"}));
    let ran = run(r.relayed().arg("echo ran"));
    assert_eq!(
        (ran.code, ran.out.as_str(), ran.err.as_str()),
        (Some(0), "ran\n", "")
    );
    let shell = run(r.relayed().arg("-tt").arg("echo in-shell"));
    assert!(
        shell
            .err
            .contains("keyport: required secret missing: NPM_TOKEN")
            || shell
                .out
                .contains("keyport: required secret missing: NPM_TOKEN"),
        "{shell:?}"
    );
}
