//! The leases behind leased values: held by the sessions that got them ([`Hold`]: dropping it
//! lets go), renewed at two thirds of their time while held, and when the last holder lets go
//! revoked (`lease_end = "revoke"`, and forgotten by the cache) or left to run out. The
//! renewals and ends run as tasks of their own, so one slow Vault call holds up no other; at
//! shutdown every lease still alive is revoked, within a bound.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{LeaseInfo, Sources, UserKey};
use crate::config::LeaseEnd;

/// How often held leases are looked at for renewal, and old values dropped.
const TICK: Duration = Duration::from_secs(1);

/// How long shutdown waits for its revocations.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// Leases taken, one hold each; dropping it lets them go.
#[derive(Debug, Default)]
pub struct Hold {
    leases: Vec<Arc<Lease>>,
}

impl Hold {
    /// The leases of `other` too (no hold is let go on the way).
    pub(super) fn absorb(&mut self, mut other: Hold) {
        self.leases.append(&mut other.leases);
    }

    /// The first lease.
    pub(super) fn first(&self) -> Option<Arc<Lease>> {
        self.leases.first().cloned()
    }

    /// The first lease's time left.
    pub(super) fn time_left(&self) -> Option<Duration> {
        self.leases.first().map(|l| l.time_left())
    }

    /// How many leases it holds.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        for lease in self.leases.drain(..) {
            lease.release();
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("user", &self.user)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// A lease behind a cached value.
pub(crate) struct Lease {
    pub(super) info: LeaseInfo,
    /// Whose cache entry it backs: (user id, reference).
    pub(super) key: UserKey,
    /// The user's name (their Vault login, the audit).
    user: String,
    /// The secret it was made for (audit).
    secret: String,
    times: Mutex<Times>,
    ended_tx: mpsc::UnboundedSender<Arc<Lease>>,
    me: Weak<Lease>,
}

pub(super) struct Times {
    /// The duration last granted, and when.
    granted: Duration,
    renewed: Instant,
    pub(super) holders: usize,
    /// Revoked (or being revoked): never handed out again.
    pub(super) ended: bool,
    /// Its end was dealt with once: a lease left to run out is not news again.
    pub(super) let_go: bool,
    /// A renewal is under way.
    renewing: bool,
}

impl Times {
    fn left(&self, now: Instant) -> Duration {
        (self.renewed + self.granted).saturating_duration_since(now)
    }
}

impl Lease {
    pub(super) fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Its time left.
    pub fn time_left(&self) -> Duration {
        self.times().left(Instant::now())
    }

    /// A hold on it, if it is still to be handed out: `fresh` wants more than a third of its
    /// time left, else any time at all.
    pub(super) fn hold(self: &Arc<Self>, fresh: bool) -> Option<Hold> {
        let mut t = self.times();
        let left = t.left(Instant::now());
        let ok = !t.ended && !left.is_zero() && (!fresh || left > t.granted / 3);
        if !ok {
            return None;
        }
        t.holders += 1;
        Some(Hold {
            leases: vec![self.clone()],
        })
    }

    /// Whether nothing holds it, so it may be ended now.
    pub(super) fn unheld(&self) -> bool {
        self.times().holders == 0
    }

    /// Sends it to be ended (revoked, or left to run out).
    pub(super) fn end_soon(&self) {
        if let Some(me) = self.me.upgrade() {
            let _ = self.ended_tx.send(me);
        }
    }

