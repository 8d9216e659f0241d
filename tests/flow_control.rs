//! SSH flow control end to end, with the real OpenSSH client: a program that reads slowly
//! (or not at all for a while) receives every byte the client sent, because the client is
//! slowed by the channel's window rather than keyport dropping or buffering input; output a
//! client does not read blocks the program; and while both happen, the daemon's memory stays
//! bounded, other channels of the same connection answer at once and keepalives are
//! answered. Every transfer is at least 4× keyport's 8 MiB window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mux::Master;
use common::procs;
use common::{Daemon, me, require_tool, ssh_daemon};
use sha2::{Digest, Sha256};

/// keyport's receive window per channel (`server_config`).
const WINDOW: usize = 8 * 1024 * 1024;
/// What each test pushes through: five windows.
const SIZE: usize = 5 * WINDOW;

/// `n` bytes that do not compress and do not repeat.
fn payload(n: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(n + 8);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while data.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(n);
    data
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `command` through keyport with `input` on its stdin; returns its stdout.
fn feed(daemon: &Daemon, key: &Path, command: &str, input: Arc<Vec<u8>>) -> String {
    let out = procs::output_with_input(daemon.ssh(&me().name, key).arg(command), input);
    assert!(
        out.status.success(),
        "{command}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Each cipher the OpenSSH client offers first runs on its own backend (AES-GCM on ring,
/// chacha20-poly1305 on aws-lc-rs: vendor/russh/README.md): data crosses intact both ways,
/// stdout and stderr alike, past the size at which an output pipe grows.
#[test]
fn every_aead_cipher_carries_data_intact_both_ways() {
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    let data = Arc::new(payload(3 * WINDOW));
    let want = sha256_hex(&data);
    for cipher in [
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
    ] {
        let mut both = daemon.ssh_with(&me().name, &key, &["-c", cipher, "-o", "LogLevel=ERROR"]);
        both.arg("tee /dev/stderr");
        let out = procs::output_with_input(&mut both, data.clone());
        assert!(
            out.status.success(),
            "{cipher}: {:?} {}",
            out.status,
            out.stderr.len()
        );
        assert_eq!(sha256_hex(&out.stdout), want, "{cipher}: stdout");
        assert_eq!(sha256_hex(&out.stderr), want, "{cipher}: stderr");
    }
}

#[test]
fn a_program_that_reads_late_gets_every_byte() {
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    let data = Arc::new(payload(SIZE));
    // The issue's reproduction: before, `wc` counted 16842752 bytes and the rest was gone.
    let counted = feed(&daemon, &key, "sleep 3; wc -c", data.clone());
    assert_eq!(counted, SIZE.to_string());
    let sum = feed(&daemon, &key, "sleep 3; sha256sum", data.clone());
    assert_eq!(sum.split_whitespace().next(), Some(&*sha256_hex(&data)));
}

#[test]
fn a_reader_paced_at_one_mebibyte_a_second_then_fast_gets_every_byte() {
    require_tool("dd");
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    let data = Arc::new(payload(SIZE));
    // `dd iflag=fullblock` takes exactly 1 MiB a second for 4 s, then `cat` takes the rest.
    let paced = "{ for i in 1 2 3 4; do dd bs=1M count=1 iflag=fullblock status=none; sleep 1; \
                 done; cat; } | sha256sum";
    let sum = feed(&daemon, &key, paced, data.clone());
    assert_eq!(sum.split_whitespace().next(), Some(&*sha256_hex(&data)));
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    common::procs::wait_for(what, Duration::from_secs(20), f);
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn scp_into_a_stopped_sftp_server_waits_and_then_arrives_whole() {
    require_tool("scp");
    let (sb, daemon, key, _api) = ssh_daemon(&[]);
    let data = payload(SIZE);
    let local = sb.dir.path().join("up.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = sb.dir.path().join("remote.bin");
    let (user, port, from, to) = (
        me().name,
        daemon.ssh_port,
        local.display().to_string(),
        format!("127.0.0.1:{}", remote.display()),
    );
    let pid = daemon.pid();
    let key2 = key.clone();
    let upload = std::thread::spawn(move || {
        // A client of our own, so that the test can stop the server side mid-transfer.
        let probe = Daemon::scp_command(&user, &key2, port, &from, &to)
            .output()
            .unwrap();
        (probe, Instant::now())
    });
    let mut sftp = Vec::new();
    wait_for("sftp-server", || {
        sftp = procs::named(pid, "sftp-server");
        !sftp.is_empty()
    });
    for p in &sftp {
        signal(*p, "-STOP");
    }
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let written = std::fs::metadata(&remote).map(|m| m.len()).unwrap_or(0);
    assert!(
        !upload.is_finished(),
        "scp finished although the server could not take its data"
    );
    for p in &sftp {
        signal(*p, "-CONT");
    }
    let (out, done) = upload.join().unwrap();
    assert!(
        out.status.success(),
        "scp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(done - stopped_at >= Duration::from_secs(3));
    assert!((written as usize) < SIZE, "{written} bytes while stopped");
    let got = std::fs::read(&remote).unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got == data, "upload byte-exact");
}

/// The daemon's resident memory may grow by at most this much while one channel's client
/// does not read and another channel's program does not read (a window each, plus slack).
const RSS_BOUND_KIB: u64 = 48 * 1024;

#[test]
fn stalled_readers_hold_bounded_memory_and_stall_no_other_channel() {
    let (sb, daemon, key, _api) = ssh_daemon(&[]);
    // Keepalives every second, three unanswered ones end the connection.
    let mut master = Master::start(
        &daemon,
        &me().name,
        &key,
        sb.dir.path().join("mux"),
        &["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"],
    );
    let via_master = |command: &str| master.ssh(&daemon, command);
    let echo = || {
        let started = Instant::now();
        let out = via_master("echo ok").stdin(Stdio::null()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        started.elapsed()
    };
    echo();
    let pid = daemon.pid();
    let baseline = common::procs::rss_kib(pid);

    // Output nobody reads: `cat /dev/zero` must end up blocked on its pipe.
    let unread = master.unread(&daemon, "exec cat /dev/zero", 4096);
    // Input nobody reads: the client may send a window's worth, not 200 MB.
    let deaf = master.flood(&daemon, "exec sleep 60", 200_000_000);
    let mut cat = Vec::new();
    wait_for("cat", || {
        cat = procs::named(pid, "cat /dev/zero");
        !cat.is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    let cat_before = procs::bytes_written(cat[0]);

    let (mut peak, mut slowest) = (baseline, Duration::ZERO);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        slowest = slowest.max(echo());
        peak = peak.max(common::procs::rss_kib(pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let cat_moved = procs::bytes_written(cat[0]).saturating_sub(cat_before);
    let accepted = deaf.sent();
    eprintln!(
        "rss baseline {baseline} KiB, peak {peak} KiB; slowest echo {slowest:?}; \
         cat wrote {cat_moved} bytes in 10 s; client sent {accepted} bytes into `sleep`"
    );
    assert!(
        peak - baseline < RSS_BOUND_KIB,
        "daemon RSS grew by {} KiB",
        peak - baseline
    );
    assert!(
        slowest < Duration::from_secs(2),
        "an echo took {slowest:?} while other channels were stalled"
    );
    // The pipe and the client's window hold a few MiB, not 10 s of /dev/zero.
    assert!(cat_moved < 4 * 1024 * 1024, "cat wrote {cat_moved} bytes");
    assert!(
        accepted < 4 * WINDOW as u64,
        "the client sent {accepted} bytes into a program that reads nothing"
    );
    assert!(
        master.alive(),
        "the control master lost the connection (keepalives unanswered?)"
    );
    drop((unread, deaf));
}

/// paramiko plays a client that ignores the window: it sends 32 MiB into `sleep` regardless.
const IGNORES_WINDOW: &str = r#"
import sys, time, paramiko
port, user, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
client = paramiko.SSHClient()
client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
client.connect("127.0.0.1", port=port, username=user, key_filename=key,
               look_for_keys=False, allow_agent=False)
chan = client.get_transport().open_session()
chan.exec_command("sleep 20")
time.sleep(0.5)
sent, chunk = 0, b"x" * 32768
try:
    while sent < 32 * 1024 * 1024:
        chan.out_window_size = 1 << 30   # pretend the server granted more
        sent += chan.send(chunk)
except Exception as e:
    pass
deadline = time.time() + 10
while client.get_transport().is_active() and time.time() < deadline:
    time.sleep(0.1)
print("active" if client.get_transport().is_active() else "closed", sent)
"#;

#[test]
fn a_client_that_ignores_the_window_is_disconnected() {
    require_tool("python3");
    let (_sb, daemon, key, _api) = ssh_daemon(&[]);
    let out = Command::new("python3")
        .args(["-c", IGNORES_WINDOW])
        .arg(daemon.ssh_port.to_string())
        .arg(me().name)
        .arg(&key)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paramiko: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut words = said.split_whitespace();
    assert_eq!(words.next(), Some("closed"), "{said}");
    let sent: usize = words.next().unwrap().parse().unwrap();
    assert!(
        sent < 3 * WINDOW,
        "{sent} bytes went in before the disconnect"
    );
    // The daemon goes on serving.
    let echo = daemon
        .ssh(&me().name, &key)
        .arg("echo ok")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&echo.stdout), "ok\n");
}
