//! `[http]`: the API listener's limits, so half-sent or idle requests cannot hold the daemon's
//! descriptors (and with them SSH logins, which share the process's fd table).

use serde::{Deserialize, Serialize};

/// HTTP listener settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Seconds a client has to send a request's headers, from its connection or the end of
    /// its previous request (so also how long a kept-alive connection may wait idle).
    pub header_timeout_secs: u64,
    /// Seconds a connection may move no byte either way (a client that stopped reading its
    /// response) before it is closed.
    pub idle_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: u32,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 256,
        }
    }
}

impl HttpSettings {
    /// The setting that is out of range, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=3600).contains(&self.header_timeout_secs) {
            return Err((
                "http.header_timeout_secs",
                "must be 1 to 3600 seconds".into(),
            ));
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err((
                "http.idle_timeout_secs",
                "must be 1 to 86400 seconds".into(),
            ));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(("http.max_connections", "must be 1 to 100000".into()));
        }
        Ok(())
    }
}
