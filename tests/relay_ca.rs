//! Relay mode with keyport as the workspaces' SSH user CA (`--auth ca`), end to end against
//! real OpenSSH sshds that trust only keyport's `TrustedUserCAKeys` line for the workspace
//! login (no authorized_keys entry): exec, exit codes, ptys, agent forwarding and `git` work
//! with an ed25519 and an ECDSA P-256 CA; each certificate sshd accepts is the one the
//! `ca.certificate` audit event names (key id `keyport:gw1:alice:dev1:<conn>`, serial); no
//! certificate or private key is left on disk and the CA stays sealed in the data dir; sshd's
//! refusals (another CA, `source-address`, a principal not listed) exit 255 with keyport's
//! message; certificates carry the configured clock skew and nothing more; rotation
//! (`ca rotate|promote|retire`) keeps workspaces on the old CA working through the fallback
//! until it is retired, and `ca status` names them. All need root (OS accounts, sshd).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "relay_ca/refusals.rs"]
mod refusals;
#[path = "relay_ca/rotation.rs"]
mod rotation;
#[path = "relay_ca/skew.rs"]
mod skew;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::ca::{
    Accepted, CERT_TYPE_TEXT, CaGateway, CaSshd, GATEWAY, Scan, accepted_certificates,
    assert_ca_sealed, certificates, fingerprint, leaks, other_sandbox, status_ca, status_workspace,
};
use common::relay::{Account, Gateway, run};
use common::require_tool;
use common::sshd::{Sshd, bare_repo};

