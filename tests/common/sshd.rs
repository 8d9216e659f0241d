//! A real OpenSSH `sshd` for tests that need a peer: on a free loopback port, its own host key
//! and authorized_keys, letting one login in; killed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{OsAccount, Sandbox, require_tool};

/// A real OpenSSH sshd on a free loopback port, letting `login` in with the keys in its
/// authorized_keys file; killed on drop.
pub struct Sshd {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    host_line: String,
}

impl Sshd {
    pub fn start(sb: &Sandbox, login: &str) -> Self {
        require_tool("sshd");
        let dir = sb.dir.path().join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        // sshd reads authorized_keys as the user logging in.
        for d in [sb.dir.path(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host = dir.join("host_ed25519");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host)
            .status()
            .unwrap();
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {login}\nPidFile none\n\
                 LogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
                host = host.display(),
                dir = dir.display()
            ),
        )
        .unwrap();
        let sshd = Self {
            child: Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("log")).unwrap())
                .spawn()
                .unwrap(),
            port,
            host_line: std::fs::read_to_string(host.with_extension("pub")).unwrap(),
            dir,
        };
        sshd.authorize(&[]);
        // Listening, and on the port picked (not some other process that took it meanwhile).
        let ready = format!("Server listening on 127.0.0.1 port {port}.");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sshd.log().contains(&ready) {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    /// Replaces authorized_keys with `keys`.
    pub fn authorize(&self, keys: &[&str]) {
        let path = self.dir.join("authorized_keys");
        std::fs::write(&path, keys.join("\n") + "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// What `account` needs in `~/.ssh/known_hosts` to trust this sshd.
    pub fn trust(&self, account: &OsAccount) {
        let ssh_dir = account.home.join(".ssh");
        std::fs::create_dir_all(&ssh_dir).unwrap();
        let mut parts = self.host_line.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        let known = ssh_dir.join("known_hosts");
        std::fs::write(&known, format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)).unwrap();
        chown_tree(&ssh_dir, account);
    }

    pub fn host_fingerprint(&self) -> String {
        keyport_keys::LoginKey::parse(self.host_line.trim())
            .unwrap()
            .fingerprint()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chown -R` to `account`.
pub fn chown_tree(path: &Path, account: &OsAccount) {
    let status = Command::new("chown")
        .args(["-R", &format!("{}:{}", account.uid, account.gid)])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}
