//! SSH channel behaviour beyond a single command: window changes reach the pty, client
//! `signal` requests reach the process group, channels multiplexed on one connection
//! (`ControlMaster`) do not stall each other, repeated failed logins from one address are
//! turned away, and shutdown tells clients and kills and reaps their processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mux::Master;
use common::{Daemon, Sandbox, me, require_tool};

fn started() -> (Sandbox, Daemon, PathBuf) {
    require_tool("ssh");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let daemon = sb.serve();
    (sb, daemon, key)
}

/// The ssh arguments `Daemon::ssh` uses, as one string for a shell or a pty driver.
fn ssh_argv(daemon: &Daemon, key: &Path) -> Vec<String> {
    let cmd = daemon.ssh(&me().name, key);
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect()
}

#[test]
fn a_window_change_reaches_the_pty() {
    require_tool("python3");
    let (_sb, daemon, key) = started();
    let mut argv = ssh_argv(&daemon, &key);
    argv.insert(1, "-tt".into());
    argv.push("stty size; echo first; sleep 1; stty size; echo done".into());
    let text = common::pty::pty_sizes(&argv);
    assert!(text.contains("30 100"), "initial size: {text}");
    assert!(
        text.contains("40 120"),
        "window-change did not reach the pty: {text}"
    );
}

struct Client;

impl russh::client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[tokio::test]
async fn a_signal_request_reaches_the_process_group() {
    let (_sb, daemon, key) = started();
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, ("127.0.0.1", daemon.ssh_port), Client)
        .await
        .unwrap();
    let private = russh::keys::load_secret_key(&key, None).unwrap();
    let auth = session
        .authenticate_publickey(
            me().name,
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(private), None),
        )
        .await
        .unwrap();
    assert!(auth.success());
    let mut channel = session.channel_open_session().await.unwrap();
    // The trap is in a grandchild (the outer shell waits for it, and survives the signal with
    // a trap of its own): only a signal sent to the whole process group reaches it.
    channel
        .exec(
            true,
            "trap true USR1; sh -c 'trap \"echo got-usr1; exit 7\" USR1; echo ready; while :; do sleep 0.1; done'; exit $?",
        )
        .await
        .unwrap();
    let mut output = String::new();
    let mut status = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } => {
                output.push_str(&String::from_utf8_lossy(&data));
                if output.contains("ready") && !output.contains("sent") {
                    output.push_str("sent");
                    channel.signal(russh::Sig::USR1).await.unwrap();
                }
            }
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    assert!(output.contains("got-usr1"), "{output}");
    assert_eq!(status, Some(7), "{output}");
}

