//! Relay mode: `ssh alice:dev1@gateway` reaches workspace `dev1`'s own sshd through keyport,
//! with alice's env and file secrets and her in-memory key carried upstream.
//!
//! What a session gets (env precedence, secrets, the file ledger, audit) is decided by the
//! same code as a local session's (`ssh::prepare`, `vault`); this module is only *where* it
//! runs: an upstream channel instead of a local process.
//!
//! # Layout
//! - `mod.rs`: upstream failures, their messages and their hold.
//! - `link.rs`: a client connection's link to its workspace; each channel's upstream open.
//! - `upstream.rs`: the russh client leg: host key pins, login signed in the vault, agent.
//! - `certlogin.rs`: the upstream login with a per-connection certificate (`--auth ca`).
//! - `session.rs`: one relayed session channel: what it gets, then both pumps.
//! - `requests.rs`: its env, pty, agent and program requests upstream, replies counted.
//! - `files.rs`: file secrets written upstream over SFTP, with the local ledger's rules.
//! - `scan.rs`: reading a workspace's host key once, for an admin to pin.

mod certlogin;
mod files;
mod link;
mod requests;
pub mod scan;
mod session;
mod upstream;

pub use link::{Link, Opened, open};
pub use session::{Start, run};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{CaSettings, RelaySettings};

/// Why a relayed session could not reach its workspace; `Display` is the line the client's
/// stderr gets (after `keyport: `).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// No workspace of that name that the user may use (the two look the same).
    #[error("no workspace {workspace} for {user} (keyport workspace list shows yours)")]
    NoWorkspace {
        /// What the user typed after `:`.
        workspace: String,
        /// The keyport user.
        user: String,
    },
    /// The sshd could not be reached, or did not finish the handshake in time.
    #[error("cannot reach the workspace's sshd at {address}: {why}")]
    Unreachable {
        /// HOST:PORT.
        address: String,
        /// The cause.
        why: String,
    },
    /// The sshd presented a host key that is not pinned.
    #[error(
        "HOST KEY MISMATCH: the workspace's sshd presented {offered}, pinned is {}; nothing \
         was run. If {workspace} was rebuilt, an admin checks the new key and pins it: \
         keyport workspace pin {workspace} --scan",
        pinned.join(", ")
    )]
    HostKey {
        /// The workspace.
        workspace: String,
        /// Fingerprints pinned.
        pinned: Vec<String>,
        /// Fingerprint offered.
        offered: String,
    },
    /// The sshd refused the user's keyport key.
    #[error(
        "{login}@{address} refused your keyport key; add this line to ~{login}/.ssh/authorized_keys \
         there:\n{key_line}"
    )]
    Refused {
        /// The workspace login.
        login: String,
        /// HOST:PORT.
        address: String,
        /// The public key line to add.
        key_line: String,
    },
    /// The sshd refused every certificate keyport's user CAs signed.
    #[error(
        "{login}@{address} refused keyport's certificate (principal {login}, signed by {}): \
         workspace {workspace}'s sshd must trust keyport's user CA for {login} with \
         TrustedUserCAKeys (keyport ca show prints the lines; keyport workspace set \
         {workspace} --auth ca the sshd snippet), allow {algorithm} in \
         PubkeyAcceptedAlgorithms, and keep its clock within {skew_secs}s of keyport's; \
         its log names the reason for key id {key_id}",
        tried.join(", then ")
    )]
    CertRefused {
        /// The workspace.
        workspace: String,
        /// The workspace login (the certificate's principal).
        login: String,
        /// HOST:PORT.
        address: String,
        /// The CAs tried, as `ca2 (SHA256:…)`.
        tried: Vec<String>,
        /// The certificate type's algorithm name.
        algorithm: String,
        /// `[ca] validity_skew_secs`.
        skew_secs: u64,
        /// The last certificate's key id (what the sshd logs).
        key_id: String,
    },
    /// A required secret is missing and the operator blocks sessions without it.
    #[error("{reason}")]
    Blocked {
        /// What is missing and how to create it.
        reason: String,
        /// The `session.blocked` audit detail.
        detail: serde_json::Value,
    },
    /// Anything else on the way (a channel the sshd refused, a vault failure).
    #[error("{0}")]
    Other(String),
    /// Failed too often lately: not tried again yet.
    #[error("{last} (not tried again for {}s: it failed {count} times in a row)", wait.as_secs().max(1))]
    Held {
        /// The last failure's message.
        last: String,
        /// Failures in a row.
        count: u32,
        /// Until the next attempt.
        wait: Duration,
    },
}

impl RelayError {
    /// The kind the audit log and the metrics name.
    pub fn kind(&self) -> &'static str {
        match self {
            RelayError::NoWorkspace { .. } => "no-workspace",
            RelayError::Unreachable { .. } => "unreachable",
            RelayError::HostKey { .. } => "host-key",
            RelayError::Refused { .. } | RelayError::CertRefused { .. } => "auth",
            RelayError::Other(_) => "other",
            RelayError::Blocked { .. } => "blocked",
            RelayError::Held { .. } => "held",
        }
    }
}

