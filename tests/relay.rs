//! Relay mode end to end (design.md, "Relay mode"): the real `ssh`, `scp`, `sftp` and `git`
//! through keyport (`alice:dev1@`) to real OpenSSH sshds started here, each case compared with
//! the same client straight to the sshd where the two must agree. What runs upstream runs as
//! the workspace login with the user's env and file secrets (file secrets under the ledger's
//! rules), keyport's in-memory key as the workspace's agent, exit codes, signals, ptys and
//! bulk data relayed exactly and with bounded memory; failures (host key, unreachable, key
//! refused) exit 255 with the reason and are not retried into OpenSSH's PerSourcePenalties; a
//! workspace a user may not use looks like one that does not exist. All need root (OS
//! accounts, sshd).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "relay/failures.rs"]
mod failures;
#[path = "relay/sources.rs"]
mod sources;
#[path = "relay/transfer.rs"]
mod transfer;
#[path = "relay/users.rs"]
mod users;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::custody::{Custody, assert_nowhere, live_session};
use common::pty::pty_sizes;
use common::relay::{Account, Relay, argv, names, run, run_with_input, russh_exec};
use common::require_tool;
use common::sshd::{Sshd, bare_repo};
use serde_json::json;

/// `path`'s owner and permission bits.
fn owner_mode(path: &std::path::Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.mode() & 0o777)
}

#[test]
fn relayed_sessions_run_upstream_as_the_workspace_login_with_alices_secrets() {
    let Some(r) = Relay::start() else { return };
    let file_value: &[u8] = b"gh-file\0\x01\xff\nalice";
    r.alice
        .secret(json!({"name": "github", "value": "ghp-alice-relay-1", "env": "GITHUB_TOKEN"}));
    r.alice
        .secret(json!({"name": "npm", "value": "npm-alice-relay-1", "env": "NPM_TOKEN"}));
    r.alice.secret(json!({
        "name": "ghfile",
        "value_base64": base64::engine::general_purpose::STANDARD.encode(file_value),
        "file": "~/.config/gh/hosts.yml",
    }));
    let sessions_before = r.gw.sample("keyport_relay_sessions_total");
    let starts_before = r.gw.audit("alice", "relay.start").len();

    // The command itself sees the file: written before it started.
    let out = run(r.relayed().arg(
        "id -un; echo \"user=$KEYPORT_USER\"; echo \"workspace=$KEYPORT_WORKSPACE\"; \
         echo \"gh=$GITHUB_TOKEN\"; echo \"npm=$NPM_TOKEN\"; echo \"home=$HOME\"; \
         echo \"file=$(od -An -tx1 ~/.config/gh/hosts.yml | tr -d ' \\n')\"",
    ))
    .ok("relayed session");
    let hex: String = file_value.iter().map(|b| format!("{b:02x}")).collect();
    let expected = format!(
        "{}\nuser=alice\nworkspace=dev1\ngh=ghp-alice-relay-1\nnpm=npm-alice-relay-1\n\
         home={}\nfile={hex}\n",
        r.ws.name,
        r.ws.home.display()
    );
    assert_eq!(out, expected, "what the relayed command saw");

    // The file is the workspace login's, in its home, 0600, new parent dirs 0700.
    let file = r.ws.home.join(".config/gh/hosts.yml");
    assert_eq!(std::fs::read(&file).unwrap(), file_value, "byte-exact");
    assert_eq!(owner_mode(&file), (r.ws.uid, 0o600), "{}", file.display());
    for dir in [r.ws.home.join(".config"), r.ws.home.join(".config/gh")] {
        assert_eq!(owner_mode(&dir), (r.ws.uid, 0o700), "{}", dir.display());
    }
    // Nothing of it was written on the gateway's side.
    assert!(
        !r.alice.local.home.join(".config/gh/hosts.yml").exists(),
        "the relayed session's file was written into alice's local home"
    );

    for _ in 0..2 {
        run(r.relayed().arg("true")).ok("relayed true");
    }
    // One relay.start per relayed session, naming what went upstream.
    let starts = r.gw.audit("alice", "relay.start");
    assert_eq!(starts.len() - starts_before, 3, "{starts:?}");
    let detail = &starts.last().unwrap()["detail"];
    assert_eq!(detail["workspace"], "dev1", "{detail}");
    assert_eq!(detail["upstream"], r.sshd.address().as_str(), "{detail}");
    assert_eq!(
        detail["host_key"],
        r.sshd.host_fingerprint().as_str(),
        "{detail}"
    );
    let secrets = names(&detail["secrets"]);
    for name in ["github", "npm", "ghfile"] {
        assert!(secrets.contains(&name.to_string()), "{detail}");
    }
    assert!(
        detail.get("refused_env").is_some() && names(&detail["refused_env"]).is_empty(),
        "this sshd accepts every name: {detail}"
    );
    assert_eq!(
        r.gw.sample("keyport_relay_sessions_total") - sessions_before,
        3.0,
        "{}",
        r.gw.metrics()
    );

    // No value in any log or audit answer.
    let audit = r.gw.admin.get("audit?limit=1000").body;
    let logs = r.gw.daemon.log() + &r.sshd.log();
    for value in ["ghp-alice-relay-1", "npm-alice-relay-1"] {
        assert!(!audit.contains(value), "the audit log holds {value}");
        assert!(!logs.contains(value), "a log holds {value}");
    }

    // Without a workspace in the name, alice's session stays local.
    let local = run(r.gw.daemon.ssh("alice", &r.alice.login).arg("id -un")).ok("local");
    assert_eq!(
        local.trim(),
        r.alice.local.name,
        "ssh alice@ must stay local"
    );
}

