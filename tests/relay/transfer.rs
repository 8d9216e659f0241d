//! Bulk data and connections through the relay: scp and sftp byte-exact, flow control end to
//! end with bounded memory, one upstream connection per client connection, and its end
//! ending the sessions.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::mux::Master;
use crate::common::procs::{self, Running, wait_for};
use crate::common::relay::{
    Ran, Relay, payload, run, run_with_input, scp, sftp, sha256_file, sha256_hex,
};
use crate::common::require_tool;

#[test]
fn scp_and_sftp_through_the_relay_are_byte_exact() {
    let Some(r) = Relay::start() else { return };
    require_tool("scp");
    require_tool("sftp");
    let local = r.gw.sb.dir.path().join("up.bin");
    let data = payload(50 * 1000 * 1000);
    std::fs::write(&local, &data).unwrap();
    let sum = sha256_hex(&data);
    let daemon = &r.gw.daemon;
    // scp's default (the sftp protocol, OpenSSH ≥ 9.0) and its legacy protocol (`scp -t`
    // exec'd upstream), both ways.
    for (mode, extra) in [("sftp", &[][..]), ("legacy", &["-O"][..])] {
        let remote = format!("up-{mode}.bin");
        let up = scp(
            daemon,
            "alice:dev1",
            &r.alice.login,
            extra,
            local.to_str().unwrap(),
            &format!("127.0.0.1:{remote}"),
        );
        assert_eq!(up.code, Some(0), "scp {mode} up: {up:?}");
        let upstream = r.ws.home.join(&remote);
        assert_eq!(sha256_file(&upstream), sum, "scp {mode} upload byte-exact");
        assert_eq!(std::fs::metadata(&upstream).unwrap().uid(), r.ws.uid);
        let back = r.gw.sb.dir.path().join(format!("down-{mode}.bin"));
        let down = scp(
            daemon,
            "alice:dev1",
            &r.alice.login,
            extra,
            &format!("127.0.0.1:{remote}"),
            back.to_str().unwrap(),
        );
        assert_eq!(down.code, Some(0), "scp {mode} down: {down:?}");
        assert_eq!(sha256_file(&back), sum, "scp {mode} download byte-exact");
    }

    let small = r.gw.sb.dir.path().join("small.bin");
    std::fs::write(&small, payload(1 << 20)).unwrap();
    let again = r.gw.sb.dir.path().join("again.bin");
    let batch = format!(
        "pwd\nput {} sftp.bin\nls -l\nget sftp.bin {}\nrm sftp.bin\n",
        small.display(),
        again.display()
    );
    let out = sftp(daemon, "alice:dev1", &r.alice.login, &batch);
    assert_eq!(out.code, Some(0), "sftp: {out:?}");
    assert!(
        out.out.contains(&r.ws.home.display().to_string()),
        "pwd: {out:?}"
    );
    assert!(out.out.contains("sftp.bin"), "ls: {out:?}");
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&small).unwrap()
    );
    assert!(!r.ws.home.join("sftp.bin").exists(), "rm did not remove it");
}

/// The daemon's resident memory may grow by at most this much while a client does not read
/// a relayed download and an upstream program does not read a relayed upload.
const RSS_BOUND_KIB: u64 = 48 * 1024;

