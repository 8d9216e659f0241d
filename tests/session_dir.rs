//! Each session's private directory, as the README describes it: one per shell or exec
//! channel (two channels of one connection get two), none for sftp, gone with its channel;
//! `id.pub` holds exactly the user's public key line; and `keyport gitssh` offers only that
//! key (`IdentitiesOnly yes` with `id.pub`), as ssh's own resolved configuration shows; the
//! agent socket serves at most 64 connections at once, and every one ends with its session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::client_agent::wait_gone;
use common::custody::Custody;
use common::mux::Master;
use common::{me, require_tool};

#[test]
fn each_channel_gets_its_own_directory_with_only_the_public_key() {
    let (sb, daemon, key, _api) = common::ssh_daemon(&[]);
    let master = Master::start(&daemon, &me().name, &key, sb.dir.path().join("mux"), &[]);
    // Two channels of one connection, both held open.
    let mut held = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let mut child = master
            .ssh(&daemon, "echo \"$KEYPORT_SESSION_DIR\"; exec sleep 300")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        dirs.push(PathBuf::from(line.trim()));
        held.push(child);
    }
    assert_ne!(dirs[0], dirs[1], "two channels, two directories");
    let user_key = sb.ok(&["key", "show", "--user", &me().name]);
    let public_line = user_key.lines().next().unwrap();
    let custody = Custody::of(&sb.vault().open_user_key(&me().name).unwrap());
    for dir in &dirs {
        assert!(dir.is_dir(), "{}", dir.display());
        let names: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let want: BTreeSet<String> = ["agent.sock", "api.sock", "bin", "id.pub"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, want, "{}", dir.display());
        // bin/ holds only keyport: a link to the daemon's own binary.
        let bin: Vec<_> = std::fs::read_dir(dir.join("bin")).unwrap().collect();
        assert_eq!(bin.len(), 1, "{}", dir.display());
        let link = std::fs::read_link(dir.join("bin/keyport")).unwrap();
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(env!("CARGO_BIN_EXE_keyport")).unwrap()
        );
        let id = std::fs::read(dir.join("id.pub")).unwrap();
        assert_eq!(String::from_utf8_lossy(&id).trim(), public_line);
        assert_eq!(custody.found_in(&id), None);
    }
    // Each goes with its own channel: ending the first leaves the second.
    let mut first = held.remove(0);
    let _ = first.kill();
    let _ = first.wait();
    wait_gone(&dirs[0]);
    assert!(dirs[1].is_dir());
    for mut child in held {
        let _ = child.kill();
        let _ = child.wait();
    }
    wait_gone(&dirs[1]);
}

#[test]
fn the_in_session_cli_is_on_any_path_with_no_login() {
    // The operator forces a PATH that holds no keyport, as a stock system's would not.
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("keyport.toml");
    std::fs::write(&file, "[env]\nPATH = \"/usr/bin:/bin\"\n").unwrap();
    let (sb, daemon, key, _api) = common::ssh_daemon(&[("KEYPORT_CONFIG", file.to_str().unwrap())]);
    let out = daemon
        .ssh(&me().name, &key)
        .arg("echo \"PATH=$PATH\"; command -v keyport; keyport key show && keyport secret list")
        .env_remove("KEYPORT_URL")
        .env_remove("KEYPORT_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        common::output::stderr(&out)
    );
    let path = stdout.lines().next().unwrap();
    // The account's shell start-up files may put more in front; the bin dir is last.
    assert!(path.contains("/usr/bin:/bin:/tmp/keyport-"), "{path}");
    assert!(path.ends_with("/bin"), "{path}");
    let public = sb.ok(&["key", "show", "--user", &me().name]);
    let line = public.lines().next().unwrap();
    assert!(stdout.contains(line), "key show in the session: {stdout}");
}