/// Upstream failures in a row per (user id, workspace id), so a failing upstream is not
/// hammered: OpenSSH ≥ 9.8 penalises keyport's one source address for every failed or
/// unauthenticated connection, which would lock every user out of that sshd.
#[derive(Debug, Default)]
pub struct Holds(Mutex<HashMap<(i64, i64), Failing>>);

#[derive(Debug)]
struct Failing {
    count: u32,
    last: String,
    at: Instant,
    /// The host keys pinned then: a re-pin (after a rebuild) is tried at once.
    pins: Vec<String>,
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, i64), Failing>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The failure to answer with instead of connecting, while `key` is held and its
    /// workspace still has the host keys `pins`.
    fn held(
        &self,
        key: (i64, i64),
        pins: &[String],
        settings: &RelaySettings,
    ) -> Option<RelayError> {
        let hold = Duration::from_secs(settings.failure_hold_secs);
        let map = self.lock();
        let failing = map.get(&key).filter(|f| f.pins == pins)?;
        let since = failing.at.elapsed();
        (failing.count >= settings.failures_before_hold && since < hold).then(|| RelayError::Held {
            last: failing.last.clone(),
            count: failing.count,
            wait: hold - since,
        })
    }

    fn failed(&self, key: (i64, i64), pins: &[String], error: &RelayError) {
        let mut map = self.lock();
        // Old entries go when any failure is recorded: the map stays as small as what fails.
        map.retain(|_, f| f.at.elapsed() < Duration::from_secs(86_400));
        let failing = map.entry(key).or_insert(Failing {
            count: 0,
            last: String::new(),
            at: Instant::now(),
            pins: pins.to_vec(),
        });
        if failing.pins != pins {
            (failing.count, failing.pins) = (0, pins.to_vec());
        }
        failing.count += 1;
        failing.last = error.to_string();
        failing.at = Instant::now();
    }

    fn succeeded(&self, key: (i64, i64)) {
        self.lock().remove(&key);
    }
}

/// Relay mode's share of the daemon: its settings and the failures it holds.
#[derive(Debug, Default)]
pub struct Relay {
    /// `[relay]`.
    pub settings: RelaySettings,
    /// `[ca]`: the certificates signed for `--auth ca` workspaces.
    pub ca: CaSettings,
    /// Upstreams failing lately.
    holds: Holds,
}

impl Relay {
    /// Relay mode with `settings`, signing certificates with `ca`.
    pub fn new(settings: RelaySettings, ca: CaSettings) -> Self {
        Self {
            settings,
            ca,
            holds: Holds::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(before: u32, hold: u64) -> RelaySettings {
        RelaySettings {
            failures_before_hold: before,
            failure_hold_secs: hold,
            ..RelaySettings::default()
        }
    }

    #[test]
    fn an_upstream_is_held_only_after_failures_in_a_row_and_a_success_clears_it() {
        let holds = Holds::default();
        let s = settings(2, 30);
        let e = RelayError::Other("boom".into());
        let pins = vec!["ssh-ed25519 AAAA".to_string()];
        holds.failed((1, 7), &pins, &e);
        assert!(
            holds.held((1, 7), &pins, &s).is_none(),
            "one failure is retried"
        );
        holds.failed((1, 7), &pins, &e);
        let held = holds.held((1, 7), &pins, &s).expect("held after two");
        assert_eq!(held.kind(), "held");
        assert!(
            held.to_string().starts_with("boom (not tried again for "),
            "{held}"
        );
        // Per (user, workspace): another user of the same workspace is not held.
        assert!(holds.held((2, 7), &pins, &s).is_none());
        // Re-pinned: tried at once.
        assert!(
            holds
                .held((1, 7), &["ssh-ed25519 BBBB".into()], &s)
                .is_none()
        );
        holds.succeeded((1, 7));
        assert!(holds.held((1, 7), &pins, &s).is_none());
    }

    #[test]
    fn a_hold_of_zero_seconds_never_holds() {
        let holds = Holds::default();
        let e = RelayError::Other("boom".into());
        for _ in 0..5 {
            holds.failed((1, 1), &[], &e);
        }
        assert!(holds.held((1, 1), &[], &settings(1, 0)).is_none());
    }

    #[test]
    fn messages_say_what_to_do() {
        let refused = RelayError::Refused {
            login: "dev".into(),
            address: "10.0.0.5:22".into(),
            key_line: "ssh-ed25519 AAAA keyport:alice".into(),
        };
        let text = refused.to_string();
        assert!(text.contains("~dev/.ssh/authorized_keys"), "{text}");
        assert!(text.ends_with("\nssh-ed25519 AAAA keyport:alice"), "{text}");
        let changed = RelayError::HostKey {
            workspace: "dev1".into(),
            pinned: vec!["SHA256:old".into()],
            offered: "SHA256:new".into(),
        };
        let text = changed.to_string();
        assert!(
            text.contains("SHA256:old") && text.contains("SHA256:new"),
            "{text}"
        );
        // Unknown and not granted are one message.
        let none = RelayError::NoWorkspace {
            workspace: "dev1".into(),
            user: "bob".into(),
        };
        assert_eq!(none.kind(), "no-workspace");
        assert!(!none.to_string().contains("grant"));
    }
}