    fn release(&self) {
        let last = {
            let mut t = self.times();
            t.holders = t.holders.saturating_sub(1);
            t.holders == 0
        };
        if last {
            self.end_soon();
        }
    }
}

/// Every lease alive, and the channel ends come through.
pub(super) struct Leases {
    registry: Mutex<Vec<Arc<Lease>>>,
    ended_tx: mpsc::UnboundedSender<Arc<Lease>>,
    ended_rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<Lease>>>>,
    /// The renewals and ends under way.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Leases {
    pub(super) fn new() -> Self {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Self {
            registry: Mutex::new(Vec::new()),
            ended_tx,
            ended_rx: Mutex::new(Some(ended_rx)),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// A lease just made for `user`'s secret `secret`, held once (by the session that
    /// asked), in the registry.
    pub(super) fn make(&self, info: LeaseInfo, key: &UserKey, user: &str, secret: &str) -> Hold {
        let lease = Arc::new_cyclic(|me| Lease {
            key: key.clone(),
            user: user.to_string(),
            secret: secret.to_string(),
            times: Mutex::new(Times {
                granted: info.duration,
                renewed: Instant::now(),
                holders: 1,
                ended: false,
                let_go: false,
                renewing: false,
            }),
            ended_tx: self.ended_tx.clone(),
            me: me.clone(),
            info,
        });
        self.registry().push(lease.clone());
        Hold {
            leases: vec![lease],
        }
    }

    /// Where work on leases runs (waited for, within a bound, at [`Leases::stop`]).
    pub(super) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Lease>>> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the task, waits for what it started, then revokes every lease still alive
    /// (`lease_end = "revoke"`), all within [`SHUTDOWN_BOUND`].
    pub(super) async fn stop(&self, sources: &Arc<Sources>) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_BOUND, self.tasks.wait()).await;
        if sources.lease_end() != LeaseEnd::Revoke {
            return;
        }
        let alive: Vec<Arc<Lease>> = self
            .registry()
            .iter()
            .filter(|l| {
                let mut t = l.times();
                let alive = !t.ended && !t.left(Instant::now()).is_zero();
                t.ended |= alive;
                alive
            })
            .cloned()
            .collect();
        let mut revokes = tokio::task::JoinSet::new();
        for lease in alive {
            let sources = sources.clone();
            revokes.spawn(async move { revoke(&sources, &lease, "shutdown").await });
        }
        let _ = tokio::time::timeout(SHUTDOWN_BOUND, revokes.join_all()).await;
    }
}

/// A lease no session holds any more: revoked and forgotten, or left to run out.
async fn end(sources: Arc<Sources>, lease: Arc<Lease>) {
    let revoke_it = sources.lease_end() == LeaseEnd::Revoke;
    if !sources.cache.retire(&lease, revoke_it).await {
        return;
    }
    if revoke_it {
        revoke(&sources, &lease, "last session ended").await;
        return;
    }
    let left = lease.time_left();
    debug!(user = %lease.user, reference = %lease.key.1, "lease left to expire");
    (sources.audit)(
        &lease.user,
        "source.lease_expired",
        Some(&lease.secret),
        json!({ "reference": lease.key.1, "expires_in_secs": left.as_secs() }),
    );
}

/// Revokes `lease` (`why`: for the audit) and audits it.
async fn revoke(sources: &Arc<Sources>, lease: &Arc<Lease>, why: &str) {
    let outcome = sources.revoke(&lease.info, &lease.user).await;
    if let Err(e) = &outcome {
        warn!(user = %lease.user, reference = %lease.key.1, error = %e, "lease not revoked");
    }
    (sources.audit)(
        &lease.user,
        "source.lease_revoked",
        Some(&lease.secret),
        json!({
            "reference": lease.key.1, "why": why, "ok": outcome.is_ok(),
            "error": outcome.err().map(|e| e.to_string()),
        }),
    );
}

/// Renews `lease` by what it was last granted.
async fn renew(sources: Arc<Sources>, lease: Arc<Lease>) {
    let increment = lease.times().granted;
    let (s, info) = (sources.clone(), lease.info.clone());
    let renewed = tokio::task::spawn_blocking(move || match &s.vault {
        Some(vault) => vault.renew(&info.token, &info.id, increment),
        None => Err(super::SourceError::Refused("no Vault is configured".into())),
    })
    .await
    .unwrap_or_else(|e| Err(super::SourceError::Unavailable(e.to_string())));
    let mut t = lease.times();
    t.renewing = false;
    match renewed {
        Ok(granted) if !granted.is_zero() => {
            t.granted = granted;
            t.renewed = Instant::now();
            debug!(user = %lease.user, reference = %lease.key.1, secs = granted.as_secs(), "lease renewed");
        }
        Ok(_) => {}
        Err(e) => {
            warn!(user = %lease.user, reference = %lease.key.1, error = %e, "lease not renewed")
        }
    }
}

/// Starts a renewal of every held, renewable lease past two thirds of its time, and forgets
/// leases that can no longer be used.
fn tick(sources: &Arc<Sources>) {
    let now = Instant::now();
    let leases = &sources.leases;
    let due: Vec<Arc<Lease>> = {
        let mut registry = leases.registry();
        registry.retain(|l| {
            let t = l.times();
            !t.ended && !t.left(now).is_zero()
        });
        registry
            .iter()
            .filter(|l| {
                let mut t = l.times();
                let due = l.info.renewable
                    && t.holders > 0
                    && !t.renewing
                    && now >= t.renewed + t.granted * 2 / 3;
                t.renewing |= due;
                due
            })
            .cloned()
            .collect()
    };
    for lease in due {
        leases.tasks.spawn(renew(sources.clone(), lease));
    }
    sources.cache.purge(sources.max_stale, now);
}

/// Renews and ends leases, and drops old values, until [`Leases::stop`].
pub(super) async fn keep(sources: Weak<Sources>) {
    let Some((mut rx, stop)) = sources.upgrade().and_then(|s| {
        let rx = s
            .leases
            .ended_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        Some((rx, s.leases.stop.clone()))
    }) else {
        return;
    };
    let mut ticks = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            ended = rx.recv() => {
                let (Some(lease), Some(s)) = (ended, sources.upgrade()) else { return };
                s.leases.tasks.spawn(end(s.clone(), lease));
            }
            _ = ticks.tick() => {
                let Some(s) = sources.upgrade() else { return };
                tick(&s);
            }
        }
    }
}