#[test]
fn the_env_upstream_follows_the_local_precedence_and_nothing_local_leaks() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[env]\nTEAM_NAME = \"ops\"\nGITHUB_TOKEN = \"from-operator\"\nLANG = \"en_US.UTF-8\"\n",
    )
    .unwrap();
    let env = [("KEYPORT_CONFIG", config.path().to_str().unwrap())];
    // An sshd reachable only from keyport may accept every name: then whatever keyport
    // sends shows, including anything of the gateway's that does not belong upstream.
    let Some(r) = Relay::start_with(&env, 0, |b| b.config("AcceptEnv *")) else {
        return;
    };
    r.alice
        .secret(json!({"name": "github", "value": "ghp-over-operator", "env": "GITHUB_TOKEN"}));
    let out = run(r
        .relayed()
        .args(["-o", "SetEnv=LANG=C.UTF-8 LC_TIME=C FOO_BAR=not-accepted"])
        .arg(
            "printenv LANG LC_TIME TEAM_NAME GITHUB_TOKEN; echo \"foo=${FOO_BAR:-unset}\"; \
             echo \"gitssh=${GIT_SSH_COMMAND:-unset}\"; echo \"dir=${KEYPORT_SESSION_DIR:-unset}\"; \
             echo \"home=$HOME\"; case \"$SSH_AUTH_SOCK\" in /tmp/ssh-*) echo sshd-agent;; \
             *) echo \"agent=$SSH_AUTH_SOCK\";; esac; ssh-add -l >/dev/null && echo agent-ok",
        ));
    assert_eq!(out.code, Some(0), "{out:?}");
    // Client env over operator env, secrets over both; keyport's accept list still applies;
    // the gateway's own session paths (its gitssh, its session dir, its agent socket) stay
    // on the gateway: upstream, sshd's agent socket is the one that works.
    let expected = format!(
        "C.UTF-8\nC\nops\nghp-over-operator\nfoo=unset\ngitssh=unset\ndir=unset\nhome={}\n\
         sshd-agent\nagent-ok\n",
        r.ws.home.display()
    );
    assert_eq!(out.out, expected, "{out:?}");
    assert_eq!(out.err, "", "every name was accepted: nothing to report");
}

