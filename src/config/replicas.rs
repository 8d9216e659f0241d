//! `[replicas]`: how replicas of one PostgreSQL database tell each other they are alive. Each
//! writes its heartbeat (its node id, host, version and master-key ids) every `heartbeat_secs`;
//! one not heard from for `alive_secs` is gone, and a master-key rotation waits only for the
//! live ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[replicas]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaSettings {
    /// Seconds between a replica's heartbeats (1 to 60).
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a replica is gone (at least twice
    /// `heartbeat_secs`, at most 3600).
    pub alive_secs: u64,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            heartbeat_secs: 10,
            alive_secs: 30,
        }
    }
}

impl ReplicaSettings {
    /// The settings checked: the key broken and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=60).contains(&self.heartbeat_secs) {
            return Err(("replicas.heartbeat_secs", "must be 1 to 60".into()));
        }
        if self.alive_secs < 2 * self.heartbeat_secs || self.alive_secs > 3600 {
            return Err((
                "replicas.alive_secs",
                "must be at least twice replicas.heartbeat_secs, and at most 3600".into(),
            ));
        }
        Ok(())
    }

    /// Between heartbeats.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// Silence after which a replica is gone.
    pub fn alive(&self) -> Duration {
        Duration::from_secs(self.alive_secs)
    }
}
