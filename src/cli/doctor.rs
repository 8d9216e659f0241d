//! `keyport doctor`: checks what a working setup needs — the daemon answers, the API knows you,
//! the data dir is private, the master key opens it, the host key exists, `sftp-server` is
//! installed, and inside a session that `PATH` finds `keyport` — and prints one line per check,
//! `ok`, `FAIL` (with what is wrong and what to do) or `skip` (does not apply here). Any `FAIL`
//! makes the exit code non-zero.
//!
//! It only reads: the data dir is opened the way `keyport user list` opens it, and only when it
//! already exists and is private, so a doctor run never creates or repairs anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::DataDirArgs;
use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::datadir::{DB_FILE, MASTER_KEY_FILE};
use crate::keyring::MASTER_KEY_ENV;
use crate::ssh::sessiondir::{BIN_DIR, SESSION_DIR_ENV};
use crate::store::UserRecord;
use crate::vault::Vault;

/// `keyport doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// `--config`, `--data-dir`: the data dir to check.
    #[command(flatten)]
    pub data: DataDirArgs,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It holds.
    Ok,
    /// It does not: the detail says what is wrong.
    Fail,
    /// It does not apply here (or depends on a check that failed).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, one or two words.
    pub name: &'static str,
    /// Its outcome.
    pub outcome: Outcome,
    /// What was found, or what is wrong and how to fix it.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name,
            outcome,
            detail: detail.into(),
        }
    }

    /// The printed line: `ok    data dir      /var/lib/keyport (0700)`.
    pub fn line(&self) -> String {
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        };
        format!("{outcome:<4}  {:<12}  {}", self.name, self.detail)
    }
}

/// Some checks failed (their lines say which and why).
#[derive(Debug, thiserror::Error)]
#[error("{0} of keyport doctor's checks failed")]
pub struct DoctorFailed(pub usize);

/// Runs every check, prints a line for each, and fails if any failed.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let checks = checks(config);
    for check in &checks {
        println!("{}", check.line());
    }
    match checks.iter().filter(|c| c.outcome == Outcome::Fail).count() {
        0 => Ok(()),
        failed => Err(DoctorFailed(failed).into()),
    }
}

