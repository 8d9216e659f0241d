//! Exec providers: an operator's command asked for one key, the way git asks a credential
//! helper. The key and a newline go to its stdin; its stdout (one trailing newline dropped)
//! is the value. It runs as the configured account, in a clean environment, from `/`, in its
//! own process group — killed whole when it overruns its timeout or prints more than its cap.

use std::process::Stdio;
use std::time::Duration;

use keyport_keys::SecretBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use super::{Fetched, SourceError};
use crate::config::ExecSource;
use crate::osuser::OsUser;

/// One exec provider, its account looked up at start.
pub(super) struct ExecProvider {
    pub(super) name: String,
    settings: ExecSource,
    account: OsUser,
}

impl ExecProvider {
    /// The provider `name`: its account must exist, and only root may run it as another.
    pub(super) fn new(name: &str, settings: ExecSource) -> Result<Self, String> {
        let key = |k: &str| format!("sources.{name}.{k}");
        let me = crate::osuser::current().map_err(|e| format!("{}: {e}", key("run_as")))?;
        let account = match &settings.run_as {
            Some(account) => {
                crate::osuser::lookup(account).map_err(|e| format!("{}: {e}", key("run_as")))?
            }
            None if me.uid == 0 => {
                return Err(format!(
                    "{}: is required when keyport runs as root (an account for the command)",
                    key("run_as")
                ));
            }
            None => me.clone(),
        };
        if me.uid != 0 && account.uid != me.uid {
            return Err(format!(
                "{}: keyport does not run as root, so it runs commands as itself ({})",
                key("run_as"),
                me.name
            ));
        }
        let program = std::path::Path::new(&settings.command[0]);
        if !program.is_file() {
            return Err(format!(
                "{}: {} is not a file",
                key("command"),
                program.display()
            ));
        }
        Ok(Self {
            name: name.to_string(),
            settings,
            account,
        })
    }

    /// How long its values are used before it runs again.
    pub(super) fn cache_ttl(&self) -> Duration {
        self.settings.cache_ttl
    }

    /// Runs the command for `key` on behalf of `user`, within `budget` (and its own timeout).
    pub(super) async fn fetch(
        &self,
        user: &str,
        key: &str,
        budget: Duration,
    ) -> Result<Fetched, SourceError> {
        let timeout = budget.min(self.settings.timeout);
        // It could not answer now (a last value may stand in), or it gave what no session
        // can take.
        let unavailable = SourceError::Unavailable;
        let refused = SourceError::Refused;
        let mut command = tokio::process::Command::new(&self.settings.command[0]);
        command
            .args(&self.settings.command[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.account.home)
            .env("USER", &self.account.name)
            .env("LOGNAME", &self.account.name)
            .env("KEYPORT_USER", user)
            .env("KEYPORT_SOURCE", &self.name)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if crate::osuser::current().is_ok_and(|me| me.uid != self.account.uid) {
            // std clears the supplementary groups when root drops to `uid`.
            command.uid(self.account.uid).gid(self.account.gid);
        }
        let mut child = command
            .spawn()
            .map_err(|e| unavailable(format!("cannot start {}: {e}", self.settings.command[0])))?;
        let pid = child.id();
        let run = async {
            let pipe = || unavailable("its pipes were not set up".into());
            let mut stdin = child.stdin.take().ok_or_else(pipe)?;
            let mut stdout = child.stdout.take().ok_or_else(pipe)?;
            let mut stderr = child.stderr.take().ok_or_else(pipe)?;
            let line = format!("{key}\n");
            // A command that never reads its stdin still gets to answer.
            let feed = async move {
                let _ = stdin.write_all(line.as_bytes()).await;
                drop(stdin);
            };
            let cap = self.settings.max_bytes;
            let read = async {
                let mut out = Zeroizing::new(Vec::new());
                let mut limited = (&mut stdout).take(u64::try_from(cap).unwrap_or(u64::MAX) + 1);
                limited
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                Ok::<_, SourceError>(out)
            };
            // Read beside stdout; waited for only once stdout is done and within the cap.
            let errors = tokio::spawn(async move {
                let mut text = Vec::new();
                let _ = (&mut stderr).take(4096).read_to_end(&mut text).await;
                text
            });
            let ((), out) = tokio::join!(feed, read);
            let out = out?;
            if out.len() > cap {
                errors.abort();
                kill_group(pid);
                return Err(refused(format!(
                    "printed more than its {cap}-byte cap (max_bytes)"
                )));
            }
            let status = child.wait().await.map_err(|e| unavailable(e.to_string()))?;
            if !status.success() {
                let errors = errors.await.unwrap_or_default();
                return Err(unavailable(format!("{status}{}", last_line(&errors))));
            }
            errors.abort();
            Ok(out)
        };
        let mut out = match tokio::time::timeout(timeout, run).await {
            Ok(out) => out?,
            Err(_) => {
                // Not reaped yet, so its group id is still its own.
                kill_group(pid);
                return Err(unavailable(format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                )));
            }
        };
        if out.last() == Some(&b'\n') {
            out.pop();
            if out.last() == Some(&b'\r') {
                out.pop();
            }
        }
        if out.is_empty() {
            return Err(refused("printed nothing".into()));
        }
        Ok(Fetched {
            value: SecretBytes::new(out.to_vec()),
            lease: None,
        })
    }
}

/// Kills the process group a command leads (it, and whatever it started), before it is
/// reaped.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// `: LINE`, the last non-empty line of a command's stderr, at most 200 bytes of printable
/// text — it says why; the value is on stdout, which is never shown.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let line: String = line.chars().filter(|c| !c.is_control()).take(200).collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}
