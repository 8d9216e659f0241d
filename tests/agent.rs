//! The key service through real tools: inside keyport sessions, `git clone`/`git push` and
//! plain `ssh` to a real OpenSSH `sshd` (started here, its authorized_keys holding the user's
//! keyport key) sign with the in-memory key; `ssh-add` lists it and cannot add; the private key
//! is in no file, temp dir or log; `ssh -A` merges the client's keys; another OS account cannot
//! use the socket; regenerating takes effect at the next signature. The agent socket also
//! survives a raw protocol abuse session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client_agent::{ClientAgent, wait_gone};
use common::custody::{
    Custody, assert_no_answer_holds, assert_no_process_holds, assert_nowhere, live_session,
};
use common::sshd::{Sshd, bare_repo};
use common::{Daemon, Http, OsAccount, Sandbox, keyport_user, metric, require_tool};
use keyport_keys::KeyPair;
use serde_json::json;

/// A child process killed and reaped when the test ends, failed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Root is needed for what these tests must show: sessions of other OS accounts, and an sshd
/// that lets them in. CI runs as root.
fn as_root() -> bool {
    if !keyport::testing::needs_root("OS accounts and an sshd that lets them in") {
        return false;
    }
    require_tool("useradd");
    require_tool("git");
    require_tool("ssh-add");
    true
}

/// A daemon any OS account's sessions can run keyport from, and its bootstrap admin's API.
fn started() -> (Sandbox, Daemon, Http) {
    let sb = Sandbox::new();
    sb.client_key("id_ed25519");
    let daemon = sb.serve_public(&[]);
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    (sb, daemon, admin)
}

fn public_key(sb: &Sandbox, user: &str) -> String {
    let out = sb.ok(&["key", "show", "--user", user, "-o", "json"]);
    let key: serde_json::Value = serde_json::from_str(&out).unwrap();
    key["public_key"].as_str().unwrap().to_string()
}