/// Every check, in the order a problem is best fixed in.
pub fn checks(config: &Config) -> Vec<Check> {
    let session = std::env::var_os(SESSION_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let (mut checks, api) = api_checks();
    if session.is_some() && config.data_dir.is_none() {
        // The default data dir in a session is the session user's, not the daemon's (which
        // is not theirs to read): only one named with --data-dir is checked.
        let why = "in a session: run keyport doctor on the daemon's host to check its data dir";
        for name in ["data dir", "master key", "host key"] {
            checks.push(Check::new(name, Outcome::Skip, why));
        }
    } else {
        // A missing data dir is a failure only where the daemon runs, not beside a remote URL.
        let here = api.as_deref().is_none_or(is_loopback_url);
        checks.extend(data_dir_checks(&config.data_dir(), config, here));
    }
    checks.push(sftp_check());
    checks.push(session_path_check(session.as_deref()));
    checks
}

/// `daemon` and `user`: one `GET users/me` answers both. Returns the API URL in use.
fn api_checks() -> (Vec<Check>, Option<String>) {
    let client = match Client::from_env() {
        Ok(client) => client,
        Err(e) => {
            return (
                vec![
                    Check::new("daemon", Outcome::Fail, e.to_string()),
                    Check::new("user", Outcome::Skip, "no API to ask"),
                ],
                None,
            );
        }
    };
    let url = client.url();
    let checks = match client.get::<UserRecord>("users/me") {
        Ok(me) => vec![
            Check::new("daemon", Outcome::Ok, format!("reachable at {url}")),
            Check::new(
                "user",
                Outcome::Ok,
                format!(
                    "{} ({})",
                    me.name,
                    if me.is_admin { "admin" } else { "not admin" }
                ),
            ),
        ],
        Err(ClientError::Api {
            status: status @ (401 | 403),
            message,
            ..
        }) => vec![
            Check::new("daemon", Outcome::Ok, format!("reachable at {url}")),
            Check::new(
                "user",
                Outcome::Fail,
                format!(
                    "the API refuses the token (HTTP {status}: {message}); log in again with \
                     `keyport login --url {url}`"
                ),
            ),
        ],
        Err(e) => vec![
            Check::new("daemon", Outcome::Fail, e.to_string()),
            Check::new("user", Outcome::Skip, "the daemon did not answer"),
        ],
    };
    (checks, Some(url))
}

/// Whether an API URL names this host (`http://127.0.0.1:7070`, `http://localhost:…`,
/// `http://[::1]:…`). The session socket counts as local too.
fn is_loopback_url(url: &str) -> bool {
    if url.starts_with("session socket ") {
        return true;
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    crate::config::is_loopback(rest.split('/').next().unwrap_or_default())
}

/// `data dir`, `master key` and `host key`. `here`: whether a data dir is expected on this
/// host at all (a missing one is then a failure, else a skip).
fn data_dir_checks(dir: &Path, config: &Config, here: bool) -> Vec<Check> {
    let shown = dir.display();
    let skip_rest = |why: &str| {
        vec![
            Check::new("master key", Outcome::Skip, why),
            Check::new("host key", Outcome::Skip, why),
        ]
    };
    let mut checks = vec![match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !here => Check::new(
            "data dir",
            Outcome::Skip,
            format!("no {shown} here: the daemon keeps its data dir on its own host"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::new(
            "data dir",
            Outcome::Fail,
            format!(
                "{shown} does not exist: `keyport serve` creates it on first start \
                 (--data-dir or KEYPORT_DATA_DIR names another)"
            ),
        ),
        Err(e) => Check::new(
            "data dir",
            Outcome::Fail,
            format!("cannot read {shown}: {e}"),
        ),
        Ok(meta) if !meta.is_dir() => Check::new(
            "data dir",
            Outcome::Fail,
            format!("{shown} is not a directory"),
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 == 0 {
                Check::new("data dir", Outcome::Ok, format!("{shown} ({mode:04o})"))
            } else {
                // The daemon refuses such a dir at start; say why and the fix.
                Check::new(
                    "data dir",
                    Outcome::Fail,
                    format!(
                        "{shown} has mode {mode:04o}: open to group or others, want 0700 \
                         (chmod 700 {shown})"
                    ),
                )
            }
        }
    }];
    if checks[0].outcome != Outcome::Ok {
        checks.extend(skip_rest("the data dir check did not pass"));
        return checks;
    }
    // Opening a dir without a database would create one, and a master key with it.
    let database = match config.database() {
        Ok(database) => database,
        Err(e) => {
            checks.push(Check::new("master key", Outcome::Fail, e.to_string()));
            return checks;
        }
    };
    let on_file = matches!(database, crate::store::Database::File(_));
    if on_file && !dir.join(DB_FILE).exists() {
        checks.push(Check::new(
            "master key",
            Outcome::Fail,
            format!("no database in {shown} yet: start `keyport serve` once"),
        ));
        checks.push(Check::new("host key", Outcome::Skip, "no database"));
        return checks;
    }
    let vault = match Vault::open_at(dir, &database, config.limits) {
        Ok(vault) => vault,
        Err(e) => {
            checks.push(Check::new(
                "master key",
                Outcome::Fail,
                format!("{:#}", anyhow::Error::from(e)),
            ));
            checks.push(Check::new(
                "host key",
                Outcome::Skip,
                "the vault did not open",
            ));
            return checks;
        }
    };
    checks.push(master_key_check(dir, &vault));
    // The daemon's host key is ed25519 (`Vault::host_key`); read as stored, never created.
    checks.push(match vault.store().host_key("ed25519") {
        Ok(Some(key)) => Check::new("host key", Outcome::Ok, key.fingerprint),
        Ok(None) => Check::new(
            "host key",
            Outcome::Fail,
            "none yet: `keyport serve` creates it at start",
        ),
        Err(e) => Check::new("host key", Outcome::Fail, e.to_string()),
    });
    checks
}

/// Where the master key came from (the vault opened, so it matches the database).
fn master_key_check(dir: &Path, vault: &Vault) -> Check {
    let id = vault.master_key_id();
    // The same order as `keyring::load`: the variable, when set, wins over the file.
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return Check::new(
            "master key",
            Outcome::Ok,
            format!("from {MASTER_KEY_ENV} (id {id}, opens the database)"),
        );
    }
    let file = dir.join(MASTER_KEY_FILE);
    let mode = std::fs::metadata(&file).map_or(0, |m| m.permissions().mode() & 0o777);
    if mode & 0o077 != 0 {
        return Check::new(
            "master key",
            Outcome::Fail,
            format!(
                "{} has mode {mode:04o}: open to group or others, want 0600 (chmod 600 {0})",
                file.display()
            ),
        );
    }
    Check::new(
        "master key",
        Outcome::Ok,
        format!("file {} (id {id}, opens the database)", file.display()),
    )
}

/// `sftp-server`: what the `sftp` subsystem (and `scp`, which speaks sftp today) runs.
fn sftp_check() -> Check {
    match crate::ssh::sftp_server() {
        Some(path) => Check::new("sftp-server", Outcome::Ok, path.display().to_string()),
        None => Check::new(
            "sftp-server",
            Outcome::Fail,
            format!(
                "none of {} is installed: sftp and scp fail (Debian: apt-get install \
                 openssh-sftp-server)",
                crate::ssh::SFTP_SERVERS.join(", ")
            ),
        ),
    }
}

/// `session PATH`: inside a session, whether `PATH` finds `keyport` (the session's `bin/`
/// is appended to it, so the in-session CLI and `GIT_SSH_COMMAND` work).
fn session_path_check(session: Option<&Path>) -> Check {
    let Some(session) = session else {
        return Check::new("session PATH", Outcome::Skip, "not in a session");
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("keyport"))
        .find(|bin| {
            std::fs::metadata(bin).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    match found {
        Some(bin) => Check::new(
            "session PATH",
            Outcome::Ok,
            format!("finds keyport at {}", bin.display()),
        ),
        None => Check::new(
            "session PATH",
            Outcome::Fail,
            format!(
                "PATH does not find keyport; the session put it in {} (a shell start-up file \
                 that sets PATH drops it: append that dir again)",
                session.join(BIN_DIR).display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_this_host() {
        for (url, local) in [
            ("http://127.0.0.1:7070", true),
            ("http://localhost:7070/", true),
            ("http://[::1]:7070", true),
            ("http://127.1.2.3", true),
            ("session socket /tmp/keyport-x/api.sock", true),
            ("http://10.0.0.5:7070", false),
            ("https://keyport.example.com", false),
            ("http://[2001:db8::1]:7070", false),
        ] {
            assert_eq!(is_loopback_url(url), local, "{url}");
        }
    }

    #[test]
    fn lines_line_up() {
        let ok = Check::new("data dir", Outcome::Ok, "/d (0700)");
        let fail = Check::new("daemon", Outcome::Fail, "cannot reach");
        assert_eq!(ok.line(), "ok    data dir      /d (0700)");
        assert_eq!(fail.line(), "FAIL  daemon        cannot reach");
    }

    #[test]
    fn an_open_data_dir_is_named_with_its_mode_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let checks = data_dir_checks(dir.path(), &Config::default(), true);
        assert_eq!(checks[0].outcome, Outcome::Fail);
        assert!(
            checks[0].detail.contains("mode 0755"),
            "{}",
            checks[0].detail
        );
        assert!(
            checks[0].detail.contains("chmod 700"),
            "{}",
            checks[0].detail
        );
        assert!(checks[1..].iter().all(|c| c.outcome == Outcome::Skip));
    }

    #[test]
    fn a_missing_data_dir_fails_here_and_is_skipped_beside_a_remote_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let here = data_dir_checks(&missing, &Config::default(), true);
        assert_eq!(here[0].outcome, Outcome::Fail, "{}", here[0].detail);
        assert!(here[0].detail.contains("does not exist"));
        let remote = data_dir_checks(&missing, &Config::default(), false);
        assert_eq!(remote[0].outcome, Outcome::Skip);
        // Neither created it.
        assert!(!missing.exists());
    }
}