/// Seconds since the epoch, now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts every `ca.certificate` event in `events` says what keyport signed for `user` on
/// `workspace` as `login` with CA `ca` (`ca_line`), and that the events and the certificates
/// `sshd` accepted are the same ones (key id and serial), each with that CA's fingerprint.
fn assert_attributed(
    events: &[serde_json::Value],
    accepted: &[Accepted],
    (user, workspace, login): (&str, &str, &str),
    (ca, ca_line): (&str, &str),
) {
    let ca_fp = fingerprint(ca_line);
    let prefix = format!("keyport:{GATEWAY}:{user}:{workspace}:");
    let now = unix_now();
    for event in events {
        let d = &event["detail"];
        assert_eq!(d["workspace"], workspace, "{event}");
        assert_eq!(d["login"], login, "{event}");
        assert_eq!(d["ca"], ca, "{event}");
        assert_eq!(d["ca_fingerprint"], ca_fp.as_str(), "{event}");
        let key_id = d["key_id"].as_str().unwrap_or_default();
        let connection = d["connection"].as_str().unwrap_or_default();
        assert!(
            key_id.starts_with(&prefix) && !connection.is_empty(),
            "{event}"
        );
        assert_eq!(key_id, format!("{prefix}{connection}"), "{event}");
        let serial = d["serial"].as_str().unwrap_or_default();
        assert!(
            serial.parse::<u64>().is_ok(),
            "serial not a decimal string: {event}"
        );
        let (after, before) = (d["valid_after"].as_u64(), d["valid_before"].as_u64());
        let (Some(after), Some(before)) = (after, before) else {
            panic!("validity not unix seconds: {event}");
        };
        assert_eq!(before - after, 600, "now ± 300 s by default: {event}");
        assert!(after <= now && now < before + 120, "{event}");
    }
    let mut audited: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let d = &e["detail"];
            (
                d["key_id"].as_str().unwrap().into(),
                d["serial"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut logged: Vec<(String, String)> = accepted
        .iter()
        .map(|a| (a.key_id.clone(), a.serial.clone()))
        .collect();
    audited.sort();
    logged.sort();
    assert_eq!(audited, logged, "audited (left) vs sshd's log (right)");
    for a in accepted {
        assert_eq!(a.login, login, "{a:?}");
        assert_eq!(a.ca_fingerprint, ca_fp, "{a:?}");
    }
}

/// The one relayed-session body, with the CA `ca init --type ca_type` made (None: the
/// ed25519 one `ca show` makes when there is none).
fn relayed_sessions_log_in_with_keyports_certificate(ca_type: Option<&str>) {
    let Some(gw) = CaGateway::start("", "") else {
        return;
    };
    require_tool("git");
    require_tool("ssh-add");
    let started = SystemTime::now();

    // What `ca status`, `ca show` and sshd's log call the CA type.
    let (expected_type, algorithm, logged_type) = match ca_type {
        Some("ecdsa-p256") => ("ecdsa-p256", "ecdsa-sha2-nistp256 ", "ECDSA"),
        None => ("ed25519", "ssh-ed25519 ", "ED25519"),
        Some(other) => panic!("no test for CA type {other}"),
    };
    // The CA: made by `ca init`, or by `ca show` (with a note) when there is none.
    if let Some(kind) = ca_type {
        gw.ok(&["ca", "init", "--type", kind]);
    } else {
        let out = gw.run(&["ca", "show"]);
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.lines().count(),
            1,
            "only the CA line on stdout: {stdout}"
        );
        assert!(!out.stderr.is_empty(), "no note that a CA was made");
    }
    let lines = gw.ca_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = lines[0].clone();
    assert!(line.starts_with(algorithm), "{line}");
    assert!(
        line.ends_with(&format!(" keyport-user-ca:{GATEWAY}:ca1")),
        "{line}"
    );
    assert_eq!(gw.ca_lines(), lines, "ca show is stable");
    let again = gw.run(&["ca", "init"]);
    assert!(
        !again.status.success(),
        "a second ca init succeeded: {again:?}"
    );
    let status = gw.ca_status();
    let ca1 = status_ca(&status, "ca1").unwrap_or_else(|| panic!("{status}"));
    assert_eq!(ca1["state"], "active", "{status}");
    assert_eq!(ca1["type"], expected_type, "{status}");
    assert_eq!(ca1["fingerprint"], fingerprint(&line).as_str(), "{status}");
    let blob = line.split_whitespace().nth(1).unwrap();
    assert!(
        ca1["public_key"].as_str().is_some_and(|p| p.contains(blob)),
        "{status}"
    );

    // A workspace whose sshd trusts only that line for its login, with an empty
    // authorized_keys: alice's keyport key alone would not get in.
    let alice = gw.member("alice");
    let ws = Account::create("kpw");
    let w = CaSshd::start(&gw.sb, "ws", &ws.name, &lines, &[]);
    let snippet = gw.add_ca_workspace("dev1", &w.sshd, &ws.name, "alice");
    for part in [
        line.clone(),
        format!("Match User {}", ws.name),
        "TrustedUserCAKeys".into(),
        "sshd -t && systemctl reload ssh".into(),
    ] {
        assert!(
            snippet.contains(&part),
            "workspace add lacks {part:?}:\n{snippet}"
        );
    }
    assert_eq!(gw.workspace_auth("dev1"), "ca");
    let relayed = || gw.ssh("alice", "dev1", &alice.login);

    // exec, exit codes, a pty.
    let out = run(relayed().arg("id -un")).ok("relayed id");
    assert_eq!(out.trim(), ws.name);
    assert_eq!(run(relayed().arg("exit 3")).code, Some(3));
    let out = run(relayed().args(["-tt", "tty"]));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.out.contains("/dev/pts/"), "{out:?}");

    // Agent forwarding (the certificate's permit-agent-forwarding): alice's keyport key is
    // the workspace's agent, and git over SSH to a repo that trusts it works.
    let git_account = Account::create("kpgit");
    let git_sshd = Sshd::build(&gw.sb, "git").login(&git_account.name).start();
    git_sshd.authorize(&[&alice.public]);
    let repo = bare_repo(&gw.sb, &git_account);
    let git_ssh = format!(
        "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -p {}",
        git_sshd.port
    );
    let script = format!(
        "cd \"$HOME\"; ssh-add -l; echo \"list=$?\"; echo \"keys=$(ssh-add -L | grep -c .)\"
         echo \"certs=$(ssh-add -L | grep -c cert-v01)\"; export GIT_SSH_COMMAND='{git_ssh}'
         git clone -q {login}@127.0.0.1:{repo} work; echo \"clone=$?\"; cat work/README",
        login = git_account.name,
        repo = repo.display(),
    );
    let out = run(relayed().arg(&script));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.out.contains(&alice.fingerprint()),
        "ssh-add -l: {out:?}"
    );
    // Only alice's key: neither the per-connection key nor its certificate is on the agent.
    assert!(out.out.contains("list=0\nkeys=1\ncerts=0\n"), "{out:?}");
    assert!(
        out.out.contains("clone=0\nseed\n"),
        "{out:?}\n{}",
        git_sshd.log()
    );

    // Attribution: four connections, four certificates, each in sshd's log as audited.
    let events = certificates(&gw, "alice", "dev1");
    assert_eq!(events.len(), 4, "{events:?}");
    let accepted = accepted_certificates(&w.sshd.log());
    assert_eq!(accepted.len(), 4, "{}", w.sshd.log());
    for a in &accepted {
        assert_eq!(a.ca_type, logged_type, "{a:?}");
    }
    assert_attributed(
        &events,
        &accepted,
        ("alice", "dev1", &ws.name),
        ("ca1", &line),
    );
    let status = gw.ca_status();
    let dev1 = status_workspace(&status, "dev1");
    assert_eq!(dev1["auth"], "ca", "{status}");
    assert_eq!(dev1["last_ca"], "ca1", "{status}");
    assert_eq!(dev1["on_active"], true, "{status}");

    // Custody: the certified keys the sshd logged and the CA's key are nowhere on disk.
    let forbidden: Vec<String> = accepted
        .iter()
        .map(|a| a.key.clone())
        .chain([fingerprint(&line)])
        .collect();
    assert_nothing_left(&gw, &[&ws.home, &git_account.home], started, &forbidden);
    assert_ca_sealed(&gw.sb, &lines);
}