/// Runs `script` in a keyport session; returns (success, stdout, stderr).
fn session(daemon: &Daemon, user: &str, key: &Path, script: &str) -> (bool, String, String) {
    let out = daemon
        .ssh(user, key)
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A session kept open (until the guard drops) and the value of its
/// environment variable `var`.
fn held_session(daemon: &Daemon, user: &str, key: &Path, var: &str) -> (Killed, String) {
    let mut child = Killed(
        daemon
            .ssh(user, key)
            .arg(format!("echo \"${var}\"; exec sleep 300"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_string())
}

fn sign_events(api: &Http) -> Vec<serde_json::Value> {
    let r = api.get("audit");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "key.sign")
        .cloned()
        .collect()
}

#[test]
fn git_and_ssh_sign_with_the_in_memory_key_and_nothing_else_holds_it() {
    if !as_root() {
        return;
    }
    let (sb, daemon, admin) = started();
    let account = OsAccount::create("kpg");
    let (login, api) = keyport_user(&sb, &daemon, &admin, "dev", &account);
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "token", "value": "in-session-cli-sees-this-name", "env": "TOKEN"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let sshd = Sshd::start(&sb, &account.name);
    let original = public_key(&sb, "dev");
    sshd.authorize(&[&original]);
    sshd.trust(&account);
    let repo = bare_repo(&sb, &account);
    let (port, acct) = (sshd.port, &account.name);
    let url = format!("ssh://{acct}@127.0.0.1:{port}{}", repo.display());
    // Sessions' PATH is the system's; this build of keyport is not installed on it.
    let kp = sb.public_binary().display().to_string();

    let script = format!(
        "set -e; cd \"$HOME\"
         echo \"dir=$KEYPORT_SESSION_DIR\"; echo \"sock=$SSH_AUTH_SOCK\"; echo \"git=$GIT_SSH_COMMAND\"
         ssh-add -l
         git clone -q {url} work
         cd work; git -c user.name=k -c user.email=k@example.com commit -q --allow-empty -m pushed-by-keyport
         git push -q origin HEAD
         ssh -p {port} {acct}@127.0.0.1 echo plain-ssh-ok
         ssh-keygen -q -t ed25519 -N '' -C other -f \"$HOME/other\"
         if ssh-add \"$HOME/other\" 2>/dev/null; then echo add-accepted; else echo add-refused; fi
         rm -f \"$HOME/other\" \"$HOME/other.pub\"
         ssh-add -D 2>/dev/null && echo remove-accepted || echo remove-refused
         ssh-add -x </dev/null 2>/dev/null && echo lock-accepted || echo lock-refused
         {kp} secret list
         {kp} key show
         sleep 20 | {kp} secret create dumpcheck --env DUMPCHECK >/dev/null 2>&1 & cli=$!
         sleep 20 & plain=$!
         sleep 0.5
         echo \"cli_owner=$(stat -c %U /proc/$cli/environ)\"
         echo \"plain_owner=$(stat -c %U /proc/$plain/environ)\"
         kill $cli $plain"
    );
    // The session stays open after its work, so the key can be looked for while it lives
    // (a key written to a temp file for the session and removed at its end shows then).
    let errors = sb.dir.path().join("session.err");
    let (live, out) = live_session(&daemon, "dev", &login, &script, &errors);
    let err = std::fs::read_to_string(&errors).unwrap_or_default();
    // ssh found the agent's key for the public key it was given: it never tried a file.
    assert!(!err.contains("Load key"), "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let (dir, sock) = (PathBuf::from(field("dir")), field("sock"));
    assert_eq!(Path::new(&sock).parent(), Some(dir.as_path()));
    assert_eq!(field("git"), format!("{kp} gitssh --"));
    let fingerprint = keyport_keys::LoginKey::parse(&original)
        .unwrap()
        .fingerprint();
    assert!(
        out.contains(&format!("256 {fingerprint} keyport:dev (ED25519)")),
        "{out}"
    );
    assert!(out.contains("plain-ssh-ok"), "{out}");
    // The CLI marks itself non-dumpable (PR_SET_DUMPABLE 0): the kernel then hands its /proc
    // entries (not the directory) to root; a plain process of the same account keeps its own.
    assert_eq!(field("cli_owner"), "root", "{out}");
    assert_eq!(field("plain_owner"), account.name, "{out}");
    for refused in ["add-refused", "remove-refused", "lock-refused"] {
        assert!(out.contains(refused), "{out}");
    }
    // The in-session CLI: no login, no token in the environment.
    assert!(out.contains("token") && out.contains("TOKEN"), "{out}");
    assert!(out.contains(&fingerprint), "{out}");
    let log = Command::new("git")
        .args(["-c", "safe.directory=*", "--git-dir"])
        .arg(&repo)
        .args(["log", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout),
        "pushed-by-keyport\nseed\n"
    );
    let original_pair = sb.vault().open_user_key("dev").unwrap();
    let keys = [Custody::of(&original_pair)];
    let places = |dir: &Path| {
        vec![
            (sb.data(), 2),
            (dir.to_path_buf(), 3),
            (account.home.clone(), 8),
            (PathBuf::from("/tmp"), 5),
            (PathBuf::from("/var/tmp"), 5),
            (PathBuf::from("/dev/shm"), 5),
        ]
    };
    // While the session lives: its directory, the disk, its processes' environments, and
    // every API answer.
    assert!(dir.is_dir(), "the session directory exists while it runs");
    assert_nowhere(&keys, &places(&dir), "during the session");
    assert_no_process_holds(&keys, daemon.pid());
    assert_no_answer_holds(&keys, &daemon, &api);
    drop(live);
    wait_gone(&dir);

    // Every signature is audited: which key, which process, for which host.
    let events = sign_events(&api);
    assert!(events.len() >= 3, "clone, push, ssh: {events:?}");
    for event in &events {
        let detail = &event["detail"];
        assert_eq!(detail["key_fingerprint"], fingerprint.as_str());
        assert_eq!(detail["key_source"], "keyport");
        assert_eq!(
            detail["destination_host_key"],
            sshd.host_fingerprint().as_str()
        );
        assert_eq!(detail["exe"], "/usr/bin/ssh", "{event}");
        assert!(detail["pid"].as_i64().unwrap() > 1);
        assert!(detail["session"].as_u64().is_some());
    }
    let metrics = Http::new(&daemon.url, None).get("metrics").body;
    assert!(
        metric(
            &metrics,
            "keyport_agent_signatures_total{key_type=\"ssh-ed25519\"}"
        ) >= events.len() as f64
    );

    // And after it: the disk and every log.
    assert_nowhere(&keys, &places(&dir), "after the session");
    let logs = daemon.log() + &sshd.log();
    for key in &keys {
        assert_eq!(key.found_in(logs.as_bytes()), None, "the key is in a log");
    }
    // Core dumps are off for the daemon.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    // And non-dumpable (a root daemon's /proc files are root's anyway, so the daemon reports
    // the flag it read back from the kernel with PR_GET_DUMPABLE).
    assert!(daemon.log().contains("dumpable=false"), "{}", daemon.log());

    // Regenerate inside a session: the very next signature uses the new key, which the sshd
    // (still trusting the old one) refuses, and gitssh says what to register, and where.
    let script = format!(
        "{kp} key regenerate --yes >/dev/null
         $GIT_SSH_COMMAND -p {port} {acct}@127.0.0.1 echo should-not-run; echo \"exit=$?\""
    );
    let (_, out, err) = session(&daemon, "dev", &login, &script);
    let renewed = public_key(&sb, "dev");
    assert_ne!(renewed, original);
    assert!(
        out.contains("exit=255") && !out.contains("should-not-run"),
        "{out}{err}"
    );
    assert!(err.contains("refused your keyport key"), "{err}");
    assert!(err.contains(renewed.trim()), "{err}");
    assert!(err.contains("authorized_keys"), "{err}");
    // With the new key registered instead of the old one, it works — no restart.
    sshd.authorize(&[&renewed]);
    let script = format!(
        "git clone -q {url} \"$HOME/again\" && ssh -p {port} {acct}@127.0.0.1 echo renewed-ok"
    );
    let (ok, out, err) = session(&daemon, "dev", &login, &script);
    assert!(ok && out.contains("renewed-ok"), "{out}{err}");
    // Neither the old key nor the new one is anywhere.
    let renewed_pair = sb.vault().open_user_key("dev").unwrap();
    let keys = Custody::all(&[&original_pair, &renewed_pair]);
    assert_nowhere(&keys, &places(&dir), "after the regeneration");
    assert_no_answer_holds(&keys, &daemon, &api);
    let logs = daemon.log() + &sshd.log();
    for key in &keys {
        assert_eq!(key.found_in(logs.as_bytes()), None, "a key is in a log");
    }
}

#[test]
fn forwarded_agent_keys_are_listed_and_used_alongside_the_keyport_key() {
    if !as_root() {
        return;
    }
    let (sb, daemon, admin) = started();
    let account = OsAccount::create("kpf");
    let (login, api) = keyport_user(&sb, &daemon, &admin, "fwd", &account);
    let sshd = Sshd::start(&sb, &account.name);
    sshd.trust(&account);

    // The client's own agent, holding a key keyport never saw.
    let client_agent = ClientAgent::start(&sb, "forwarded");
    let agent_sock = client_agent.sock.clone();
    let client_line = client_agent.public_line.clone();
    let keyport_line = public_key(&sb, "fwd");
    let forwarded = |script: &str| {
        let out = daemon
            .ssh("fwd", &login)
            .arg("-A")
            .arg(script)
            .env("SSH_AUTH_SOCK", &agent_sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (port, acct) = (sshd.port, &account.name);

    // Both keys listed; 20 agent clients at once each see both.
    let (ok, out) = forwarded(
        "ssh-add -l; t=$(mktemp -d); for i in $(seq 20); do (ssh-add -l | wc -l > $t/$i) & done; \
         wait; cat $t/*; rm -r $t",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("keyport:fwd") && out.contains("forwarded"),
        "{out}"
    );
    // The keyport key comes first, then the forwarded one.
    let listed: Vec<&str> = out.lines().take(2).collect();
    assert!(
        listed[0].contains("keyport:fwd") && !listed[1].contains("keyport:fwd"),
        "{out}"
    );
    assert_eq!(out.lines().filter(|l| l.trim() == "2").count(), 20, "{out}");

    // The client's key signs (relayed to the client), and so does the keyport key.
    for (line, which) in [(&client_line, "client"), (&keyport_line, "keyport")] {
        sshd.authorize(&[line.trim()]);
        let (ok, out) = forwarded(&format!(
            "ssh -p {port} {acct}@127.0.0.1 echo signed-by-{which}"
        ));
        assert!(
            ok && out.contains(&format!("signed-by-{which}")),
            "{out}\n{}",
            sshd.log()
        );
    }
    let sources: Vec<String> = sign_events(&api)
        .iter()
        .map(|e| e["detail"]["key_source"].as_str().unwrap().to_string())
        .collect();
    assert!(sources.contains(&"forwarded".to_string()), "{sources:?}");
    assert!(sources.contains(&"keyport".to_string()), "{sources:?}");

    // Without -A the client's key is not there.
    let (ok, out, _) = session(&daemon, "fwd", &login, "ssh-add -l");
    assert!(
        ok && out.lines().count() == 1 && out.contains("keyport:fwd"),
        "{out}"
    );
}

#[test]
fn another_os_account_cannot_use_a_session_socket() {
    if !as_root() {
        return;
    }
    let (sb, daemon, admin) = started();
    let (alice_os, bob_os) = (OsAccount::create("kpx"), OsAccount::create("kpy"));
    let (alice_key, _) = keyport_user(&sb, &daemon, &admin, "alice", &alice_os);
    keyport_user(&sb, &daemon, &admin, "bob", &bob_os);

    let (alice, line) = held_session(&daemon, "alice", &alice_key, "KEYPORT_SESSION_DIR");
    let dir = PathBuf::from(line.trim());
    let sock = dir.join("agent.sock");
    assert!(sock.exists(), "{line}");
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            meta.permissions().mode() & 0o777
        ),
        (alice_os.uid, 0o700)
    );
    let bin = sb.public_binary();
    let as_user = |os: &OsAccount, cmd: &str| {
        Command::new("runuser")
            .args(["-u", &os.name, "--", "sh", "-c", cmd])
            .env("SSH_AUTH_SOCK", &sock)
            .env("KEYPORT_SESSION_DIR", &dir)
            .env("KEYPORT_BIN", &bin)
            .env("HOME", &os.home)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let alice_fp = keyport_keys::LoginKey::parse(&public_key(&sb, "alice"))
        .unwrap()
        .fingerprint();
    // The directory keeps bob out.
    let out = as_user(&bob_os, "ssh-add -l");
    assert!(!out.status.success(), "{out:?}");
    // Even with the directory and sockets opened up, the daemon checks who connects.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["agent.sock", "api.sock"] {
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let out = as_user(&bob_os, "ssh-add -l");
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&alice_fp));
    let out = as_user(&bob_os, "\"$KEYPORT_BIN\" key show");
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&alice_fp));
    // Alice herself, from outside the session, is let in.
    let out = as_user(&alice_os, "ssh-add -l; \"$KEYPORT_BIN\" key show");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(&alice_fp)
            .count(),
        2,
        "{out:?}"
    );
    // Alice is removed and a new "alice" is made: the old session's sockets serve neither
    // her removed key nor the new alice's.
    assert_eq!(admin.delete("users/alice").status, 204);
    keyport_user(&sb, &daemon, &admin, "alice", &alice_os);
    let renewed_fp = keyport_keys::LoginKey::parse(&public_key(&sb, "alice"))
        .unwrap()
        .fingerprint();
    let out = as_user(&alice_os, "ssh-add -l; \"$KEYPORT_BIN\" key show");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        !seen.contains(&alice_fp) && !seen.contains(&renewed_fp),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keyport:"),
        "{out:?}"
    );
    drop(alice);
    wait_gone(&dir);
}