#[test]
fn exit_codes_signals_and_stdio_come_back_as_from_the_sshd_itself() {
    let Some(r) = Relay::start() else { return };
    for (command, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 3", 3),
        ("exit 255", 255),
        ("echo to-out; echo to-err >&2; exit 2", 2),
        ("kill -TERM $$", 255),
        ("kill -9 $$", 255),
        (
            "head -c 3000000 /dev/zero | tr '\\0' o; head -c 2000000 /dev/zero | tr '\\0' e >&2",
            0,
        ),
    ] {
        let direct = run(r.direct().arg(command));
        // The reference itself: else the comparison below could pass for the harness's sake.
        assert_eq!(direct.code, Some(code), "sshd: {command}: {direct:?}");
        let relayed = run(r.relayed().arg(command));
        assert_eq!(
            relayed.code, direct.code,
            "{command}: exit code ({relayed:?})"
        );
        assert!(relayed.out == direct.out, "{command}: stdout differs");
        assert_eq!(relayed.err, direct.err, "{command}: stderr");
    }
    // ssh reports a signal death as sshd sent it: as exit-signal.
    let direct = run(r.direct().args(["-v", "kill -TERM $$"]));
    let relayed = run(r.relayed().args(["-v", "kill -TERM $$"]));
    assert!(direct.err.contains("rtype exit-signal"), "{direct:?}");
    assert!(relayed.err.contains("rtype exit-signal"), "{relayed:?}");

    // stdin reaches the command and its end is passed on (cat ends).
    let input = Arc::new(b"line one\nline two".to_vec());
    let relayed = run_with_input(r.relayed().arg("cat; echo END"), input.clone());
    let direct = run_with_input(r.direct().arg("cat; echo END"), input);
    assert_eq!(relayed.out, "line one\nline twoEND\n", "{relayed:?}");
    assert_eq!(relayed, direct);

    // `signal` requests reach the upstream program, and exit-signal names come back (a
    // client that can send them: OpenSSH's cannot).
    let relay_port = r.gw.daemon.ssh_port;
    let probe = |port: u16, user: &str, key: &std::path::Path| {
        (
            russh_exec(
                port,
                user,
                key,
                "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
                Some(russh::Sig::USR1),
            ),
            russh_exec(port, user, key, "kill -TERM $$", None),
        )
    };
    let direct = probe(r.sshd.port, &r.ws.name, &r.direct);
    assert_eq!(direct.0.exit_status, Some(7), "sshd: {direct:?}");
    assert!(direct.0.stdout.contains("got-usr1"), "sshd: {direct:?}");
    assert_eq!(
        direct.1.exit_signal.as_deref(),
        Some("TERM"),
        "sshd: {direct:?}"
    );
    let relayed = probe(relay_port, "alice:dev1", &r.alice.login);
    assert_eq!(relayed, direct, "relayed (left) vs direct (right)");
}