/// No certificate and no private key on disk after the sessions:
/// - the workspace logins' homes (made for this test): every file;
/// - the data dir: every file (no PEM there at all);
/// - this sandbox (the sshds' logs and dirs, the data dir): every file, except that its client
///   keys (`home/.ssh/`) and the sshds' host keys (`host_*`) are private keys by design;
/// - /tmp and /dev/shm: files modified since the test started (/tmp holds gigabytes of other
///   work), other tests' sandboxes skipped (they make client and host keys while this test
///   runs, in parallel), the same names allowed, and a certificate looked for as its blob or
///   base64, not as the type name's text (see [`Scan::text`]);
///
/// and anywhere scanned, a PEM private key of the CA or of a certified per-connection key
/// (their fingerprints from sshd's log) is a leak whatever its name.
fn assert_nothing_left(gw: &Gateway, homes: &[&Path], started: SystemTime, forbidden: &[String]) {
    let mine = gw.sb.dir.path().to_path_buf();
    let by_design = |p: &Path| {
        p.parent().is_some_and(|d| d.ends_with(".ssh"))
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("host_"))
    };
    let nothing = |_: &Path| false;
    let others = |p: &Path| other_sandbox(p, &mine);
    let everything = Scan {
        text: true,
        since: None,
        private_ok: &nothing,
        skip: &nothing,
        forbidden,
    };
    let sandbox = Scan {
        text: true,
        since: None,
        private_ok: &by_design,
        skip: &nothing,
        forbidden,
    };
    // sshd itself writes an ExposeAuthInfo file (`/tmp/sshauth.*`, the certificate it let
    // in, removed when the session ends) for refusals.rs's sessions, which may run now.
    let recent_skip = |p: &Path| {
        others(p)
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sshauth."))
    };
    let recent = Scan {
        text: false,
        since: Some(started),
        private_ok: &by_design,
        skip: &recent_skip,
        forbidden,
    };
    let mut places: Vec<(PathBuf, usize, &Scan<'_>)> = homes
        .iter()
        .map(|h| (h.to_path_buf(), 8, &everything))
        .collect();
    places.push((gw.sb.data(), 4, &everything));
    places.push((mine.clone(), 6, &sandbox));
    places.push((PathBuf::from("/tmp"), 6, &recent));
    places.push((PathBuf::from("/dev/shm"), 5, &recent));
    for (root, depth, scan) in &places {
        let found = leaks(root, *depth, scan);
        assert!(found.is_empty(), "left under {}: {found:?}", root.display());
    }
    // Nor in what the daemon logged.
    let log = gw.daemon.log();
    let text = (
        "a certificate type name".to_string(),
        CERT_TYPE_TEXT.to_vec(),
    );
    for (what, form) in common::ca::certificate_forms().into_iter().chain([text]) {
        assert!(
            !common::contains(log.as_bytes(), &form),
            "the daemon's log holds {what}"
        );
    }
    assert!(
        !log.contains("PRIVATE KEY"),
        "the daemon's log holds a private key"
    );
}

#[test]
fn relayed_sessions_log_in_with_an_ed25519_ca_certificate_and_leave_none_behind() {
    relayed_sessions_log_in_with_keyports_certificate(None);
}

#[test]
fn relayed_sessions_log_in_with_an_ecdsa_p256_ca_certificate_and_leave_none_behind() {
    relayed_sessions_log_in_with_keyports_certificate(Some("ecdsa-p256"));
}
