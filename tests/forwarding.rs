//! Port forwarding with the real `ssh -L` / `ssh -R` (issue 11): off by default, refused as
//! clean channel-open and request failures; turned on by `[forwarding]` with allow-lists, each
//! forwarded connection audited with its bytes; a 100 MB round trip through `-L` is
//! byte-exact (the forwarded channel has the same flow control as sessions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Daemon, Http, Sandbox, procs, require_tool};
use sha2::{Digest, Sha256};

/// A TCP echo server on a free loopback port, one thread per connection.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let mut writer = conn;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon with `config` as its keyport.toml.
fn daemon_with(config: &str) -> (Sandbox, Daemon, PathBuf, Http) {
    require_tool("ssh");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let path = sb.dir.path().join("keyport.toml");
    std::fs::write(&path, config).unwrap();
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", path.to_str().unwrap())]);
    let api = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    (sb, daemon, key, api)
}

/// `ssh -N` with `forwards`, its stderr kept.
struct Tunnel(procs::Running);

impl Tunnel {
    fn open(daemon: &Daemon, key: &std::path::Path, forwards: &[&str]) -> Self {
        // Not `Daemon::ssh`: its LogLevel=ERROR would hide the refusals (ssh keeps the first
        // value given for an option).
        let child = std::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ExitOnForwardFailure=no",
                "-i",
            ])
            .arg(key)
            .args(["-N", "-p", &daemon.ssh_port.to_string()])
            .args(forwards)
            .arg(format!("{}@127.0.0.1", common::me().name))
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self(procs::Running(child))
    }

    /// Ends the client; returns what it printed.
    fn close(mut self) -> String {
        let child = &mut self.0.0;
        let _ = child.kill();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = child.wait();
        err
    }
}

/// A connection to `port` once something listens there (ssh opens its side asynchronously).
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "nothing listens on {port}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Sends `data` through `stream` and reads back what comes; returns what came back.
fn round_trip(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let data_owned = data.to_vec();
    let writer = std::thread::spawn(move || {
        // A refused forward is closed by ssh at once: writing may fail then.
        let mut stream = stream;
        if stream.write_all(&data_owned).is_ok() {
            let _ = stream.shutdown(Shutdown::Write);
        }
    });
    let mut back = Vec::new();
    let _ = reader.read_to_end(&mut back);
    writer.join().unwrap();
    back
}

fn wait_for_events(api: &Http, action: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = api.audit_rows(action);
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn forwarding_is_refused_by_default() {
    let (_sb, daemon, key, api) = daemon_with("");
    let target = echo_server();
    let (local, remote) = (free_port(), free_port());
    let tunnel = Tunnel::open(
        &daemon,
        &key,
        &[
            "-L",
            &format!("{local}:127.0.0.1:{target}"),
            "-R",
            &format!("{remote}:127.0.0.1:{target}"),
        ],
    );
    // ssh -L listens on the client side, and asks keyport at each connection.
    let back = round_trip(connect(local), b"hello");
    assert!(back.is_empty(), "a refused forward carries nothing");
    assert!(
        TcpStream::connect(("127.0.0.1", remote)).is_err(),
        "keyport does not listen for a refused -R"
    );
    let err = tunnel.close();
    assert!(err.contains("administratively prohibited"), "{err}");
    assert!(err.contains("remote port forwarding failed"), "{err}");
    assert!(api.audit_rows("forward.local").is_empty());
}

#[test]
fn an_allowed_local_forward_is_byte_exact_refused_elsewhere_and_audited() {
    let target = echo_server();
    let other = echo_server();
    let (_sb, daemon, key, api) = daemon_with(&format!(
        "[forwarding]\nlocal = true\nlocal_allow = [\"127.0.0.1:{target}\"]\n"
    ));
    let (allowed, refused) = (free_port(), free_port());
    let tunnel = Tunnel::open(
        &daemon,
        &key,
        &[
            "-L",
            &format!("{allowed}:127.0.0.1:{target}"),
            "-L",
            &format!("{refused}:127.0.0.1:{other}"),
        ],
    );
    // 100 MB of bytes no compression or pattern could fake.
    let mut data = vec![0u8; 100 * 1024 * 1024];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let back = round_trip(connect(allowed), &data);
    assert_eq!(back.len(), data.len(), "bytes back");
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data), "byte-exact");
    assert!(
        round_trip(connect(refused), b"x").is_empty(),
        "not on the allow-list"
    );
    let err = tunnel.close();
    assert!(err.contains("administratively prohibited"), "{err}");

    let audited = wait_for_events(&api, "forward.local", 1);
    let row = audited
        .iter()
        .find(|e| e["detail"]["bytes_to_target"] == data.len() as u64)
        .unwrap_or_else(|| panic!("no audit row with the bytes: {audited:?}"));
    assert_eq!(row["detail"]["target"], format!("127.0.0.1:{target}"));
    assert_eq!(row["detail"]["bytes_from_target"], data.len() as u64);
    assert_eq!(row["user_name"], common::me().name);
}

