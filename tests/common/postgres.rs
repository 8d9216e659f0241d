//! A real PostgreSQL server for tests: Debian's `postgresql` package
//! (`/usr/lib/postgresql/<version>/bin/{initdb,postgres,psql}`, which scripts/test installs),
//! a fresh cluster made by `initdb` in the sandbox's `NAME/` directory and served by `postgres`
//! on a free loopback port (TCP only, no Unix socket), killed on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI) the cluster belongs to
//! `nobody`, and `initdb` and `postgres` run with that uid and gid (the sandbox dir is opened
//! to traversal, 0711, for it); otherwise they run as the current user. Every TCP login needs
//! a password (scram-sha-256): the superuser [`Postgres::SUPERUSER`] has
//! [`Postgres::SUPERUSER_PASSWORD`], so a role without a password — or a dropped one — cannot
//! log in. Clients are the package's own `psql` over TCP ([`Postgres::psql`] as superuser,
//! [`Postgres::login`] as anyone).

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Sandbox;

/// A running `postgres` on `127.0.0.1:port`; stopped (fast shutdown, then killed) on drop.
pub struct Postgres {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    /// The cluster's superuser (`initdb -U`).
    pub const SUPERUSER: &'static str = "postgres";
    /// Its password.
    pub const SUPERUSER_PASSWORD: &'static str = "pg-super-test-pw";

    /// A new cluster in the sandbox's `postgres/` directory, started and answering a query
    /// (waits up to 30 s).
    pub fn start(sb: &Sandbox) -> Self {
        Self::start_named(sb, "postgres")
    }

    /// Like [`Postgres::start`], in the sandbox's `NAME/` directory (several per sandbox).
    pub fn start_named(sb: &Sandbox, name: &str) -> Self {
        let bin = Self::bin_dir();
        let dir = sb.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("pwfile"),
            format!("{}\n", Self::SUPERUSER_PASSWORD),
        )
        .unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some((uid, gid)) = owner() {
            // The account must reach its own directory: the sandbox lets it pass, no more.
            std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o711))
                .unwrap();
            for path in [dir.clone(), dir.join("pwfile")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        let out = as_owner(Command::new(bin.join("initdb")))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", Self::SUPERUSER, "--pwfile"])
            .arg(dir.join("pwfile"))
            .args(["--auth-host=scram-sha-256", "--auth-local=reject"])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            child: None,
            port: 0,
            dir,
            bin,
        };
        // A port picked free may be taken before postgres binds it: then another one.
        for _ in 0..3 {
            if pg.launch() {
                return pg;
            }
        }
        panic!("postgres did not start:\n{}", pg.log())
    }

    /// `/usr/lib/postgresql/<version>/bin` with the highest version that has a `postgres`.
    /// Panics (saying what installs it) when there is none.
    pub fn bin_dir() -> PathBuf {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").is_file().then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): run \
                 scripts/test (or scripts/test --setup-only), which installs Debian's postgresql"
            )
        })
    }

    /// Stops the server (a fast shutdown) and starts it again on the same port and cluster,
    /// as an operator's restart: every client's connection is cut.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        assert!(
            self.launch_on(port),
            "postgres did not restart:\n{}",
            self.log()
        );
    }

    /// Starts `postgres` on a fresh free port; false when it exited before answering.
    fn launch(&mut self) -> bool {
        self.launch_on(free_port())
    }

    fn launch_on(&mut self, port: u16) -> bool {
        self.port = port;
        // What this start logs: a restart's log already holds the first start's lines.
        let from = self.log().len();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = as_owner(Command::new(self.bin.join("postgres")))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            // A throwaway cluster: durability buys nothing, speed does.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=40"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let listening = format!("port {}", self.port);
        loop {
            let log = self.log().get(from..).unwrap_or_default().to_string();
            if log.contains(&listening) && log.contains("ready to accept connections") {
                break;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not get ready:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        let answer = self.psql("SELECT 40 + 2");
        assert_eq!(answer, "42", "{}", self.log());
        true
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/DB?sslmode=disable` (no TLS is set up).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Its directory in the sandbox (`data/` is the cluster, `log` its log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything the server logged so far (startup, errors, failed logins).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Runs `sql` as the superuser in database `postgres`, insisting it succeeds; returns the
    /// rows, unaligned and without headers (`a|b` a line), trimmed. Several statements in one
    /// call run as one transaction (`psql -c`), which `CREATE DATABASE` refuses: give it its own.
    pub fn psql(&self, sql: &str) -> String {
        self.run_sql(Self::SUPERUSER, Self::SUPERUSER_PASSWORD, "postgres", sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} as superuser: {e}"))
    }

    /// Runs `sql` as `user` with `password` in `db`: the rows as [`Postgres::psql`] gives
    /// them, or what `psql` said when it could not log in or the statement failed.
    pub fn run_sql(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Logs in as `user` with `password` (database `postgres`): `Ok` with the name the server
    /// says it is (`current_user`), or `psql`'s complaint (no such role, wrong password,
    /// expired).
    pub fn login(&self, user: &str, password: &str) -> Result<String, String> {
        self.run_sql(user, password, "postgres", "SELECT current_user")
    }

    /// Whether role `name` exists (`pg_roles`).
    pub fn role_exists(&self, name: &str) -> bool {
        let name = name.replace('\'', "''");
        self.psql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
        )) == "1"
    }

    /// The server's pid (the postmaster), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it: a fast shutdown (SIGINT), killed if it takes more than 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The account the cluster belongs to when the tests run as root (`nobody`); `None` when they
/// do not (then it is the current user's).
fn owner() -> Option<(u32, u32)> {
    nix::unistd::Uid::effective().is_root().then(|| {
        let nobody = keyport::osuser::lookup("nobody").expect("an account named nobody");
        (nobody.uid, nobody.gid)
    })
}

/// `command` with a clean environment, run as [`owner`] when there is one (std drops the
/// supplementary groups too when root sets a uid).
fn as_owner(mut command: Command) -> Command {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .current_dir("/");
    if let Some((uid, gid)) = owner() {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
