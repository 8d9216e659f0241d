//! `[forwarding]`: whether sessions may forward ports, and where to. Off by default, like a
//! hardened sshd; each direction is turned on with its own allow-list, read like sshd's
//! `PermitOpen` (`ssh -L`) and `PermitListen` (`ssh -R`, with `GatewayPorts no`).

use serde::{Deserialize, Serialize};

/// Port-forwarding policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarding {
    /// `ssh -L` (direct-tcpip channels).
    pub local: bool,
    /// Where `ssh -L` may connect: `host:port`, `host:*`, `*:port`, or `any`.
    pub local_allow: Vec<String>,
    /// `ssh -R` (tcpip-forward requests), always on keyport's loopback address.
    pub remote: bool,
    /// Ports `ssh -R` may listen on: `8080`, `8000-8099`, or `any`.
    pub remote_allow: Vec<String>,
    /// Most `ssh -R` listeners one connection may hold.
    pub max_remote_listeners: usize,
}

impl Default for Forwarding {
    fn default() -> Self {
        Self {
            local: false,
            local_allow: Vec::new(),
            remote: false,
            remote_allow: Vec::new(),
            max_remote_listeners: 16,
        }
    }
}

/// One `local_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTarget {
    /// Host name or address as the client writes it; `None` for any host.
    host: Option<String>,
    /// `None` for any port.
    port: Option<u16>,
}

/// One `remote_allow` entry: a port range (a single port is a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemotePorts {
    first: u16,
    last: u16,
}

impl Forwarding {
    /// The setting that is wrong, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.local_targets()
            .map_err(|rule| ("forwarding.local_allow", rule))?;
        self.remote_ports()
            .map_err(|rule| ("forwarding.remote_allow", rule))?;
        if self.local && self.local_allow.is_empty() {
            return Err((
                "forwarding.local_allow",
                "must name at least one target (\"host:port\", or \"any\") when forwarding.local is on"
                    .into(),
            ));
        }
        if !(1..=1024).contains(&self.max_remote_listeners) {
            return Err((
                "forwarding.max_remote_listeners",
                "must be 1 to 1024".into(),
            ));
        }
        if self.remote && self.remote_allow.is_empty() {
            return Err((
                "forwarding.remote_allow",
                "must name at least one port (\"8080\", \"8000-8099\", or \"any\") when forwarding.remote is on"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `local_allow`, parsed.
    pub fn local_targets(&self) -> Result<Vec<LocalTarget>, String> {
        self.local_allow
            .iter()
            .map(|e| LocalTarget::parse(e))
            .collect()
    }

    /// `remote_allow`, parsed.
    pub fn remote_ports(&self) -> Result<Vec<RemotePorts>, String> {
        self.remote_allow
            .iter()
            .map(|e| RemotePorts::parse(e))
            .collect()
    }
}

fn port(text: &str, entry: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{entry:?}: a port must be 1 to 65535"))
}

impl LocalTarget {
    fn parse(entry: &str) -> Result<Self, String> {
        if entry == "any" {
            return Ok(Self {
                host: None,
                port: None,
            });
        }
        let (host, p) = entry
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && !p.is_empty())
            .ok_or_else(|| {
                format!("{entry:?}: must be \"host:port\", \"host:*\", \"*:port\" or \"any\"")
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            host: (host != "*").then(|| host.to_ascii_lowercase()),
            port: if p == "*" {
                None
            } else {
                Some(port(p, entry)?)
            },
        })
    }

    /// Whether this entry allows connecting to `host`:`port` (host names compare without
    /// case, as written by the client: no name resolution decides what is allowed).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.host
            .as_ref()
            .is_none_or(|h| h.eq_ignore_ascii_case(host))
            && self.port.is_none_or(|p| p == port)
    }
}

impl RemotePorts {
    fn parse(entry: &str) -> Result<Self, String> {
        if entry == "any" || entry == "*" {
            return Ok(Self {
                first: 1,
                last: u16::MAX,
            });
        }
        let (first, last) = match entry.split_once('-') {
            Some((a, b)) => (port(a, entry)?, port(b, entry)?),
            None => {
                let p = port(entry, entry)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("{entry:?}: a range must run from low to high"));
        }
        Ok(Self { first, last })
    }

    /// Whether `port` is in the range.
    pub fn allows(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Whether the range is every port (`any`).
    pub fn allows_all(&self) -> bool {
        self.first == 1 && self.last == u16::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_targets_match_like_permitopen() {
        let f = Forwarding {
            local_allow: vec![
                "db.internal:5432".into(),
                "localhost:*".into(),
                "*:443".into(),
            ],
            ..Forwarding::default()
        };
        let targets = f.local_targets().unwrap();
        let allowed = |h: &str, p| targets.iter().any(|t| t.allows(h, p));
        assert!(allowed("DB.internal", 5432));
        assert!(!allowed("db.internal", 5433));
        assert!(allowed("localhost", 22));
        assert!(allowed("example.com", 443));
        assert!(!allowed("127.0.0.1", 22), "names are not resolved");
        for bad in ["db", ":80", "db:", "db:0", "db:70000", "db:x"] {
            let f = Forwarding {
                local_allow: vec![bad.into()],
                ..Forwarding::default()
            };
            assert!(f.check().is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_ports_are_ports_or_ranges() {
        let f = Forwarding {
            remote: true,
            remote_allow: vec!["8080".into(), "9000-9010".into()],
            ..Forwarding::default()
        };
        assert_eq!(f.check(), Ok(()));
        let ports = f.remote_ports().unwrap();
        let allowed = |p| ports.iter().any(|r| r.allows(p));
        assert!(allowed(8080) && allowed(9005) && !allowed(9011) && !allowed(22));
        for bad in ["0", "9010-9000", "x", "1-"] {
            let f = Forwarding {
                remote_allow: vec![bad.into()],
                ..Forwarding::default()
            };
            assert!(f.check().is_err(), "{bad}");
        }
    }
}