#[test]
fn a_relayed_pty_gets_its_size_window_changes_term_and_shell() {
    let Some(r) = Relay::start() else { return };
    let script = "stty size; echo first; sleep 1; stty size; echo done";
    for (what, mut cmd) in [("direct", r.direct()), ("relayed", r.relayed())] {
        cmd.args(["-tt", script]);
        let shown = pty_sizes(&argv(&cmd));
        assert!(shown.contains("30 100"), "{what}: initial size: {shown}");
        assert!(
            shown.contains("40 120"),
            "{what}: the window change did not reach the pty: {shown}"
        );
    }
    let out = run(r
        .relayed()
        .args(["-tt", "tty; echo TERM=$TERM; id -un"])
        .env("TERM", "xterm-keyport"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.out.contains("/dev/pts/"), "{out:?}");
    assert!(out.out.contains("TERM=xterm-keyport"), "{out:?}");
    assert!(out.out.contains(&r.ws.name), "{out:?}");

    // A login shell (no command) reads the terminal and its exit code comes back.
    let input = Arc::new(b"echo WS=$KEYPORT_WORKSPACE; exit 3\n".to_vec());
    let relayed = run_with_input(r.relayed().arg("-tt"), input.clone());
    assert_eq!(relayed.code, Some(3), "{relayed:?}");
    assert!(relayed.out.contains("WS=dev1"), "{relayed:?}");
    let direct = run_with_input(r.direct().arg("-tt"), input);
    assert_eq!(direct.code, Some(3), "sshd: {direct:?}");
}

#[test]
fn names_the_upstream_refuses_are_listed_with_acceptenv_and_the_session_still_runs() {
    let Some(r) = Relay::start() else { return };
    r.alice
        .secret(json!({"name": "github", "value": "ghp-refused-1", "env": "GITHUB_TOKEN"}));
    r.alice
        .secret(json!({"name": "npm", "value": "npm-refused-1", "env": "NPM_TOKEN"}));
    // A second sshd that accepts none of those names.
    let plain = Sshd::build(&r.gw.sb, "plain").login(&r.ws.name).start();
    plain.authorize(&[&r.alice.public]);
    r.gw.add_workspace(
        "dev2",
        &plain.address(),
        &r.ws.name,
        "alice",
        plain.host_line(),
    );
    let out = run(r
        .gw
        .ssh("alice", "dev2", &r.alice.login)
        .arg("echo \"gh=${GITHUB_TOKEN:-unset}\"; echo ran"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.out, "gh=unset\nran\n", "{out:?}");
    let refused = [
        "GITHUB_TOKEN",
        "NPM_TOKEN",
        "KEYPORT_USER",
        "KEYPORT_WORKSPACE",
    ];
    assert!(out.first_err_line().starts_with("keyport: "), "{out:?}");
    for name in refused.iter().chain(&["AcceptEnv"]) {
        assert!(out.err.contains(name), "stderr lacks {name}: {out:?}");
    }
    for value in ["ghp-refused-1", "npm-refused-1"] {
        assert!(!out.err.contains(value), "stderr shows a value: {out:?}");
    }
    let start =
        r.gw.audit("alice", "relay.start")
            .into_iter()
            .rfind(|e| e["detail"]["workspace"] == "dev2")
            .unwrap_or_else(|| panic!("no relay.start for dev2"));
    let listed = names(&start["detail"]["refused_env"]);
    for name in refused {
        assert!(listed.contains(&name.to_string()), "{start}");
    }
    // The sshd that accepts them gets them, and says nothing.
    let out = run(r.relayed().arg("echo \"gh=$GITHUB_TOKEN\""));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.out, "gh=ghp-refused-1\n");
    assert_eq!(out.err, "", "nothing to report for dev1");
}

#[test]
fn the_workspace_agent_is_keyports_key_and_git_works_with_no_key_on_disk() {
    let Some(r) = Relay::start() else { return };
    require_tool("git");
    require_tool("ssh-add");
    let git_account = Account::create("kpgit");
    let git_sshd = Sshd::build(&r.gw.sb, "git")
        .login(&git_account.name)
        .start();
    git_sshd.authorize(&[&r.alice.public]);
    let repo = bare_repo(&r.gw.sb, &git_account);
    let fingerprint = r.alice.fingerprint();
    let signs_before = r.gw.audit("alice", "key.sign").len();

    let script = format!(
        "cd \"$HOME\"
         echo \"sock=$SSH_AUTH_SOCK\"
         ssh-add -l; echo \"list=$?\"
         seq 8 | timeout 30 xargs -P8 -n1 sh -c 'ssh-add -l' > par.out 2>&1; echo \"xargs=$?\"
         echo \"parallel=$(grep -c {fingerprint} par.out)\"
         export GIT_SSH_COMMAND='ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -p {port}'
         git clone -q {login}@127.0.0.1:{repo} work; echo \"clone=$?\"
         cd work && git -c user.name=k -c user.email=k@example.com commit -q --allow-empty -m pushed-through-relay && git push -q origin HEAD; echo \"push=$?\"",
        port = git_sshd.port,
        login = git_account.name,
        repo = repo.display(),
    );
    let errors = r.gw.sb.dir.path().join("session.err");
    // The session stays open after its work, so the key can be looked for while it lives.
    let (live, out) = live_session(&r.gw.daemon, "alice:dev1", &r.alice.login, &script, &errors);
    let err = std::fs::read_to_string(&errors).unwrap_or_default();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in:\n{out}\n{err}"))
            .to_string()
    };
    assert!(
        !field("sock").is_empty(),
        "no agent upstream:\n{out}\n{err}"
    );
    assert_eq!(field("list"), "0", "{out}\n{err}");
    assert!(out.contains(&fingerprint), "ssh-add -l:\n{out}");
    assert_eq!(field("xargs"), "0", "parallel ssh-add:\n{out}\n{err}");
    assert_eq!(field("parallel"), "8", "{out}");
    assert_eq!(field("clone"), "0", "{out}\n{err}\n{}", git_sshd.log());
    assert_eq!(field("push"), "0", "{out}\n{err}");
    let log = std::process::Command::new("git")
        .args(["-c", "safe.directory=*", "--git-dir"])
        .arg(&repo)
        .args(["log", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout),
        "pushed-through-relay\nseed\n"
    );
    // Signed by keyport's agent, audited as every signature is.
    let signs = r.gw.audit("alice", "key.sign");
    assert!(signs.len() - signs_before >= 2, "clone and push: {signs:?}");
    for event in &signs[signs_before..] {
        assert_eq!(event["detail"]["key_fingerprint"], fingerprint.as_str());
    }

    let pair = r.gw.sb.vault().open_user_key("alice").unwrap();
    let keys = [Custody::of(&pair)];
    let places = vec![
        (r.ws.home.clone(), 8),
        (git_account.home.clone(), 8),
        (std::path::PathBuf::from("/tmp"), 5),
        (std::path::PathBuf::from("/var/tmp"), 5),
        (std::path::PathBuf::from("/dev/shm"), 5),
    ];
    assert_nowhere(&keys, &places, "during the relayed session");
    drop(live);
    assert_nowhere(&keys, &places, "after the relayed session");
    let logs = r.gw.daemon.log() + &r.sshd.log() + &git_sshd.log();
    assert_eq!(
        keys[0].found_in(logs.as_bytes()),
        None,
        "the key is in a log"
    );

    // With `ssh -A` the client's own keys are offered upstream too, after keyport's.
    let client_agent = common::client_agent::ClientAgent::start(&r.gw.sb, "forwarded");
    let out = run(r
        .relayed()
        .args(["-A", "ssh-add -l"])
        .env("SSH_AUTH_SOCK", &client_agent.sock));
    assert_eq!(out.code, Some(0), "{out:?}");
    let listed: Vec<&str> = out.out.lines().collect();
    assert_eq!(listed.len(), 2, "{out:?}");
    assert!(listed[0].contains(&fingerprint), "{out:?}");
    assert!(listed[1].contains("forwarded"), "{out:?}");
}

