//! Relay failures: a host key other than the pinned one, an upstream that is down or silent, a
//! refused key — each exits 255 with the reason and runs nothing; repeated auth failures are
//! answered without reconnecting (OpenSSH's PerSourcePenalties); a proven new host key is
//! learned.

use std::time::{Duration, Instant};

use crate::common::relay::{
    ACCEPT_ENV, Account, Gateway, Relay, assert_keyport_failure, free_port, run, stranger_host_key,
};
use crate::common::sshd::Sshd;

#[test]
fn upstream_failures_exit_255_with_the_reason_and_run_nothing() {
    let Some(gw) = Gateway::start(&[]) else {
        return;
    };
    let alice = gw.member("alice");
    let ws = Account::create("kpw");
    let sshd = Sshd::build(&gw.sb, "ws").login(&ws.name).start();
    sshd.authorize(&[&alice.public]);
    let keyless = Sshd::build(&gw.sb, "keyless").login(&ws.name).start();
    let wrong = stranger_host_key(&gw.sb, "wrong_host");
    let down = format!("127.0.0.1:{}", free_port());
    // Accepts TCP (the kernel's backlog) and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_addr = mute.local_addr().unwrap().to_string();
    gw.add_workspace("pinned", &sshd.address(), &ws.name, "alice", &wrong);
    gw.add_workspace("dev1", &down, &ws.name, "alice", sshd.host_line());
    gw.add_workspace("mute", &mute_addr, &ws.name, "alice", sshd.host_line());
    gw.add_workspace(
        "keyless",
        &keyless.address(),
        &ws.name,
        "alice",
        keyless.host_line(),
    );
    let relayed = |workspace: &str, command: &str| {
        let started = Instant::now();
        let ran = run(gw.ssh("alice", workspace, &alice.login).arg(command));
        (ran, started.elapsed())
    };

    // A host key other than the pinned one: both fingerprints, and nothing ran upstream.
    let marker = ws.home.join("ran-although-the-host-key-was-wrong");
    let (ran, _) = relayed("pinned", &format!("touch {}", marker.display()));
    let pinned_fp = keyport_keys::LoginKey::parse(&wrong).unwrap().fingerprint();
    assert_keyport_failure(&ran, &[&pinned_fp, &sshd.host_fingerprint()], "host key");
    assert!(!marker.exists(), "the command ran on an unverified host");
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "keyport logged in to a host whose key did not match:\n{}",
        sshd.log()
    );

    // Nothing listening: quickly, naming the workspace and its address.
    let (ran, took) = relayed("dev1", "true");
    assert_keyport_failure(&ran, &["dev1", &down], "unreachable");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // An address that never answers: given up on, not hung on.
    let (ran, took) = relayed("mute", "true");
    assert_keyport_failure(&ran, &["mute"], "silent upstream");
    assert!(took < Duration::from_secs(15), "took {took:?}");

    // Alice's keyport key not in authorized_keys: the line to add, and where.
    let (ran, _) = relayed("keyless", "true");
    assert_keyport_failure(
        &ran,
        &[&alice.public_blob(), "authorized_keys"],
        "key refused",
    );

    let kinds: Vec<String> = gw
        .audit("alice", "relay.failed")
        .iter()
        .map(|e| e["detail"]["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in ["host-key", "unreachable", "auth"] {
        assert!(
            kinds.contains(&kind.to_string()),
            "relay.failed kinds: {kinds:?}"
        );
        let sample = format!("keyport_relay_failures_total{{kind=\"{kind}\"}}");
        assert!(gw.sample(&sample) >= 1.0, "{sample}:\n{}", gw.metrics());
    }
    for kind in &kinds {
        assert!(
            ["unreachable", "host-key", "auth", "other"].contains(&kind.as_str()),
            "unknown kind {kind}"
        );
    }
    drop(mute);
}

#[test]
fn repeated_auth_failures_are_answered_without_reconnecting_and_hold_no_one_else() {
    let Some(r) = Relay::start_with(&[], 1, |b| b) else {
        return;
    };
    let bob = r.gw.member("bob");
    r.gw.grant("dev1", "bob", Some(&r.others[0].name));
    // The workspace trusts bob's key, not alice's.
    r.sshd.authorize(&[&bob.public]);
    let before = r.sshd.connections();
    for attempt in 0..6 {
        let ran = run(r.relayed().arg("true"));
        assert_keyport_failure(
            &ran,
            &[&r.alice.public_blob(), "authorized_keys"],
            &format!("attempt {attempt}"),
        );
    }
    // Three auth failures from one address within seconds get it blocked by OpenSSH ≥ 9.8
    // (authfail:5s, min:15s): for everyone behind keyport. At most two may reach the sshd.
    let reached = r.sshd.connections() - before;
    assert!(
        reached <= 2,
        "6 failed relays made {reached} upstream connections:\n{}",
        r.sshd.log()
    );
    // Held per (user, workspace): bob still gets through.
    let out = run(r.gw.ssh("bob", "dev1", &bob.login).arg("id -un")).ok("bob");
    assert_eq!(out.trim(), r.others[0].name);
}

#[test]
fn a_host_key_the_upstream_proves_is_learned_and_survives_its_rotation() {
    let Some(mut r) = Relay::start_with(&[], 0, |b| b.host_keys(&["ed25519", "ecdsa"])) else {
        return;
    };
    // dev1 pinned the ed25519 key; the sshd also holds an ECDSA one, which it announces
    // (hostkeys-00@openssh.com) after the login.
    run(r.relayed().arg("true")).ok("first");
    // A second workspace on the same sshd, pinned the same way but never used.
    let ed25519 = r.sshd.host_line().to_string();
    r.gw.add_workspace("unused", &r.sshd.address(), &r.ws.name, "alice", &ed25519);
    // The sshd now offers only the ECDSA key.
    let port = r.sshd.port;
    r.sshd.stop();
    let rotated = Sshd::build(&r.gw.sb, "ws")
        .login(&r.ws.name)
        .config(ACCEPT_ENV)
        .host_keys(&["ecdsa"])
        .port(port)
        .start();
    rotated.authorize(&[&r.alice.public]);
    let out = run(r.relayed().arg("echo rotated"));
    assert_eq!(out.code, Some(0), "the proven key was not learned: {out:?}");
    assert_eq!(out.out, "rotated\n");
    // The never-used workspace knew only the ed25519 key: refused (so the check is real).
    let out = run(r.gw.ssh("alice", "unused", &r.alice.login).arg("true"));
    assert_keyport_failure(&out, &[&rotated.host_fingerprint()], "unlearned key");
    r.sshd = rotated;
}
