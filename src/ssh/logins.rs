//! Logins, failed and live. Failed ones are counted per address and user name and per address
//! whatever the names (so trying a new name each time does not get around the limit), and
//! audited as one row per address per window with a count, so a flood of wrong keys cannot
//! flood the audit log. Live ones are registered with their login key and connection, for the
//! per-user connection cap, for revocation (`revoke.rs`) and for live file secrets (`live.rs`).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use russh::keys::PublicKey;
use russh::server::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::SshSettings;

/// Names listed in one audit row of failed logins, at most.
const NAMES_PER_ROW: usize = 10;
/// Addresses (and address-name pairs) tracked at once: past it, stale ones are forgotten and,
/// if that is not enough, new names are counted for their address only.
const TRACKED: usize = 10_000;
/// Bytes of a tried user name kept (names are the attacker's to choose).
const NAME_BYTES: usize = 64;

/// Failed logins, counted and coalesced for the audit log.
pub struct FailedLogins {
    per_name: u32,
    per_address: u32,
    window: Duration,
    state: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    by_name: HashMap<(IpAddr, String), Count>,
    by_address: HashMap<IpAddr, Tally>,
}

#[derive(Clone, Copy)]
struct Count {
    n: u32,
    since: Instant,
}

struct Tally {
    count: Count,
    /// Failures not yet in an audit row, and some of the names they tried.
    unaudited: u32,
    names: BTreeSet<String>,
}

/// One audit row's worth of failed logins from one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    /// The address.
    pub source: IpAddr,
    /// Failed connections since the last row.
    pub failures: u32,
    /// Some of the user names they tried.
    pub users: Vec<String>,
}

impl Count {
    fn live(&self, window: Duration) -> bool {
        self.since.elapsed() < window
    }
}

