//! An OpenSSH `ControlMaster` connection to a keyport daemon, for tests of channels
//! multiplexed on one connection, and the two stalled channels those tests put on it: one
//! whose client stops reading, one whose program never reads; all killed on drop.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Daemon;

/// `ssh -M -S SOCKET -N`, logged in as `user` with `key`.
pub struct Master {
    child: Child,
    socket: PathBuf,
    user: String,
    key: PathBuf,
}

impl Master {
    /// Starts the master (with `extra` ssh options) and waits until its socket exists.
    pub fn start(daemon: &Daemon, user: &str, key: &Path, socket: PathBuf, extra: &[&str]) -> Self {
        let child = daemon
            .ssh(user, key)
            .args(extra)
            .args(["-M", "-S"])
            .arg(&socket)
            .arg("-N")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "control master did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket,
            user: user.into(),
            key: key.into(),
        }
    }

    /// `ssh -S SOCKET HOST command`: a new channel on the master's connection.
    pub fn ssh(&self, daemon: &Daemon, command: &str) -> Command {
        let mut cmd = daemon.ssh(&self.user, &self.key);
        cmd.arg("-S").arg(&self.socket).arg(command);
        cmd
    }

    /// A channel running `command` whose client reads its first `first` bytes of output and
    /// then no more.
    pub fn unread(&self, daemon: &Daemon, command: &str, first: usize) -> Killed {
        let mut child = self
            .ssh(daemon, command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = vec![0u8; first];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        Killed(child)
    }

    /// A channel running `command` into whose stdin the client writes up to `total` bytes in
    /// 64 KiB pieces, from a thread, counting what went in.
    pub fn flood(&self, daemon: &Daemon, command: &str, total: u64) -> Flood {
        let mut child = self
            .ssh(daemon, command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut sink = child.stdin.take().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded by `total`, and it stops when the channel is killed.
            while counter.load(Ordering::Relaxed) < total {
                if sink.write_all(&chunk).is_err() {
                    break;
                }
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        });
        Flood {
            child: Killed(child),
            sent,
            writer: Some(writer),
        }
    }

    /// Whether the master's connection is still up.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A channel the client floods ([`Master::flood`]); its program is killed (ending the
/// writer) on drop.
pub struct Flood {
    child: Killed,
    sent: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// Bytes the client got into the channel so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
