//! The one test harness: a private temp dir per test with its own HOME, config and data dir,
//! the real `keyport` binary run against it, and a full dump of the database for
//! "nothing changed" comparisons.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keyport::secrets::Limits;
use keyport::vault::{Actor, NewUserSpec, Vault};

/// A sandbox: temp dir with `home/` and `data/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        Self { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db(&self) -> PathBuf {
        self.data().join("keyport.db")
    }

    /// The real binary with a clean environment pointing at this sandbox.
    pub fn keyport(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyport"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("KEYPORT_DATA_DIR", self.data())
            .env("KEYPORT_LOG", "debug");
        cmd
    }

    /// Runs `keyport ARGS`, returning the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.keyport().args(args).output().unwrap()
    }

    /// Runs `keyport ARGS` and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keyport {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Opens the vault in-process with default limits.
    pub fn vault(&self) -> Vault {
        self.vault_with(Limits::default())
    }

    pub fn vault_with(&self, limits: Limits) -> Vault {
        Vault::open(&self.data(), limits).unwrap()
    }
}

/// The OS user tests run as (sessions and `~` resolve against it).
pub fn me() -> keyport::osuser::OsUser {
    keyport::osuser::current().unwrap()
}

/// Adds user `name` running as the current OS user.
pub fn add_user(vault: &mut Vault, name: &str) {
    vault
        .add_user(
            &Actor::System,
            &NewUserSpec {
                name: name.into(),
                os_user: Some(me().name),
                ..NewUserSpec::default()
            },
        )
        .unwrap();
}

/// Every row of every table, as text, in a stable order: equal dumps mean equal state.
pub fn dump(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    let mut out = String::new();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("{table}: {}\n", row.unwrap().join(" | ")));
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Installs nothing: tells the developer which tool is missing (scripts/test installs them).
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed; run scripts/test, which installs it"
    );
}
