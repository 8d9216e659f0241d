//! A real OpenSSH `sshd` for tests that need a peer: on a free loopback port, its own host key
//! and authorized_keys, letting one login in; killed on drop. [`Sshd::build`] makes others
//! beside it (relay tests run several per sandbox): more logins, extra config lines, other
//! host key types, no sftp subsystem, a given port.

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
    host_lines: Vec<String>,
}

/// What [`Sshd::build`] starts: logins, config lines and host keys beyond [`Sshd::start`]'s.
pub struct SshdBuilder<'a> {
    sb: &'a Sandbox,
    name: String,
    logins: Vec<String>,
    extra: Vec<String>,
    sftp: bool,
    host_keys: Vec<String>,
    port: Option<u16>,
}

impl<'a> SshdBuilder<'a> {
    /// Lets `login` in too (`AllowUsers`).
    pub fn login(mut self, login: &str) -> Self {
        self.logins.push(login.to_string());
        self
    }

    /// Appends `line` to the config (e.g. `AcceptEnv GITHUB_TOKEN KEYPORT_*`).
    pub fn config(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }

    /// No `Subsystem sftp` line: the server offers no sftp.
    pub fn without_sftp(mut self) -> Self {
        self.sftp = false;
        self
    }

    /// Its host keys, by `ssh-keygen -t` type (default: one ed25519). A key file this
    /// server's directory already holds (from an earlier server of the same name) is kept.
    pub fn host_keys(mut self, types: &[&str]) -> Self {
        self.host_keys = types.iter().map(|t| t.to_string()).collect();
        self
    }

    /// Listens on `port` instead of a free one (a restart on the same address).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts it and waits until it listens.
    pub fn start(self) -> Sshd {
        let mut extra = self.extra;
        // OpenSSH 9.8 penalises source addresses (PerSourcePenalties); every relayed
        // connection comes from loopback, so tests exempt it, as sshpiper's e2e does.
        if openssh_at_least(9, 8) {
            extra.push("PerSourcePenaltyExemptList 127.0.0.0/8".into());
        }
        Sshd::launch(
            self.sb,
            &self.name,
            &self.logins,
            &self.host_keys,
            self.port,
            self.sftp,
            &extra,
        )
    }
}

impl Sshd {
    pub fn start(sb: &Sandbox, login: &str) -> Self {
        Self::launch(
            sb,
            "sshd",
            &[login.to_string()],
            &["ed25519".to_string()],
            None,
            true,
            &[],
        )
    }

    /// A server of its own in the sandbox's `NAME/` directory, configured further before
    /// [`SshdBuilder::start`]; lets nobody in until given a [`SshdBuilder::login`].
    pub fn build<'a>(sb: &'a Sandbox, name: &str) -> SshdBuilder<'a> {
        SshdBuilder {
            sb,
            name: name.to_string(),
            logins: Vec::new(),
            extra: Vec::new(),
            sftp: true,
            host_keys: vec!["ed25519".to_string()],
            port: None,
        }
    }

    fn launch(
        sb: &Sandbox,
        name: &str,
        logins: &[String],
        host_keys: &[String],
        port: Option<u16>,
        sftp: bool,
        extra: &[String],
    ) -> Self {
        require_tool("sshd");
        assert!(!logins.is_empty(), "sshd {name}: no login to let in");
        let dir = sb.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        // sshd reads authorized_keys as the user logging in.
        for d in [sb.dir.path(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut host_lines = Vec::new();
        let mut host_config = String::new();
        for kind in host_keys {
            let host = dir.join(format!("host_{kind}"));
            if !host.exists() {
                let status = Command::new("ssh-keygen")
                    .args(["-q", "-t", kind, "-N", "", "-f"])
                    .arg(&host)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            host_lines.push(std::fs::read_to_string(host.with_extension("pub")).unwrap());
            host_config.push_str(&format!("HostKey {}\n", host.display()));
        }
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let config = dir.join("sshd_config");
        let mut text = format!(
            "Port {port}\nListenAddress 127.0.0.1\n{host_config}\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowUsers {logins}\nPidFile none\n\
             LogLevel VERBOSE\n",
            dir = dir.display(),
            logins = logins.join(" "),
        );
        if sftp {
            text.push_str("Subsystem sftp internal-sftp\n");
        }
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&config, text).unwrap();
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
            host_line: host_lines[0].clone(),
            host_lines,
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

    /// The first host key's public line (`ssh-ed25519 AAAA… comment`).
    pub fn host_line(&self) -> &str {
        self.host_line.trim()
    }

    /// Every host key's public line, in `host_keys` order.
    pub fn host_lines(&self) -> Vec<&str> {
        self.host_lines.iter().map(|l| l.trim()).collect()
    }

    /// Kills it now (a server going down; its port is free again for a restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The listening process's pid (its connections are processes below it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections it has accepted so far (its log says so for each).
    pub fn connections(&self) -> usize {
        self.log().matches("Connection from 127.0.0.1 port").count()
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

/// Whether the installed OpenSSH (`sshd -V`; the client's `ssh -V` if that says nothing) is
/// at least `major.minor`.
pub fn openssh_at_least(major: u32, minor: u32) -> bool {
    let said = |program: &str| {
        Command::new(program)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    };
    let mut text = said("/usr/sbin/sshd");
    if !text.contains("OpenSSH_") {
        text = said("ssh");
    }
    let Some(rest) = text.split("OpenSSH_").nth(1) else {
        return false;
    };
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = digits.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (major, minor)
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

/// A bare repository with one commit in `account`'s home, owned by it.
pub fn bare_repo(sb: &Sandbox, account: &OsAccount) -> PathBuf {
    require_tool("git");
    let work = sb.dir.path().join("seed");
    let git = |args: &[&str], dir: &Path| {
        let out = Command::new("git")
            .args(["-c", "user.name=seed", "-c", "user.email=seed@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    std::fs::create_dir_all(&work).unwrap();
    git(&["init", "-q"], &work);
    std::fs::write(work.join("README"), "seed\n").unwrap();
    git(&["add", "README"], &work);
    git(&["commit", "-q", "-m", "seed"], &work);
    let repo = account.home.join("repo.git");
    git(
        &["clone", "-q", "--bare", ".", repo.to_str().unwrap()],
        &work,
    );
    chown_tree(&repo, account);
    repo
}