#[test]
fn an_allowed_remote_forward_reaches_the_client_and_others_are_refused() {
    let target = echo_server();
    let (allowed, refused) = (free_port(), free_port());
    let (_sb, daemon, key, api) = daemon_with(&format!(
        "[forwarding]\nremote = true\nremote_allow = [\"{allowed}\"]\n"
    ));
    let tunnel = Tunnel::open(
        &daemon,
        &key,
        &[
            "-R",
            &format!("{allowed}:127.0.0.1:{target}"),
            "-R",
            &format!("{refused}:127.0.0.1:{target}"),
        ],
    );
    let back = round_trip(connect(allowed), b"through the client");
    assert_eq!(back, b"through the client");
    assert!(TcpStream::connect(("127.0.0.1", refused)).is_err());
    let audited = wait_for_events(&api, "forward.remote", 1);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["detail"]["port"], allowed);
    assert_eq!(audited[0]["detail"]["bytes_to_client"], 18);
    let err = tunnel.close();
    assert!(
        err.contains(&format!(
            "remote port forwarding failed for listen port {refused}"
        )),
        "{err}"
    );
    // The listener ends with the client's connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", allowed)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "-R still listening after the client left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_forwarding_config_names_the_field() {
    let sb = Sandbox::new();
    let path = sb.dir.path().join("keyport.toml");
    std::fs::write(&path, "[forwarding]\nlocal = true\n").unwrap();
    let out = sb
        .keyport()
        .env("KEYPORT_CONFIG", &path)
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("forwarding.local_allow"), "{err}");
}

#[test]
fn a_target_that_stops_reading_holds_the_client_back_not_keyport() {
    // A target that accepts and never reads: what the client can write is bounded by the
    // channel window and the sockets' buffers, not by memory keyport would spend queueing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().port();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        held_tx.send(conn).unwrap(); // kept open, never read
    });
    let (_sb, daemon, key, _api) = daemon_with(&format!(
        "[forwarding]\nlocal = true\nlocal_allow = [\"127.0.0.1:{target}\"]\n"
    ));
    let local = free_port();
    let _tunnel = Tunnel::open(
        &daemon,
        &key,
        &["-L", &format!("{local}:127.0.0.1:{target}")],
    );
    let mut stream = connect(local);
    let _held = held_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0usize;
    while written < 512 << 20 {
        match stream.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break, // the write timed out: the client is held back
        }
    }
    let rss_kib = procs::rss_kib(daemon.pid());
    eprintln!("held back after {written} bytes; daemon RSS {rss_kib} KiB");
    assert!(
        written < 96 << 20,
        "{written} bytes went into a connection whose target reads nothing"
    );
    assert!(rss_kib < 128 * 1024, "the daemon holds {rss_kib} KiB");
}
