//! `[relay]`: the upstream leg of relay mode — how long keyport waits for a workspace's sshd,
//! how it keeps the connection alive, and how it stops retrying an upstream that keeps
//! failing (OpenSSH ≥ 9.8's `PerSourcePenalties` would otherwise block every user behind
//! keyport's one address).

use serde::{Deserialize, Serialize};

/// Relay settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Seconds to connect, exchange keys and log in upstream before giving up.
    pub connect_timeout_secs: u64,
    /// Seconds between keepalives on an idle upstream connection (0: none).
    pub keepalive_secs: u64,
    /// Failed upstream attempts in a row, for one (user, workspace), before keyport stops
    /// trying for `failure_hold_secs`.
    pub failures_before_hold: u32,
    /// Seconds a (user, workspace) whose upstream keeps failing is answered with the last
    /// failure, without connecting.
    pub failure_hold_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 5,
            keepalive_secs: 30,
            failures_before_hold: 2,
            failure_hold_secs: 30,
        }
    }
}

impl RelaySettings {
    /// The setting that is out of range, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=300).contains(&self.connect_timeout_secs) {
            return Err((
                "relay.connect_timeout_secs",
                "must be 1 to 300 seconds".into(),
            ));
        }
        if self.keepalive_secs > 3600 {
            return Err((
                "relay.keepalive_secs",
                "must be 0 (none) to 3600 seconds".into(),
            ));
        }
        if !(1..=1000).contains(&self.failures_before_hold) {
            return Err(("relay.failures_before_hold", "must be 1 to 1000".into()));
        }
        if self.failure_hold_secs > 86_400 {
            return Err((
                "relay.failure_hold_secs",
                "must be 0 to 86400 seconds".into(),
            ));
        }
        Ok(())
    }
}