#[test]
fn multiplexed_channels_do_not_stall_each_other() {
    let (sb, daemon, key) = started();
    let master = Master::start(&daemon, &me().name, &key, sb.dir.path().join("mux"), &[]);
    let via_master = |command: &str| master.ssh(&daemon, command);
    // A channel whose reader stops: `yes` fills its pipe and its SSH window, then waits.
    let stalled = master.unread(&daemon, "exec yes", 1024);
    // Stalled for real: `yes` has stopped writing (its pipe and the window are full).
    let daemon_pid = daemon.pid();
    let mut yes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while yes.is_empty() {
        assert!(Instant::now() < deadline, "no `yes` below the daemon");
        yes = common::procs::below(daemon_pid)
            .into_iter()
            .filter(|(_, cmd)| cmd.trim() == "yes")
            .map(|(pid, _)| pid)
            .collect();
    }
    common::procs::settled(
        || common::procs::bytes_written(yes[0]),
        Duration::from_millis(500),
    );
    // And a channel whose program never reads while the client keeps sending (64 MiB at most).
    let flooding = master.flood(&daemon, "sleep 300", 64 * 1024 * 1024);
    // The window is full: the client can send no more into it.
    let held = common::procs::settled(|| flooding.sent(), Duration::from_millis(500));
    assert!(held < 64 * 1024 * 1024, "the whole flood went in");
    // Other channels on the same connection still work, one after another.
    for i in 0..5 {
        let started = Instant::now();
        let out = via_master(&format!("echo ok-{i}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("ok-{i}\n"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a stalled channel stalled the others"
        );
    }
    drop((stalled, flooding));
}

#[test]
fn repeated_failures_from_one_address_are_turned_away() {
    let (sb, daemon, key) = started();
    let wrong = sb.client_key("wrong");
    let refused = |out: &std::process::Output| {
        out.status.code() == Some(255)
            && String::from_utf8_lossy(&out.stderr).contains("Permission denied (publickey)")
    };
    for i in 0..20 {
        let out = daemon
            .ssh(&me().name, &wrong)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(refused(&out), "wrong key #{i}: {out:?}");
    }
    // The failures are counted when each connection ends; give the last ones a moment. The
    // right key must then be refused as a wrong one is (not a dropped connection).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut right_key_refusals = 0;
    loop {
        let out = daemon
            .ssh(&me().name, &key)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            assert!(
                Instant::now() < deadline,
                "the right key still works after 20 failures"
            );
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert!(refused(&out), "the right key, turned away: {out:?}");
        right_key_refusals += 1;
        break;
    }
    // Every refused connection counted once: the 20 wrong keys and the turned-away right one.
    let failures = || {
        let metrics = common::Http::new(&daemon.url, None).get("metrics").body;
        common::metric(&metrics, "keyport_ssh_auth_failures_total")
    };
    let want = f64::from(20 + right_key_refusals);
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(failures(), want);
}

#[test]
fn shutdown_tells_clients_and_reaps_their_processes() {
    let (_sb, daemon, key) = started();
    // A command with a background child, and a pty session that ignores hangups.
    let mut client = daemon
        .ssh(&me().name, &key)
        .arg("sleep 301 & echo $! $$; wait")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(client.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut stubborn = daemon
        .ssh(&me().name, &key)
        .args(["-tt", "trap '' HUP; echo $$; exec sleep 302"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(stubborn.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    pids.push(line.trim().parse().unwrap());
    for pid in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} not running"
        );
    }
    let metrics = common::Http::new(&daemon.url, None).get("metrics").body;
    assert_eq!(
        common::metric(&metrics, "keyport_ssh_sessions_active"),
        2.0,
        "{metrics}"
    );
    assert!(
        common::metric(&metrics, "keyport_ssh_sessions_total") >= 1.0,
        "{metrics}"
    );
    assert!(daemon.stop().success(), "the daemon exits cleanly");
    let status = client.wait().unwrap();
    assert_eq!(status.code(), Some(255), "the client was disconnected");
    let mut err = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("keyport is shutting down"),
        "clients are told why: {err}"
    );
    let _ = stubborn.wait();
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie about to be collected by init — never still running.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z")),
            "process {pid} outlived the daemon: {stat}"
        );
    }
}

#[test]
fn a_lock_out_ends_when_its_window_has_passed() {
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let config = sb.dir.path().join("keyport.toml");
    std::fs::write(
        &config,
        "[ssh]\nlogin_failures = 3\nlogin_failure_window_secs = 2\n",
    )
    .unwrap();
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", config.to_str().unwrap())]);
    // Made after the first start, so it is not one of the admin's login keys.
    let wrong = sb.client_key("wrong");
    let attempt = |key: &Path| {
        daemon
            .ssh(&me().name, key)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(attempt(&wrong).status.code(), Some(255));
    }
    // Turned away (once the last failure is counted)...
    let deadline = Instant::now() + Duration::from_secs(10);
    while attempt(&key).status.success() {
        assert!(
            Instant::now() < deadline,
            "3 failures did not lock the address out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let locked_at = Instant::now();
    // ...until the window has passed; then the right key works again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !attempt(&key).status.success() {
        assert!(Instant::now() < deadline, "the lock-out never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        locked_at.elapsed() >= Duration::from_millis(500),
        "the lock-out did not hold"
    );
}