/// At most [`NAME_BYTES`] of `name`, cut at a character boundary.
fn truncated(name: &str) -> String {
    let mut end = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

impl FailedLogins {
    /// Counters with `[ssh]`'s limits.
    pub fn new(settings: &SshSettings) -> Self {
        Self {
            per_name: settings.login_failures,
            per_address: settings.login_failures_per_address,
            window: Duration::from_secs(settings.login_failure_window_secs),
            state: Mutex::new(Failures::default()),
        }
    }

    /// The counting window, which is also the audit interval.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether `ip` failed too often lately, whatever name it tries: turned away at once.
    pub fn address_blocked(&self, ip: IpAddr) -> bool {
        let state = self.lock();
        state
            .by_address
            .get(&ip)
            .is_some_and(|t| t.count.n >= self.per_address && t.count.live(self.window))
    }

    /// Whether `ip` failed too often lately, logging in as `user`.
    pub fn blocked(&self, ip: IpAddr, user: &str) -> bool {
        if self.address_blocked(ip) {
            return true;
        }
        let state = self.lock();
        state
            .by_name
            .get(&(ip, truncated(user)))
            .is_some_and(|c| c.n >= self.per_name && c.live(self.window))
    }

    /// Counts a failed connection from `ip` for `user`. Returns the audit row to write now:
    /// the first failure from an address in a window is audited at once, the rest at the next
    /// [`FailedLogins::flush`].
    pub fn record(&self, ip: IpAddr, user: &str) -> Option<FailureRow> {
        let window = self.window;
        let mut state = self.lock();
        if state.by_name.len() > TRACKED {
            state.by_name.retain(|_, c| c.live(window));
        }
        if state.by_address.len() > TRACKED {
            state
                .by_address
                .retain(|_, t| t.count.live(window) || t.unaudited > 0);
        }
        let fresh = Count {
            n: 0,
            since: Instant::now(),
        };
        let user = truncated(user);
        let key = (ip, user.clone());
        if state.by_name.len() <= TRACKED || state.by_name.contains_key(&key) {
            let count = state.by_name.entry(key).or_insert(fresh);
            if !count.live(window) {
                *count = fresh;
            }
            count.n += 1;
        }
        if state.by_address.len() > TRACKED && !state.by_address.contains_key(&ip) {
            // Too many addresses at once: this failure is counted in the metrics only.
            return None;
        }
        let tally = state.by_address.entry(ip).or_insert(Tally {
            count: fresh,
            unaudited: 0,
            names: BTreeSet::new(),
        });
        let first = !tally.count.live(window) || tally.count.n == 0;
        if !tally.count.live(window) {
            tally.count = fresh;
        }
        tally.count.n += 1;
        if first && tally.unaudited == 0 {
            return Some(FailureRow {
                source: ip,
                failures: 1,
                users: vec![user],
            });
        }
        tally.unaudited += 1;
        if tally.names.len() < NAMES_PER_ROW {
            tally.names.insert(user);
        }
        None
    }

    /// The failures not audited yet, one row per address; they count as audited from now.
    pub fn flush(&self) -> Vec<FailureRow> {
        let mut state = self.lock();
        let mut rows = Vec::new();
        for (ip, tally) in &mut state.by_address {
            if tally.unaudited > 0 {
                rows.push(FailureRow {
                    source: *ip,
                    failures: tally.unaudited,
                    users: std::mem::take(&mut tally.names).into_iter().collect(),
                });
                tally.unaudited = 0;
            }
        }
        rows
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A logged-in connection.
#[derive(Clone)]
pub struct Live {
    /// keyport user.
    pub user: String,
    /// Their row id (a later user of the same name is someone else).
    pub user_id: i64,
    /// The login key it authenticated with.
    pub key: PublicKey,
    /// Logged in as `user:workspace`: its sessions run on the workspace, not here.
    pub relayed: bool,
    /// The connection, to tell it why it ends (set once the login completed).
    pub handle: Option<Handle>,
    /// Cuts the connection's stream: the end for a client that does not read.
    pub cut: CancellationToken,
}

/// Every logged-in connection, by connection id, and a count of registrations (so a login
/// registered after a revocation was looked at is looked at again).
#[derive(Default)]
pub struct LiveLogins {
    map: Mutex<HashMap<u64, Live>>,
    generation: AtomicU64,
}

impl LiveLogins {
    /// Registers connection `id` if its user has fewer than `max` connections — counted and
    /// registered under one lock, so parallel logins cannot overshoot.
    pub fn reserve(&self, id: u64, live: Live, max: usize) -> bool {
        let mut map = self.lock();
        if map.values().filter(|l| l.user_id == live.user_id).count() >= max {
            return false;
        }
        map.insert(id, live);
        self.generation.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The connection's handle, once its login completed.
    pub fn set_handle(&self, id: u64, handle: Handle) {
        if let Some(live) = self.lock().get_mut(&id) {
            live.handle = Some(handle);
        }
    }

    /// Forgets connection `id`.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Changes with every registration.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// All of them, as they are now.
    pub fn snapshot(&self) -> Vec<(u64, Live)> {
        self.lock().iter().map(|(id, l)| (*id, l.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_from_one_address_are_counted_together_and_coalesced() {
        let settings = SshSettings {
            login_failures: 3,
            login_failures_per_address: 10,
            ..SshSettings::default()
        };
        let failed = FailedLogins::new(&settings);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let mut rows = Vec::new();
        for n in 0..25 {
            rows.extend(failed.record(ip, &format!("user{n}")));
        }
        assert_eq!(rows.len(), 1, "one row at once");
        assert!(failed.address_blocked(ip), "blocked across names");
        assert!(failed.blocked(ip, "anyone"));
        assert!(!failed.blocked([192, 0, 2, 2].into(), "user1"));
        let later = failed.flush();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].failures, 24);
        assert_eq!(later[0].users.len(), NAMES_PER_ROW);
        assert!(failed.flush().is_empty(), "audited once");
    }

    #[test]
    fn one_name_is_limited_before_the_address() {
        let settings = SshSettings {
            login_failures: 3,
            login_failures_per_address: 100,
            ..SshSettings::default()
        };
        let failed = FailedLogins::new(&settings);
        let ip: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..3 {
            failed.record(ip, "alice");
        }
        assert!(failed.blocked(ip, "alice"));
        assert!(!failed.blocked(ip, "bob"));
        assert!(!failed.address_blocked(ip));
    }
}
