//! The client's own ssh-agent (OpenSSH's), holding one key keyport never saw: what `ssh -A`
//! forwards in the tests; killed on drop. Also: waiting for a session's directory to go.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Sandbox;

/// A running `ssh-agent -D` with the sandbox key `key_name` added.
pub struct ClientAgent {
    child: Child,
    /// Its socket (`SSH_AUTH_SOCK` for the client).
    pub sock: PathBuf,
    /// The added key's public line.
    pub public_line: String,
}

impl ClientAgent {
    /// Starts the agent and adds the sandbox's key `key_name` (made if missing).
    pub fn start(sb: &Sandbox, key_name: &str) -> Self {
        let sock = sb.dir.path().join("client-agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = sb.client_key(key_name);
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(added.status.success(), "{added:?}");
        let public_line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        Self {
            child,
            sock,
            public_line,
        }
    }
}

impl Drop for ClientAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 10 s) until a session's directory is gone.
pub fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} outlived its session",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}
