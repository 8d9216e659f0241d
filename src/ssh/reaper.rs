//! The session reaper: a small process of its own (`keyport session-reaper`, a fresh image
//! with an empty environment, so none of the daemon's memory or keys), started with the
//! daemon, that ends every live session's processes if the daemon dies without doing it
//! (`kill -9`, a crash). The daemon tells it each session's id (every session program is a
//! session leader, so its pid is the session id its children keep) on a pipe: `+SID` when a
//! program starts, `-SID` when the daemon is done with it. End of file on that pipe — the
//! daemon is gone, however it went — makes the reaper SIGKILL every process still in a
//! tracked session, then exit. Linux does not hand out a pid still in use as a session id, so a
//! tracked id names only that session's processes; each is signalled through a pidfd after its
//! session was read again, so a pid reused meanwhile is never signalled.
//!
//! What it covers: every process of a session whose program is still running, the programs it
//! started included. Not covered, as under sshd: what a session left behind when its program
//! ended normally (`nohup … &`, untracked then), and a process that made a session of its own
//! (`setsid`). The parent-death signal each session leader gets (process.rs) covers the leader
//! even if the reaper itself was killed.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// The daemon's end: where session ids are reported. A thread of its own writes them, so a
/// session start never waits on the reaper and no line is ever dropped.
pub struct Reaper {
    lines: mpsc::Sender<String>,
}

/// A tracked session; untracked when dropped.
pub struct Tracked<'a> {
    reaper: &'a Reaper,
    sid: u32,
}

impl Reaper {
    /// Starts the reaper from the daemon's own binary. It runs in a process group of its own,
    /// so a terminal's ^C to the daemon does not take it down first.
    pub fn start() -> std::io::Result<Self> {
        // This very binary, even if an upgrade replaced the file on disk since.
        let mut child = Command::new("/proc/self/exe")
            .arg("session-reaper")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let mut pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the session reaper"))?;
        let (lines, queue) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("session-reaper".into())
            .spawn(move || {
                for line in queue {
                    if let Err(e) = pipe.write_all(line.as_bytes()) {
                        warn!(error = %e, "the session reaper is gone: sessions may outlive a crash");
                        break;
                    }
                }
                // The daemon is done (its last `Reaper` is gone): end of file, then reaped.
                drop(pipe);
                let _ = child.wait();
            })?;
        Ok(Self { lines })
    }

    /// Tracks the session led by `sid` until the returned guard is dropped.
    pub fn track(&self, sid: u32) -> Tracked<'_> {
        self.tell(&format!("+{sid}\n"));
        Tracked { reaper: self, sid }
    }

    fn tell(&self, line: &str) {
        // Fails only once the writer thread stopped, which it said.
        let _ = self.lines.send(line.to_string());
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.reaper.tell(&format!("-{}\n", self.sid));
    }
}

/// `keyport session-reaper`: reads `+SID` / `-SID` lines until end of file, then ends what is
/// left of the tracked sessions.
pub fn run() -> std::io::Result<()> {
    // The daemon's terminal signals are not ours: only end of file ends this process.
    for signal in [
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGHUP,
    ] {
        // SAFETY: installing SIG_IGN runs no code in a signal handler.
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    let mut live = HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (sign, sid) = line.split_at(line.len().min(1));
        match (sign, sid.parse::<u32>()) {
            ("+", Ok(sid)) if sid > 1 => {
                live.insert(sid);
            }
            ("-", Ok(sid)) => {
                live.remove(&sid);
            }
            _ => debug!(line = %line, "session reaper: ignored a line"),
        }
    }
    if !live.is_empty() {
        end_sessions(&live);
    }
    Ok(())
}

/// SIGKILLs every process whose session is in `sids`, again until none is left (one may fork
/// while the others die), for at most two seconds.
fn end_sessions(sids: &HashSet<u32>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = members(sids);
        if left.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in left {
            kill_member(pid, sids);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs `pid` if, once pinned by a pidfd, it is still in one of `sids`.
fn kill_member(pid: u32, sids: &HashSet<u32>) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, raw, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return;
    };
    if fd < 0 {
        return; // already gone
    }
    // SAFETY: `fd` was just returned to us and is owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The pidfd names this process for good: if its pid was reused before we opened it, the
    // session read now is the new process's, and it is left alone.
    if session_of(pid).is_some_and(|(_, sid)| sids.contains(&sid)) {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal on a descriptor we own; no siginfo, no flags.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                nix::libc::SIGKILL,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0u32,
            );
        }
    }
}

/// The running processes (not zombies) in one of `sids`.
fn members(sids: &HashSet<u32>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            session_of(*pid).is_some_and(|(state, sid)| state != "Z" && sids.contains(&sid))
        })
        .collect()
}

/// A process's state letter and session id, from `/proc/PID/stat`.
fn session_of(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses): state, ppid, pgrp, sid.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    let sid = fields.nth(2)?.parse().ok()?;
    Some((state, sid))
}
