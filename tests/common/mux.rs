//! An OpenSSH `ControlMaster` connection to a keyport daemon, for tests of channels
//! multiplexed on one connection; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