/// One agent request over `stream`; the answer's payload, or `None` if the agent hung up.
fn ask(stream: &mut UnixStream, payload: &[u8]) -> Option<Vec<u8>> {
    stream
        .write_all(&keyport_keys::agent::frame(payload))
        .unwrap();
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut answer = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn the_agent_socket_refuses_changes_and_survives_malformed_requests() {
    use keyport_keys::agent::{Request, Response};
    let (sb, daemon, key, _) = common::ssh_daemon(&[]);
    let me = common::me().name;
    let (session, line) = held_session(&daemon, &me, &key, "SSH_AUTH_SOCK");
    let connect = || UnixStream::connect(line.trim()).unwrap();
    let mut s = connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let failure = Response::Failure.encode();
    // Add (17), remove-all (19), lock (22, with a passphrase), unknown (99), an unknown
    // extension, a session-bind whose signature does not verify, a truncated sign request.
    let refused: [&[u8]; 7] = [
        &[17, 0, 0, 0, 11, b's', b's', b'h'],
        &[19],
        &[22, 0, 0, 0, 2, b'p', b'w'],
        &[99],
        &Request::Extension("query".into()).encode(),
        &Request::SessionBind(keyport_keys::agent::SessionBind {
            host_key: vec![1; 10],
            session_id: vec![2; 32],
            signature: vec![3; 10],
            forwarding: false,
        })
        .encode(),
        &[13, 0, 0, 0, 100, 1, 2, 3],
    ];
    for request in refused {
        assert_eq!(ask(&mut s, request), Some(failure.clone()), "{request:?}");
    }
    // A verified binding is taken once; a connection bound for authentication takes no other.
    let host = KeyPair::generate(keyport_keys::KeyType::Ed25519, "host").unwrap();
    let bind = |session_id: Vec<u8>| {
        Request::SessionBind(keyport_keys::agent::SessionBind {
            host_key: host.public_blob().unwrap(),
            signature: host.sign(&session_id).unwrap(),
            session_id,
            forwarding: false,
        })
        .encode()
    };
    let success = Response::Success.encode();
    assert_eq!(ask(&mut s, &bind(vec![7; 32])), Some(success));
    assert_eq!(ask(&mut s, &bind(vec![8; 32])), Some(failure.clone()));
    // The key is listed, and signs; a key it does not hold does not.
    let Ok(Response::Identities(ids)) = Response::parse(&ask(&mut s, &[11]).unwrap()) else {
        panic!("no identities");
    };
    assert_eq!(ids.len(), 1);
    let pair = sb.vault().open_user_key(&me).unwrap();
    assert_eq!(ids[0].key, pair.public_blob().unwrap());
    let sign = |key: Vec<u8>| Request::Sign {
        key,
        data: b"challenge".to_vec(),
        flags: 0,
    };
    let answer = ask(&mut s, &sign(ids[0].key.clone()).encode()).unwrap();
    let Ok(Response::Signature(sig)) = Response::parse(&answer) else {
        panic!("no signature: {answer:?}");
    };
    let sig = russh::keys::ssh_key::Signature::try_from(sig.as_slice()).unwrap();
    russh::keys::signature::Verifier::verify(pair.private().public_key(), b"challenge", &sig)
        .unwrap();
    assert_eq!(ask(&mut s, &sign(vec![0; 51]).encode()), Some(failure));
    // An oversized frame ends the connection at once; the agent goes on serving others.
    s.write_all(&[0, 0x10, 0, 0, 11]).unwrap();
    let (mut rest, asked) = (Vec::new(), Instant::now());
    // Closed (a reset, when the bytes it never read were still queued), not timed out.
    match s.read_to_end(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection stayed open: {other:?}"),
    }
    assert!(asked.elapsed() < Duration::from_secs(5));
    let mut again = connect();
    assert_eq!(ask(&mut again, &[11]).map(|a| a[0]), Some(12));
    drop(again);
    drop(session);
    assert!(daemon.log().contains("keyport ready"));
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[test]
fn gitssh_outside_a_session_says_so() {
    let sb = Sandbox::new();
    let out = sb
        .keyport()
        .args([
            "gitssh",
            "--",
            "-p",
            "22",
            "git@example.com",
            "git-upload-pack 'x'",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only works inside a keyport SSH session"),
        "{err}"
    );
    let gone = sb.dir.path().join("ended-session");
    let out = sb
        .keyport()
        .env("KEYPORT_SESSION_DIR", &gone)
        .args(["gitssh", "--", "git@example.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is gone (its session has ended)"), "{err}");
}
