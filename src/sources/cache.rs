//! The cache of resolved values, per (user id, reference), in daemon memory only. A session
//! start takes a fresh value or asks the source; a refresh takes any value still usable and
//! asks only when there is none (never making a lease). When the source cannot be reached the
//! last good value stands in up to `max_stale` (a leased one while its lease lasts); when it
//! answers no, the entry is dropped. One resolution per entry at a time: sessions asking at
//! once for the same value wait for one answer (one lease).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyport_keys::SecretBytes;

use super::leases::{Hold, Lease};
use super::{Mode, Outcome, SourceError, Sources, User, UserKey, Wanted};

/// A cached value.
struct Entry {
    value: SecretBytes,
    fetched: Instant,
    /// How long it is used without asking again (values without a lease).
    fresh_for: Duration,
    lease: Option<Arc<Lease>>,
}

impl Entry {
    /// A hold for a session start (`fresh`) or a refresh or a stand-in (any time left), when
    /// `Some(None)` means "no lease, and usable".
    fn usable(&self, now: Instant, fresh: bool, max_stale: Duration) -> Option<Hold> {
        match &self.lease {
            Some(lease) => lease.hold(fresh),
            None => {
                let age = now.duration_since(self.fetched);
                let ok = if fresh {
                    age < self.fresh_for
                } else {
                    age <= max_stale.max(self.fresh_for)
                };
                ok.then(Hold::default)
            }
        }
    }
}

/// What the cache answered for one reference.
pub(super) struct Got {
    pub(super) outcome: Outcome,
    pub(super) value: Option<SecretBytes>,
    pub(super) hold: Hold,
    pub(super) age: Option<Duration>,
    pub(super) error: Option<SourceError>,
}

impl Got {
    fn failure(error: SourceError) -> Self {
        Self {
            outcome: Outcome::Failure,
            value: None,
            hold: Hold::default(),
            age: None,
            error: Some(error),
        }
    }

    fn from(outcome: Outcome, entry: &Entry, hold: Hold) -> Self {
        Self {
            outcome,
            value: Some(entry.value.clone()),
            hold,
            age: None,
            error: None,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// The entries, by (user id, reference).
#[derive(Default)]
pub(super) struct Cache {
    slots: Mutex<HashMap<UserKey, Slot>>,
}

impl Cache {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<UserKey, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, key: &UserKey) -> Slot {
        self.slots().entry(key.clone()).or_default().clone()
    }

    /// `wanted`'s value for `user`, as `mode` takes it (see the module doc).
    pub(super) async fn get(
        &self,
        sources: &Arc<Sources>,
        user: &User,
        wanted: &Wanted,
        deadline: Instant,
        mode: Mode,
    ) -> Got {
        let key = (user.id, wanted.reference.to_string());
        let slot = self.slot(&key);
        let Ok(mut entry) = tokio::time::timeout_at(deadline.into(), slot.lock()).await else {
            return Got::failure(SourceError::Unavailable(
                "timed out waiting for another session's resolution".into(),
            ));
        };
        let now = Instant::now();
        let max_stale = sources.max_stale;
        let fresh = mode == Mode::Session;
        if let Some(e) = entry.as_ref()
            && let Some(hold) = e.usable(now, fresh, max_stale)
        {
            return Got::from(Outcome::Hit, e, hold);
        }
        let fetched = if wanted.reference.leased() && mode == Mode::Refresh {
            Err(SourceError::Unavailable(
                "a leased value is made only for a session".into(),
            ))
        } else {
            match deadline
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
            {
                Some(budget) => sources.fetch(&user.name, &wanted.reference, budget).await,
                None => Err(SourceError::Unavailable("timed out".into())),
            }
        };
        match fetched {
            Ok(f) => {
                let hold = f.lease.map_or_else(Hold::default, |info| {
                    sources.leases.make(info, &key, &user.name, &wanted.name)
                });
                let new = Entry {
                    value: f.value,
                    fetched: Instant::now(),
                    fresh_for: sources.ttl(&wanted.reference),
                    lease: hold.first(),
                };
                let got = Got::from(Outcome::Miss, &new, hold);
                replace(&mut entry, Some(new));
                got
            }
            Err(error) if error.stands_in() => {
                let stand_in = entry
                    .as_ref()
                    .and_then(|e| Some((e, e.usable(now, false, max_stale)?)));
                let Some((e, hold)) = stand_in else {
                    return Got::failure(error);
                };
                let mut got = Got::from(Outcome::Stale, e, hold);
                got.age = Some(now.duration_since(e.fetched));
                got.error = Some(error);
                got
            }
            // The source said no: what it said before is no longer to be used.
            Err(error) => {
                replace(&mut entry, None);
                Got::failure(error)
            }
        }
    }

    /// Takes `lease` (held by no one) out of use: with `revoke` it is ended and its entry
    /// forgotten. False when it is held again, already ended, or (left to expire) already let
    /// go — nothing to do.
    pub(super) async fn retire(&self, lease: &Arc<Lease>, revoke: bool) -> bool {
        let slot = self.slot(&lease.key);
        let mut entry = slot.lock().await;
        let mut t = lease.times();
        if t.holders > 0 || t.ended || (t.let_go && !revoke) {
            return false;
        }
        t.let_go = true;
        if revoke {
            t.ended = true;
            drop(t);
            if entry
                .as_ref()
                .and_then(|e| e.lease.as_ref())
                .is_some_and(|l| Arc::ptr_eq(l, lease))
            {
                *entry = None;
            }
        }
        true
    }

    /// Forgets values past any use — without a lease older than `max_stale` (and fresh no
    /// more), with one when it has run out — and the entries no one is resolving.
    pub(super) fn purge(&self, max_stale: Duration, now: Instant) {
        let mut slots = self.slots();
        slots.retain(|_, slot| {
            // A slot being resolved is looked at next time.
            let Ok(mut entry) = slot.try_lock() else {
                return true;
            };
            let dead = entry.as_ref().is_some_and(|e| match &e.lease {
                Some(lease) => lease.time_left().is_zero(),
                None => {
                    let age = now.duration_since(e.fetched);
                    age > max_stale && age >= e.fresh_for
                }
            });
            if dead {
                *entry = None;
            }
            let empty = entry.is_none();
            drop(entry);
            // Only this map holds it, and it is empty: nothing is lost by dropping it.
            !(empty && Arc::strong_count(slot) == 1)
        });
    }
}

/// Puts `new` in `entry`; a lease the old one had that no one holds goes the way of any
/// other (ended).
fn replace(entry: &mut Option<Entry>, new: Option<Entry>) {
    let old = std::mem::replace(entry, new);
    if let Some(lease) = old.and_then(|e| e.lease)
        && lease.unheld()
    {
        lease.end_soon();
    }
}
