//! Daemon-wide counters that more than one listener updates, exported by the API's `/metrics`.

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
}

impl DaemonMetrics {
    /// Prometheus text for these counters.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
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
             keyport_ssh_injections_total {}\n",
            self.sessions_active.load(Ordering::Relaxed),
            load(&self.sessions_total),
            load(&self.auth_failures),
            load(&self.injections),
        )
    }
}