#[test]
fn relayed_data_is_flow_controlled_end_to_end_with_bounded_memory() {
    let Some(r) = Relay::start() else { return };
    // A program that reads late gets every byte; a download ends byte-exact (russh #553, #213).
    let data = Arc::new(payload(40 << 20));
    let sum = run_with_input(r.relayed().arg("sleep 3; sha256sum"), data.clone()).ok("late");
    assert_eq!(sum.split_whitespace().next(), Some(&*sha256_hex(&data)));
    let big = r.ws.home.join("big.bin");
    std::fs::write(&big, &*data).unwrap();
    let out = r
        .relayed()
        .arg("cat ~/big.bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == *data,
        "download byte-exact ({} bytes)",
        out.stdout.len()
    );

    let pid = r.gw.daemon.pid();
    let baseline = procs::rss_kib(pid);
    const TOTAL: u64 = 256 << 20;
    // A download nobody reads (after its first MiB)...
    let mut download = Running(
        r.relayed()
            .arg(format!("head -c {TOTAL} /dev/zero"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut reader = download.0.stdout.take().unwrap();
    let mut first = vec![0u8; 1 << 20];
    reader.read_exact(&mut first).unwrap();
    // ...and an upload into a program that never reads.
    let mut upload = Running(
        r.relayed()
            .arg("exec sleep 120")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut sink = upload.0.stdin.take().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        while counter.load(Ordering::Relaxed) < TOTAL && sink.write_all(&chunk).is_ok() {
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let mut head = Vec::new();
    wait_for("head upstream", Duration::from_secs(20), || {
        head = procs::below(r.sshd.pid())
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("head -c"))
            .map(|(pid, _)| pid)
            .collect();
        !head.is_empty()
    });
    let produced = procs::settled(|| procs::bytes_written(head[0]), Duration::from_secs(1));
    let accepted = procs::settled(|| sent.load(Ordering::Relaxed), Duration::from_secs(1));
    let peak = procs::rss_kib(pid);
    eprintln!(
        "rss {baseline} -> {peak} KiB; upstream head wrote {produced} bytes, the client \
         got {accepted} bytes into `sleep`"
    );
    assert!(
        produced < 64 << 20,
        "upstream wrote {produced} bytes for a client that reads nothing"
    );
    assert!(
        accepted < 64 << 20,
        "the client sent {accepted} bytes into a program that reads nothing"
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_BOUND_KIB,
        "daemon RSS grew by {} KiB",
        peak.saturating_sub(baseline)
    );
    // Read again: every byte arrives.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(first.len() as u64 + rest.len() as u64, TOTAL);
    assert!(download.0.wait().unwrap().success());
    drop(upload);
}

#[test]
fn one_upstream_connection_per_client_connection_and_its_end_ends_the_sessions() {
    let Some(r) = Relay::start() else { return };
    let before = r.sshd.connections();
    let mut master = Master::start(
        &r.gw.daemon,
        "alice:dev1",
        &r.alice.login,
        r.gw.sb.dir.path().join("mux"),
        &[],
    );
    let daemon = &r.gw.daemon;
    // A channel killed abruptly while another runs on the same connection (russh #575).
    let mut held = Running(
        master
            .ssh(daemon, "echo $$ > ~/held.pid; exec sleep 100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid_file = r.ws.home.join("held.pid");
    wait_for("held.pid", Duration::from_secs(20), || pid_file.exists());
    let out = run(&mut master.ssh(daemon, "kill -9 $(cat ~/held.pid); sleep 0.5; echo b-ok"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.out, "b-ok\n");
    wait_for(
        "the killed channel's client",
        Duration::from_secs(10),
        || held.0.try_wait().unwrap().is_some(),
    );
    assert_eq!(held.0.wait().unwrap().code(), Some(255), "exit-signal KILL");
    let out = run(&mut master.ssh(daemon, "echo c-ok"));
    assert_eq!(out.out, "c-ok\n", "{out:?}");
    assert!(
        master.alive(),
        "the connection did not survive one channel's end"
    );
    assert_eq!(
        r.sshd.connections() - before,
        1,
        "three channels on one client connection: one upstream connection"
    );

    // The upstream connection dies: the client's sessions end, they do not hang.
    let mut waiting = Running(
        master
            .ssh(daemon, "echo up; exec sleep 100")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = [0u8; 3];
    waiting
        .0
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut up)
        .unwrap();
    let conn: Vec<u32> = procs::below(r.sshd.pid())
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with(&format!("sshd: {}", r.ws.name)))
        .map(|(pid, _)| pid)
        .collect();
    assert!(!conn.is_empty(), "{:?}", procs::below(r.sshd.pid()));
    for pid in conn {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_for("the session's end", Duration::from_secs(10), || {
        waiting.0.try_wait().unwrap().is_some()
    });
    assert_ne!(waiting.0.wait().unwrap().code(), Some(0));
    drop(master);
    // And the gateway goes on relaying.
    assert_eq!(run(r.relayed().arg("echo again")).ok("again"), "again\n");
}

/// Runs `command` on a new channel of the ControlMaster at `socket` (through `base`, a
/// command that reaches the same server) and returns what the mux client left, within 20 s.
fn on_master(mut base: std::process::Command, socket: &std::path::Path, command: &str) -> Ran {
    let child = base
        .arg("-S")
        .arg(socket)
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    wait_for("the mux client", Duration::from_secs(20), || {
        child.0.try_wait().unwrap().is_some()
    });
    let mut out = Ran {
        code: child.0.wait().unwrap().code(),
        out: String::new(),
        err: String::new(),
    };
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out.out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out.err)
        .unwrap();
    out
}

#[test]
fn an_upstream_refusing_a_session_is_refused_to_the_client_as_sshd_refuses_it() {
    // One session per connection upstream: a second channel on the same connection is
    // refused by sshd at channel open (warpgate #270: clients such as Ansible and OpenSSH's
    // mux client rely on that answer to open a connection of their own).
    let Some(r) = Relay::start_with(&[], 0, |b| b.config("MaxSessions 1")) else {
        return;
    };
    let to = |what: &str| {
        if what == "direct" {
            r.direct()
        } else {
            r.relayed()
        }
    };
    let mut seen = Vec::new();
    for what in ["direct", "relayed"] {
        let socket = r.gw.sb.dir.path().join(format!("mux-{what}"));
        let _master = Running(
            to(what)
                .args(["-M", "-S"])
                .arg(&socket)
                .arg("-N")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("the control socket", Duration::from_secs(10), || {
            socket.exists()
        });
        // The one session the upstream allows, held open.
        let mut first = Running(
            to(what)
                .arg("-S")
                .arg(&socket)
                .arg("echo held; exec sleep 30")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = [0u8; 5];
        first
            .0
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .unwrap();
        seen.push(on_master(to(what), &socket, "echo second"));
    }
    let (direct, relayed) = (&seen[0], &seen[1]);
    // sshd's answer: the mux client is told "refused", and falls back to a connection of its
    // own, where the command runs.
    assert!(
        direct.err.contains("Session open refused by peer"),
        "sshd: {direct:?}"
    );
    assert_eq!(direct.out, "second\n", "sshd: {direct:?}");
    assert_eq!(relayed.code, direct.code, "relayed: {relayed:?}");
    assert_eq!(relayed.out, direct.out, "relayed: {relayed:?}");
    assert!(
        relayed.err.contains("Session open refused by peer"),
        "the refusal was not passed on as a channel-open failure: {relayed:?}"
    );
}

/// `tests/clients/probe.py CASE` (paramiko: requests OpenSSH's client cannot send) against
/// the server on `port`, as `user` with `key`.
fn probe(case: &str, port: u16, user: &str, key: &std::path::Path) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/probe.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([case, &port.to_string(), user])
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe.py {case} on port {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn end_of_write_and_break_reach_the_workspace_as_sent_to_its_sshd() {
    let Some(r) = Relay::start() else { return };
    require_tool("python3");
    // eow@openssh.com: the upstream sshd closes the program's stdout and it ends (exit 7);
    // without it passed on, its output would never stop.
    for case in ["eow", "break"] {
        let direct = probe(case, r.sshd.port, &r.ws.name, &r.direct);
        let relayed = probe(case, r.gw.daemon.ssh_port, "alice:dev1", &r.alice.login);
        assert_eq!(relayed, direct, "{case}: relayed (left) vs direct (right)");
    }
}

#[test]
fn a_workspace_without_sftp_runs_every_session_and_says_why_files_are_missing() {
    // No sftp subsystem there, and room for 3 sessions per connection: 8 sessions in a row on
    // one multiplexed connection all run (nothing set up for them lingers upstream) and exit
    // 0 — the exit status reaches a client that closes as soon as it has its EOF (1 to 2 in 6
    // runs lost it when the sshd's EOF went on ahead) —, each has the agent (sshd takes the
    // request once per connection), is told that its file secret was not written, and the
    // delivery records the failure.
    let Some(r) = Relay::start_with(&[], 0, |b| b.without_sftp().config("MaxSessions 3")) else {
        return;
    };
    r.alice
        .secret(serde_json::json!({"name": "f", "value": "v", "file": "~/.kp-never"}));
    let master = Master::start(
        &r.gw.daemon,
        "alice:dev1",
        &r.alice.login,
        r.gw.sb.dir.path().join("mux-nosftp"),
        &[],
    );
    for i in 0..8 {
        // Every session of the connection has the agent (sshd takes the request once).
        let command = "echo ran; ssh-add -l > /dev/null && echo agent";
        let out = master.ssh(&r.gw.daemon, command).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "session {i}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran\nagent\n",
            "session {i}"
        );
        assert!(
            err.contains("file secrets not written") && !err.contains("agent forwarding"),
            "session {i}: {err}"
        );
    }
    // And the delivery says so.
    let listed = r.alice.api.get("users/me/secrets").json();
    assert_eq!(listed[0]["deliveries"][0]["outcome"], "failed", "{listed}");
}
