//! The session reaper: a small process of its own (`keyport session-reaper`, a fresh image
//! with an empty environment, so none of the daemon's memory or keys), started with the
//! daemon, that ends every live session's processes if the daemon dies without doing it
//! (`kill -9`, a crash). The daemon tells it each session's id (every session program is a
//! session leader, so its pid is the session id its children keep) on a pipe: `+SID` when a
//! program starts, `-SID` when the daemon is done with it. End of file on that pipe — the
//! daemon is gone, however it went — makes the reaper SIGKILL every process still in a
//! tracked session, then exit. Linux does not hand out a pid still in use as a session id, so a
//! tracked id names only that session's processes.
//!
//! The parent-death signal each session leader gets (process.rs) covers the leader even if
//! the reaper itself was killed; the reaper covers what the leader started.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

/// The daemon's end: where session ids are reported.
pub struct Reaper {
    pipe: Mutex<ChildStdin>,
    _child: Child,
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
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("session-reaper")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the session reaper"))?;
        // A reaper that stops reading must never stall a session start.
        let flags = nix::fcntl::fcntl(pipe.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(pipe.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Self {
            pipe: Mutex::new(pipe),
            _child: child,
        })
    }

    /// Tracks the session led by `sid` until the returned guard is dropped.
    pub fn track(&self, sid: u32) -> Tracked<'_> {
        self.tell(&format!("+{sid}\n"));
        Tracked { reaper: self, sid }
    }

    fn tell(&self, line: &str) {
        let mut pipe = self
            .pipe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = pipe.write_all(line.as_bytes()) {
            warn!(error = %e, "cannot tell the session reaper");
        }
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
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(10));
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
