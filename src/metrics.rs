//! Daemon-wide counters that more than one listener updates, exported by the API's `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// SSH session counters.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    /// Sessions running now.
    pub sessions_active: AtomicI64,
    /// Sessions started since the daemon started.
    pub sessions_total: AtomicU64,
    /// Connections that ended without authenticating after offering keys.
    pub auth_failures: AtomicU64,
    /// Sessions that received at least one secret.
    pub injections: AtomicU64,
    /// Agent signatures refused because a session asked for them too fast.
    pub signatures_refused: AtomicU64,
    /// Agent signatures by key type (a fixed set of labels: `agent::key_type`).
    signatures: Mutex<BTreeMap<&'static str, u64>>,
    /// Relayed sessions started.
    pub relay_sessions: AtomicU64,
    /// Relayed sessions that failed before their program started, by kind (a fixed set of
    /// labels: `relay::RelayError::kind`).
    relay_failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl DaemonMetrics {
    /// Counts one agent signature made with a `key_type` key.
    pub fn count_signature(&self, key_type: &'static str) {
        let mut map = self
            .signatures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(key_type).or_default() += 1;
    }

    /// Counts one relayed session that failed with `kind`.
    pub fn count_relay_failure(&self, kind: &'static str) {
        let mut map = self
            .relay_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(kind).or_default() += 1;
    }

    /// Prometheus text for these counters.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut signatures = String::from(
            "# HELP keyport_agent_signatures_total Signatures made by session agents, by key type.\n\
             # TYPE keyport_agent_signatures_total counter\n",
        );
        let map = self
            .signatures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, n) in map.iter() {
            signatures.push_str(&format!(
                "keyport_agent_signatures_total{{key_type=\"{kind}\"}} {n}\n"
            ));
        }
        let counters = format!(
            "# HELP keyport_ssh_sessions_active SSH sessions running now.\n\
             # TYPE keyport_ssh_sessions_active gauge\n\
             keyport_ssh_sessions_active {}\n\
             # HELP keyport_ssh_sessions_total SSH sessions started.\n\
             # TYPE keyport_ssh_sessions_total counter\n\
             keyport_ssh_sessions_total {}\n\
             # HELP keyport_ssh_auth_failures_total SSH connections that failed to authenticate.\n\
             # TYPE keyport_ssh_auth_failures_total counter\n\
             keyport_ssh_auth_failures_total {}\n\
             # HELP keyport_ssh_injections_total SSH sessions that received secrets.\n\
             # TYPE keyport_ssh_injections_total counter\n\
             keyport_ssh_injections_total {}\n\
             # HELP keyport_agent_signatures_refused_total Signatures refused: the session's rate was exceeded.\n\
             # TYPE keyport_agent_signatures_refused_total counter\n\
             keyport_agent_signatures_refused_total {}\n",
            self.sessions_active.load(Ordering::Relaxed),
            load(&self.sessions_total),
            load(&self.auth_failures),
            load(&self.injections),
            load(&self.signatures_refused),
        );
        let mut relay = format!(
            "# HELP keyport_relay_sessions_total Relayed sessions started on a workspace.\n\
             # TYPE keyport_relay_sessions_total counter\n\
             keyport_relay_sessions_total {}\n\
             # HELP keyport_relay_failures_total Relayed sessions that failed before their program, by kind.\n\
             # TYPE keyport_relay_failures_total counter\n",
            load(&self.relay_sessions)
        );
        let map = self
            .relay_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (kind, n) in map.iter() {
            relay.push_str(&format!(
                "keyport_relay_failures_total{{kind=\"{kind}\"}} {n}\n"
            ));
        }
        counters + &signatures + &relay
    }
}