#[test]
fn an_sftp_session_gets_no_directory() {
    // OpenSSH's sftp-server makes itself non-dumpable: only root may read its environment.
    if !keyport::testing::needs_root("reads sftp-server's environment") {
        return;
    }
    require_tool("sftp");
    let (_sb, daemon, key, _api) = common::ssh_daemon(&[]);
    // An sftp session kept open (the client sends INIT, reads VERSION, then waits).
    let mut child = daemon
        .ssh(&me().name, &key)
        .args(["-s", "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // SSH_FXP_INIT (version 3): the server answers SSH_FXP_VERSION once it runs.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]).unwrap();
    stdin.flush().unwrap();
    let mut version = [0u8; 9];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut version).unwrap();
    assert_eq!(version[4], 2, "SSH_FXP_VERSION");
    // sftp-server was given no session directory, no agent and no API socket.
    let servers = common::procs::named(daemon.pid(), "sftp-server");
    assert_eq!(servers.len(), 1, "{:?}", common::procs::below(daemon.pid()));
    let environ = std::fs::read(format!("/proc/{}/environ", servers[0])).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for name in ["KEYPORT_SESSION_DIR=", "SSH_AUTH_SOCK=", "GIT_SSH_COMMAND="] {
        assert!(
            !environ.split('\0').any(|v| v.starts_with(name)),
            "sftp-server has {name}: {environ}"
        );
    }
    drop(stdin);
    let _ = child.wait();
}

#[test]
fn gitssh_offers_only_the_keyport_key() {
    require_tool("ssh");
    let (_sb, daemon, key, _api) = common::ssh_daemon(&[]);
    // `ssh -G` prints the configuration ssh would use, and connects nowhere.
    let out = daemon
        .ssh(&me().name, &key)
        .arg(
            "echo \"dir=$KEYPORT_SESSION_DIR\"; echo \"sock=$SSH_AUTH_SOCK\"; \
             $GIT_SSH_COMMAND -G build-box.example",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("dir="))
        .unwrap()
        .to_string();
    assert!(text.lines().any(|l| l == "identitiesonly yes"), "{text}");
    let files: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("identityfile "))
        .collect();
    assert_eq!(files, vec![format!("{dir}/id.pub")], "{text}");
    // The agent is the session's (through SSH_AUTH_SOCK, which names its socket).
    assert!(
        text.lines().any(|l| l == "identityagent SSH_AUTH_SOCK"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == format!("sock={dir}/agent.sock")),
        "{text}"
    );
}

/// An agent request (REQUEST_IDENTITIES) and whether an answer came within `wait`.
fn answered(stream: &mut std::os::unix::net::UnixStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.write_all(&[0, 0, 0, 1, 11]).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).is_ok()
}

#[test]
fn an_agent_socket_serves_64_connections_and_ends_them_with_its_session() {
    use std::os::unix::net::UnixStream;
    let (_sb, daemon, key, _api) = common::ssh_daemon(&[]);
    let mut child = daemon
        .ssh(&me().name, &key)
        .arg("echo \"$SSH_AUTH_SOCK\"; exec sleep 300")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sock = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut sock)
        .unwrap();
    let sock = sock.trim().to_string();
    let mut open: Vec<UnixStream> = (0..64)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    for (i, s) in open.iter_mut().enumerate() {
        assert!(
            answered(s, Duration::from_secs(10)),
            "connection {i} unanswered"
        );
    }
    // The 65th waits: no answer while 64 are open...
    let mut extra = UnixStream::connect(&sock).unwrap();
    assert!(
        !answered(&mut extra, Duration::from_millis(500)),
        "a 65th was served"
    );
    // ...and is served once one of them closes.
    drop(open.pop());
    let mut len = [0u8; 4];
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Read::read_exact(&mut extra, &mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    std::io::Read::read_exact(&mut extra, &mut body).unwrap();
    open.push(extra);
    // The session ends: every connection reads end-of-file.
    let _ = child.kill();
    let _ = child.wait();
    for (i, s) in open.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut byte = [0u8; 1];
        let n = std::io::Read::read(s, &mut byte).unwrap_or(0);
        assert_eq!(n, 0, "connection {i} outlived its session");
    }
}
