//! Masking (design.md, "Secret lifecycle"), through the real OpenSSH client and the real
//! binary: in a pty session the values of the user's masked secrets show as `***` — a value
//! split across two writes too, and the rest of a value whose start was let go after the
//! hold — while held bytes never wait for ever; exec channels without a pty, `scp` (both
//! protocols) and `sftp` carry the bytes exactly; `"mask": false`, kinds masked by default or
//! not, `"mask": true` for any kind, and values shorter than 8 bytes are never masked. A
//! relayed pty session (root: OS accounts behind a real sshd) masks the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::relay::{Relay, run, scp};
use common::{Daemon, Http, contains, me, require_tool};
use serde_json::json;

const TOKEN: &str = "ghp_maskme0123456789abcdefXYZ";

fn secret(api: &Http, spec: serde_json::Value) {
    let r = api.send("POST", "users/me/secrets", &spec);
    assert_eq!(r.status, 201, "{spec}: {}", r.body);
}

/// A daemon whose admin has `GH_TOKEN` (kind token: masked by default).
fn started() -> (common::Sandbox, Daemon, std::path::PathBuf, Http) {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    secret(
        &api,
        json!({"name": "gh", "value": TOKEN, "env": "GH_TOKEN", "kind": "token"}),
    );
    (sb, daemon, key, api)
}

