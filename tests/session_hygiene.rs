//! What a session program starts with, whatever state the daemon is in (issue 11): its own
//! session with no way to the daemon's terminal, sshd's umask, the limits the daemon was
//! started with; and no session outliving a crashed daemon, whose leftover session
//! directories the next start removes — only those.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, Sandbox, procs, require_tool};

/// The core-dump limit the test starts the daemon with: a value no default has.
const CORE_SOFT: u64 = 4 << 20;

/// Starts the daemon the way an operator's shell would: with a controlling terminal, and a
/// umask and core limit of its own (077, 4 MiB).
fn serve_from_a_terminal(sb: &Sandbox) -> (Daemon, OwnedFd) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let (master, slave) = (pty.master, pty.slave);
    let slave_fd = slave.as_raw_fd();
    let mut cmd = sb.keyport();
    // SAFETY: async-signal-safe syscalls only, on values prepared before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            nix::libc::setsid();
            if nix::libc::ioctl(slave_fd, nix::libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::libc::umask(0o077);
            let mut limit = nix::libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            nix::libc::getrlimit(nix::libc::RLIMIT_CORE, &mut limit);
            limit.rlim_cur = CORE_SOFT.min(limit.rlim_max);
            nix::libc::setrlimit(nix::libc::RLIMIT_CORE, &limit);
            Ok(())
        });
    }
    let daemon = sb.serve_command(cmd, &[]);
    drop(slave);
    (daemon, master)
}

/// What the session's shell reports for `ulimit -c; ulimit -Hc` with the limits the daemon
/// was started with, run here the same way.
fn expected_core_limits(shell: &str) -> String {
    let mut cmd = Command::new(shell);
    cmd.args(["-c", "ulimit -c; ulimit -Hc"]);
    // SAFETY: async-signal-safe syscalls only.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut limit = nix::libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            nix::libc::getrlimit(nix::libc::RLIMIT_CORE, &mut limit);
            limit.rlim_cur = CORE_SOFT.min(limit.rlim_max);
            nix::libc::setrlimit(nix::libc::RLIMIT_CORE, &limit);
            Ok(())
        });
    }
    String::from_utf8(cmd.output().unwrap().stdout).unwrap()
}

#[test]
fn exec_sessions_get_sshds_umask_the_startup_limits_and_no_terminal() {
    require_tool("ssh");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let (daemon, _terminal) = serve_from_a_terminal(&sb);
    let user = common::me().name;
    let out = daemon
        .ssh(&user, &key)
        .arg("umask; ps -o tty= -p $$; (exec 3</dev/tty) 2>/dev/null && echo reachable || echo unreachable; ulimit -c; ulimit -Hc")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines[..3],
        ["0022", "?", "unreachable"],
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shell = keyport::osuser::lookup(&user).unwrap().shell;
    let expected = expected_core_limits(&shell);
    assert_eq!(lines[3..].join("\n") + "\n", expected, "core limits");
    // The daemon itself keeps no core limit of its own to give away.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");

    // A pty session's terminal is its own.
    let out = daemon
        .ssh(&user, &key)
        .args(["-tt", "umask; tty; ps -o tty= -p $$"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0022", "{stdout}");
    let tty = lines[1].trim_start_matches("/dev/");
    assert!(tty.starts_with("pts/"), "{stdout}");
    assert_eq!(lines[2], tty, "the shell's controlling terminal is its pty");
}

#[test]
fn the_umask_is_configurable() {
    require_tool("ssh");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let config = sb.dir.path().join("keyport.toml");
    std::fs::write(&config, "[ssh]\numask = \"027\"\n").unwrap();
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", config.to_str().unwrap())]);
    let out = daemon
        .ssh(&common::me().name, &key)
        .arg("umask")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0027");
}

/// Whether `pid` still runs (a zombie waiting for init has stopped running).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The session directories the daemon on `sb` has recorded.
fn recorded(sb: &Sandbox) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sb.data().join("sessions")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            PathBuf::from(text.lines().next().unwrap())
        })
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn kill_9_of_the_daemon_ends_its_sessions_and_the_next_start_sweeps_their_directories() {
    require_tool("ssh");
    require_tool("sftp");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let daemon = sb.serve();
    let user = common::me().name;
    let _sleep = procs::Running(
        daemon
            .ssh(&user, &key)
            .arg("sleep 300; echo never")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _shell = procs::Running(
        daemon
            .ssh(&user, &key)
            .arg("-tt")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its batch input kept open: a session that stays until the test ends.
    let _sftp = procs::Running(
        Daemon::sftp_command(&user, &key, daemon.ssh_port, &["-b", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.pid();
    procs::wait_for("three sessions running", Duration::from_secs(20), || {
        let below = procs::below(pid);
        let has = |needle: &str| below.iter().any(|(_, cmd)| cmd.contains(needle));
        // `sleep 300` itself, the shell's child (not the shell running it): a process the
        // session started, not the session's leader.
        let sleeping = below.iter().any(|(_, cmd)| cmd.trim() == "sleep 300");
        sleeping && has("sftp-server") && below.iter().any(|(_, c)| c.starts_with('-'))
    });
    procs::shells_settled(pid);
    let sessions: Vec<(u32, String)> = procs::below(pid);
    // Shells and commands have a directory; sftp-server has no use for one.
    let dirs = recorded(&sb);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    // What the sweep must not touch: a directory like keyport's that no record names, and a
    // record (planted in the data dir) naming a directory keyport did not make.
    let decoy = tempfile::Builder::new()
        .prefix("keyport-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let records = sb.data().join("sessions");
    let plant = |path: &std::path::Path, uid: u32| {
        let name = path.file_name().unwrap();
        std::fs::write(records.join(name), format!("{}\n{uid}\n", path.display())).unwrap();
    };
    let me = nix::unistd::geteuid().as_raw();
    let victim = sb.dir.path().join("keyport-victim");
    std::fs::create_dir(&victim).unwrap();
    plant(&victim, me);
    // A link where a session directory was: neither it nor what it points to is removed.
    let link = std::env::temp_dir().join(format!("keyport-link{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(decoy.path(), &link).unwrap();
    plant(&link, me);
    // A directory someone else owns now (as root the test can make one).
    let foreign = tempfile::Builder::new()
        .prefix("keyport-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    if keyport::osuser::is_root() {
        nix::unistd::chown(
            foreign.path(),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .unwrap();
    }
    plant(foreign.path(), me);

    daemon.kill9();
    procs::wait_for(
        "every session process gone after kill -9",
        Duration::from_secs(2),
        || sessions.iter().all(|(p, _)| !running(*p)),
    );
    assert!(dirs.iter().all(|d| d.is_dir()), "a crash removes nothing");

    let again = sb.serve();
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "the next start removes the crashed sessions' directories: {dirs:?}\n{}",
        again.log()
    );
    assert!(recorded(&sb).is_empty(), "and their records");
    assert!(decoy.path().is_dir(), "an unrecorded directory stays");
    assert!(victim.is_dir(), "a directory outside the temp dir stays");
    assert!(link.is_symlink(), "a recorded link stays");
    std::fs::remove_file(&link).unwrap();
    if keyport::osuser::is_root() {
        assert!(
            foreign.path().is_dir(),
            "a directory another account owns stays"
        );
    }
    assert_eq!(
        again
            .log()
            .matches("removed a session directory a stopped daemon left")
            .count(),
        2
    );
}
