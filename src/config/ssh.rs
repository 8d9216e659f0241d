//! `[ssh]`: the SSH server's flow control, sessions, and the limits that keep one client — or
//! one attacker — from holding the daemon: sshd's pre-authentication limits (`LoginGraceTime`,
//! `MaxStartups`, a per-source cap, `MaxAuthTries`), failed-login throttling, and per-connection
//! and per-user caps.

use serde::{Deserialize, Serialize};

/// SSH settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSettings {
    /// Receive window per channel, bytes: how far a client may send ahead of the program
    /// reading its input, and so the most input keyport holds for one channel.
    pub channel_window: u32,
    /// Largest data packet a client may send, bytes.
    pub max_packet: u32,
    /// Failed logins from one address for one user name before that address is turned away.
    pub login_failures: u32,
    /// Failed logins from one address, whatever the names, before it is turned away.
    pub login_failures_per_address: u32,
    /// The window failed logins are counted in, and how long a turned-away address stays
    /// so, seconds; also the interval failed logins from one address are audited in, as one
    /// row with a count.
    pub login_failure_window_secs: u64,
    /// The umask session programs start with (octal, like `login.defs`'s UMASK).
    pub umask: String,
    /// Seconds a connection has for banner, key exchange and authentication (`LoginGraceTime`).
    pub login_grace_secs: u64,
    /// `begin:rate:full` (`MaxStartups`): past `begin` unauthenticated connections, new ones
    /// are dropped with probability `rate`% rising to 100% at `full`.
    pub max_startups: String,
    /// Unauthenticated connections one source address may hold; a new one past it replaces
    /// that address's oldest.
    pub per_source_startups: u32,
    /// New connections one source address may start per second (beyond a burst of
    /// `per_source_startups`); more are dropped before any key exchange.
    pub per_source_rate: u32,
    /// Authentication attempts one connection may make (`MaxAuthTries`).
    pub max_auth_tries: u32,
    /// Session channels one connection may have open at once (`MaxSessions`).
    pub max_sessions: u32,
    /// Connections one user may have open at once.
    pub max_connections_per_user: u32,
    /// Bytes of accepted client `env` requests (names and values) one channel may make.
    pub client_env_bytes: u32,
    /// Signatures one session's agent makes per minute (a bucket that size, refilled evenly);
    /// more are refused and counted.
    pub agent_signatures_per_minute: u32,
    /// Threads SSH connections run on, each connection on one of them from start to end
    /// (`ssh/workers.rs`); 0: one per CPU.
    pub connection_threads: u32,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            channel_window: 8 * 1024 * 1024,
            max_packet: 65535,
            login_failures: 20,
            login_failures_per_address: 100,
            login_failure_window_secs: 60,
            umask: "022".into(),
            login_grace_secs: 60,
            max_startups: "10:30:64".into(),
            per_source_startups: 10,
            per_source_rate: 20,
            max_auth_tries: 6,
            max_sessions: 10,
            max_connections_per_user: 32,
            client_env_bytes: 64 * 1024,
            agent_signatures_per_minute: 600,
            connection_threads: 0,
        }
    }
}

/// `max_startups`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startups {
    /// Unauthenticated connections held before any is dropped.
    pub begin: u32,
    /// Drop probability at `begin`, percent.
    pub rate: u32,
    /// Unauthenticated connections at which every new one is dropped.
    pub full: u32,
}

impl Default for Startups {
    /// The design's `10:30:64` (what `max_startups` defaults to).
    fn default() -> Self {
        Self {
            begin: 10,
            rate: 30,
            full: 64,
        }
    }
}

impl SshSettings {
    /// The setting that is out of range, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1024..=65535).contains(&self.max_packet) {
            return Err(("ssh.max_packet", "must be 1024 to 65535 bytes".into()));
        }
        let least = 2 * self.max_packet;
        if !(least..=1 << 30).contains(&self.channel_window) {
            return Err((
                "ssh.channel_window",
                format!("must be {least} (twice ssh.max_packet) to 1073741824 bytes"),
            ));
        }
        if self.login_failures == 0 {
            return Err(("ssh.login_failures", "must be at least 1".into()));
        }
        if self.login_failures_per_address < self.login_failures {
            return Err((
                "ssh.login_failures_per_address",
                "must be at least ssh.login_failures".into(),
            ));
        }
        if !(1..=86_400).contains(&self.login_failure_window_secs) {
            return Err((
                "ssh.login_failure_window_secs",
                "must be 1 to 86400 seconds".into(),
            ));
        }
        if self.umask_bits().is_none() {
            return Err(("ssh.umask", "must be an octal mode from 000 to 777".into()));
        }
        if !(1..=3600).contains(&self.login_grace_secs) {
            return Err(("ssh.login_grace_secs", "must be 1 to 3600 seconds".into()));
        }
        self.startups().map_err(|rule| ("ssh.max_startups", rule))?;
        let ranges: [(&'static str, u32, u32, u32); 8] = [
            (
                "ssh.agent_signatures_per_minute",
                self.agent_signatures_per_minute,
                1,
                1_000_000,
            ),
            (
                "ssh.per_source_startups",
                self.per_source_startups,
                1,
                10_000,
            ),
            ("ssh.per_source_rate", self.per_source_rate, 1, 100_000),
            ("ssh.max_auth_tries", self.max_auth_tries, 1, 100),
            ("ssh.max_sessions", self.max_sessions, 1, 10_000),
            (
                "ssh.max_connections_per_user",
                self.max_connections_per_user,
                1,
                100_000,
            ),
            ("ssh.client_env_bytes", self.client_env_bytes, 0, 1 << 24),
            ("ssh.connection_threads", self.connection_threads, 0, 1024),
        ];
        for (field, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err((field, format!("must be {low} to {high}")));
            }
        }
        Ok(())
    }

    /// The umask as a number, if it is a valid octal mode.
    pub fn umask_bits(&self) -> Option<u32> {
        let digits = self.umask.trim();
        let valid =
            (1..=4).contains(&digits.len()) && digits.bytes().all(|b| matches!(b, b'0'..=b'7'));
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|m| valid && *m <= 0o777)
    }

    /// `max_startups`, parsed and checked.
    pub fn startups(&self) -> Result<Startups, String> {
        let rule = || "must be begin:rate:full, 1 <= begin <= full <= 100000, rate 1 to 100".into();
        let parts: Vec<u32> = self
            .max_startups
            .split(':')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| rule())?;
        let [begin, rate, full] = parts[..] else {
            return Err(rule());
        };
        let ok = begin >= 1 && begin <= full && full <= 100_000 && (1..=100).contains(&rate);
        ok.then_some(Startups { begin, rate, full })
            .ok_or_else(rule)
    }
}