#[test]
fn file_secrets_upstream_follow_the_ledger() {
    let Some(r) = Relay::start() else { return };
    let session = |command: &str| run(r.relayed().arg(command)).ok(command);
    let home = &r.ws.home;
    let stamp = |path: &std::path::Path| {
        let m = std::fs::metadata(path).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec(), m.size())
    };

    // Written; unchanged: not rewritten at the next session.
    r.alice
        .secret(json!({"name": "cfg", "value": "cfg-v1", "file": "~/.kp/cfg"}));
    assert_eq!(session("cat ~/.kp/cfg"), "cfg-v1");
    let cfg = home.join(".kp/cfg");
    let written = stamp(&cfg);
    std::thread::sleep(Duration::from_millis(20));
    session("true");
    assert_eq!(stamp(&cfg), written, "rewritten though unchanged");

    // Deleted while unchanged: removed at the next relayed session.
    assert_eq!(r.alice.api.delete("users/me/secrets/cfg").status, 204);
    assert_eq!(
        session("test -e ~/.kp/cfg && echo present || echo absent"),
        "absent\n"
    );
    assert!(!cfg.exists());

    // Edited upstream, then deleted: kept, and audited.
    r.alice
        .secret(json!({"name": "edited", "value": "keyport-wrote", "file": "~/.kp/edited"}));
    session("true");
    let edited = home.join(".kp/edited");
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "keyport-wrote");
    std::fs::write(&edited, "the user's edit").unwrap();
    let kept_before = r.gw.audit("alice", "file.kept-changed").len();
    assert_eq!(r.alice.api.delete("users/me/secrets/edited").status, 204);
    session("true");
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "the user's edit");
    assert!(
        r.gw.audit("alice", "file.kept-changed").len() > kept_before,
        "no file.kept-changed event"
    );

    // Edited upstream, then a new value: the new value, the user's version kept beside it.
    r.alice
        .secret(json!({"name": "saved", "value": "saved-v1", "file": "~/.kp/saved"}));
    session("true");
    let saved = home.join(".kp/saved");
    std::fs::write(&saved, "user-version").unwrap();
    let patched = r.alice.api.send(
        "PATCH",
        "users/me/secrets/saved",
        &json!({"value": "saved-v2"}),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    session("true");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), "saved-v2");
    let beside = home.join(".kp/saved.keyport-saved");
    assert_eq!(
        std::fs::read_to_string(&beside).unwrap_or_default(),
        "user-version",
        "the user's version was not kept as {}",
        beside.display()
    );
}