/// `ssh [-tt] HOST command` as the admin; stdout, after insisting it exited 0.
fn ssh_out(daemon: &Daemon, key: &Path, pty: bool, command: &str) -> Vec<u8> {
    let mut cmd = daemon.ssh(&me().name, key);
    if pty {
        cmd.arg("-tt");
    }
    let out = cmd.arg(command).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn shows(out: &[u8], value: &str) -> bool {
    contains(out, value.as_bytes())
}

/// `bash -c SCRIPT`, quoted for the remote login shell.
fn bash(script: &str) -> String {
    format!("exec bash -c '{}'", script.replace('\'', r"'\''"))
}

#[test]
fn a_pty_shows_the_value_as_stars_and_an_exec_without_one_shows_it_exactly() {
    let (_sb, daemon, key, _api) = started();
    let out = ssh_out(&daemon, &key, true, "echo \"token=$GH_TOKEN.\"");
    assert!(!shows(&out, TOKEN), "{}", String::from_utf8_lossy(&out));
    assert!(
        contains(&out, b"token=***."),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // No pty: the exact bytes, nothing added or removed.
    let out = ssh_out(&daemon, &key, false, "printf %s \"$GH_TOKEN\"");
    assert_eq!(out, TOKEN.as_bytes());
    let out = ssh_out(
        &daemon,
        &key,
        false,
        "for i in 1 2 3; do printf '%s|' \"$GH_TOKEN\"; done",
    );
    assert_eq!(out, format!("{TOKEN}|{TOKEN}|{TOKEN}|").as_bytes());
}

#[test]
fn a_value_split_across_two_writes_in_a_pty_is_still_masked() {
    require_tool("bash");
    let (_sb, daemon, key, _api) = started();
    // 5 bytes held: they wait up to a second (secrets::mask::LONG_HOLD) for the rest.
    let script = r#"printf %s "${GH_TOKEN:0:5}"; sleep 0.2; printf "%s.\n" "${GH_TOKEN:5}""#;
    let out = ssh_out(&daemon, &key, true, &bash(script));
    let text = String::from_utf8_lossy(&out);
    assert!(!shows(&out, TOKEN), "{text}");
    assert!(!shows(&out, &TOKEN[..5]), "not even its start: {text}");
    assert!(text.starts_with("***."), "{text}");

    // A pause longer than the hold: the start goes out as it is, the rest is still masked.
    let script = r#"printf %s "${GH_TOKEN:0:6}"; sleep 2; printf "%s.\n" "${GH_TOKEN:6}""#;
    let out = ssh_out(&daemon, &key, true, &bash(script));
    let text = String::from_utf8_lossy(&out);
    assert!(!shows(&out, TOKEN), "{text}");
    assert!(text.starts_with(&format!("{}***.", &TOKEN[..6])), "{text}");
}

/// Runs `command` in a pty over SSH and records when each piece of its output arrived.
fn timed_output(daemon: &Daemon, key: &Path, command: &str) -> Vec<(Duration, Vec<u8>)> {
    let mut child = daemon
        .ssh(&me().name, key)
        .args(["-tt", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                seen.lock().unwrap().push((t0.elapsed(), buf[..n].to_vec()));
            }
        })
    };
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// When the output so far first ended with `needle` (from the start of the client).
fn arrived(pieces: &[(Duration, Vec<u8>)], needle: &[u8]) -> Option<Duration> {
    let mut all = Vec::new();
    pieces.iter().find_map(|(at, piece)| {
        all.extend_from_slice(piece);
        contains(&all, needle).then_some(*at)
    })
}

#[test]
fn output_ending_with_the_start_of_a_value_is_not_held_for_ever() {
    require_tool("bash");
    let (_sb, daemon, key, _api) = started();
    // A prompt that ends like the value starts ("gh"), then a long pause: shown at once
    // (20 ms), not when the pause ends.
    let script = r#"printf "ready "; printf %s "${GH_TOKEN:0:2}"; sleep 4; echo end"#;
    let pieces = timed_output(&daemon, &key, &bash(script));
    let prompt = arrived(&pieces, b"ready gh").expect("the prompt arrived");
    let end = arrived(&pieces, b"end").expect("the end arrived");
    assert!(
        end - prompt > Duration::from_millis(3000),
        "the prompt waited for the end: {prompt:?} vs {end:?}"
    );
    // Six bytes of it: held for a second at most.
    let script = r#"printf "ready "; printf %s "${GH_TOKEN:0:6}"; sleep 4; echo end"#;
    let pieces = timed_output(&daemon, &key, &bash(script));
    let prompt = arrived(&pieces, format!("ready {}", &TOKEN[..6]).as_bytes()).unwrap();
    let end = arrived(&pieces, b"end").unwrap();
    assert!(
        end - prompt > Duration::from_millis(2000),
        "six held bytes waited for the end: {prompt:?} vs {end:?}"
    );
}

#[test]
fn scp_and_sftp_carry_a_file_holding_the_value_byte_exact() {
    require_tool("scp");
    require_tool("sftp");
    let (sb, daemon, key, _api) = started();
    let mut data = b"\x00\xffbefore ".to_vec();
    for _ in 0..2000 {
        data.extend_from_slice(TOKEN.as_bytes());
        data.extend_from_slice(b"\r\n\x1b[0m");
    }
    let local = sb.dir.path().join("holds-token.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = sb.dir.path().join("remote.bin");
    let back = sb.dir.path().join("back.bin");
    let user = me().name;
    // Both protocols: SFTP (scp's default) and the original (`scp -f`/`-t` over exec).
    let scp = |legacy: bool, from: &str, to: &str| {
        let plain = Daemon::scp_command(&user, &key, daemon.ssh_port, from, to);
        let mut cmd = Command::new("scp");
        if legacy {
            cmd.arg("-O");
        }
        cmd.args(plain.get_args()).env_remove("SSH_AUTH_SOCK");
        cmd
    };
    let remote_path = format!("127.0.0.1:{}", remote.display());
    for legacy in [false, true] {
        let mut up = scp(legacy, local.to_str().unwrap(), &remote_path);
        let mut down = scp(legacy, &remote_path, back.to_str().unwrap());
        let out = up.output().unwrap();
        assert!(out.status.success(), "{}", common::output::stderr(&out));
        assert_eq!(std::fs::read(&remote).unwrap(), data, "legacy {legacy}");
        let out = down.output().unwrap();
        assert!(out.status.success(), "{}", common::output::stderr(&out));
        assert_eq!(std::fs::read(&back).unwrap(), data, "legacy {legacy}");
        std::fs::remove_file(&back).unwrap();
    }
    let out = daemon.sftp(
        &user,
        &key,
        &format!("get {} {}\n", remote.display(), back.display()),
    );
    assert!(out.status.success(), "{}", common::output::stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data, "sftp get");
}

#[test]
fn only_secrets_with_masking_on_and_long_enough_are_masked() {
    let (_sb, daemon, key, api) = started();
    let cases = [
        // (name, env, value, kind, mask, masked?)
        ("pw", "PW", "hunter2-hunter2", "password", None, true),
        (
            "off",
            "OFF",
            "ghp_visible0123456789",
            "token",
            Some(false),
            false,
        ),
        (
            "other",
            "OTHER",
            "other-kind-value-01",
            "other",
            None,
            false,
        ),
        (
            "cfg",
            "CFG",
            "config-masked-on-01",
            "config",
            Some(true),
            true,
        ),
        ("short", "SHORT", "s3cr3t7", "password", Some(true), false),
        ("eight", "EIGHT", "s3cr3t78", "password", None, true),
    ];
    for (name, env, value, kind, mask, _) in cases {
        let mut spec = json!({"name": name, "value": value, "env": env, "kind": kind});
        if let Some(mask) = mask {
            spec["mask"] = mask.into();
        }
        secret(&api, spec);
    }
    let listing = api.get("users/me/secrets").json();
    let command: String = cases
        .iter()
        .map(|(_, env, ..)| format!("echo \"{env}=[${env}]\"; "))
        .collect();
    let out = String::from_utf8(ssh_out(&daemon, &key, true, &command)).unwrap();
    for (name, env, value, _, _, masked) in cases {
        let line = if masked {
            format!("{env}=[***]")
        } else {
            format!("{env}=[{value}]")
        };
        assert!(out.contains(&line), "{name}: {line} not in {out}");
        let listed = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        // The listing's `masked` is the choice in force; the length rule is the masker's.
        if value.len() >= 8 {
            assert_eq!(listed["masked"], masked, "{name}: {listed}");
        }
    }
    // Without a pty every one of them is exact.
    let out = String::from_utf8(ssh_out(&daemon, &key, false, &command)).unwrap();
    for (_, env, value, ..) in cases {
        assert!(out.contains(&format!("{env}=[{value}]")), "{out}");
    }
}

#[test]
fn a_multi_line_key_shown_in_a_pty_is_masked_whole() {
    let (_sb, daemon, key, api) = started();
    let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n\
               QyNTUxOQAAACBmYXN0\n-----END OPENSSH PRIVATE KEY-----";
    secret(
        &api,
        json!({"name": "deploy", "value": pem, "env": "DEPLOY_KEY", "kind": "key"}),
    );
    // The pty turns each \n into \r\n on the way: still one masked run.
    let out = ssh_out(&daemon, &key, true, "printf '<%s>\\n' \"$DEPLOY_KEY\"");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("<***>"), "{text}");
    for line in pem.lines() {
        assert!(!text.contains(line), "{line} shows: {text}");
    }
    let out = ssh_out(&daemon, &key, false, "printf %s \"$DEPLOY_KEY\"");
    assert_eq!(out, pem.as_bytes());
}

#[test]
fn a_relayed_pty_masks_and_relayed_exec_and_scp_are_exact() {
    let Some(r) = Relay::start() else { return };
    let value = "ghp-relay-mask-0123456789abc";
    r.alice
        .secret(json!({"name": "github", "value": value, "env": "GITHUB_TOKEN", "kind": "token"}));
    let out = run(r.relayed().args(["-tt", "echo \"gh=$GITHUB_TOKEN.\""])).ok("relayed pty");
    assert!(!out.contains(value), "{out}");
    assert!(out.contains("gh=***."), "{out}");
    // Split across two writes, upstream.
    let script =
        r#"printf %s "${GITHUB_TOKEN:0:5}"; sleep 0.2; printf "%s.\n" "${GITHUB_TOKEN:5}""#;
    let out = run(r.relayed().args(["-tt", &bash(script)])).ok("relayed split");
    assert!(!out.contains(value) && !out.contains(&value[..5]), "{out}");
    assert!(out.starts_with("***."), "{out}");
    // No pty: exact.
    let out = run(r.relayed().arg("printf %s \"$GITHUB_TOKEN\"")).ok("relayed exec");
    assert_eq!(out, value);
    // scp through the relay: byte-exact.
    let data = format!("{value}\n{value}").into_bytes();
    let local = r.gw.sb.dir.path().join("relay-token.txt");
    std::fs::write(&local, &data).unwrap();
    let back = r.gw.sb.dir.path().join("relay-back.txt");
    let user = "alice:dev1";
    let ran = scp(
        &r.gw.daemon,
        user,
        &r.alice.login,
        &[],
        local.to_str().unwrap(),
        "127.0.0.1:token.txt",
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let ran = scp(
        &r.gw.daemon,
        user,
        &r.alice.login,
        &[],
        "127.0.0.1:token.txt",
        back.to_str().unwrap(),
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(std::fs::read(r.ws.home.join("token.txt")).unwrap(), data);
}
