//! Who may hold a connection before logging in, as sshd decides it: at most `full`
//! unauthenticated connections, new ones dropped at random past `begin` (`MaxStartups`), at most
//! `per_source_startups` from one address (a new one replaces that address's oldest, so a
//! flood from an address cannot keep a real login from it out), and each with
//! `login_grace_secs` to log in; and one address may start at most `per_source_rate` new
//! connections a second (a bucket of `per_source_startups`), which keeps a DHEat flood — many
//! connections each asking for a costly key exchange — near what sshd lets through. A
//! [`Ticket`] holds a place until its connection logs in or ends; the connection's task ends
//! the connection when its ticket is evicted.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::Startups;

/// The unauthenticated connections and their places.
pub struct Gate {
    startups: Startups,
    per_source: usize,
    rate: f64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: usize,
    next: u64,
    /// Per address, oldest first: (ticket id, its eviction token).
    sources: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
    /// Per address: new connections it may still start now, as of when.
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Addresses whose rate is tracked before idle ones are forgotten.
const TRACKED: usize = 10_000;

/// One unauthenticated connection's place; given back when dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    source: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(startups: Startups, per_source: u32, rate: u32) -> Arc<Self> {
        Arc::new(Self {
            startups,
            per_source: per_source.max(1) as usize,
            rate: f64::from(rate.max(1)),
            state: Mutex::new(State::default()),
        })
    }

    /// A place for a new connection from `source`, or `None` if it is to be dropped.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Ticket> {
        let mut state = self.lock();
        if !self.take_token(&mut state, source) {
            return None;
        }
        let held = state.sources.get(&source).map_or(0, VecDeque::len);
        // Replacing one of its own does not grow the total: no early drop for that.
        if held < self.per_source && self.drop_early(state.total) {
            return None;
        }
        let id = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        let queue = state.sources.entry(source).or_default();
        queue.push_back((id, evicted.clone()));
        let replaced = (queue.len() > self.per_source)
            .then(|| queue.pop_front())
            .flatten();
        match replaced {
            // Its place is the new one's; the evicted connection's ticket finds itself gone.
            Some((_, old)) => old.cancel(),
            None => state.total += 1,
        }
        Some(Ticket {
            gate: self.clone(),
            source,
            id,
            evicted,
        })
    }

    /// One new connection from `source` out of its bucket (refilled at `rate` a second, up to
    /// `per_source`).
    fn take_token(&self, state: &mut State, source: IpAddr) -> bool {
        let full = self.per_source as f64;
        if state.buckets.len() > TRACKED {
            let rate = self.rate;
            state
                .buckets
                .retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * rate < full);
        }
        if state.buckets.len() > TRACKED && !state.buckets.contains_key(&source) {
            // Too many addresses at once to track each one's rate: the global limits
            // (MaxStartups) still apply to this one.
            return true;
        }
        let (tokens, at) = state
            .buckets
            .entry(source)
            .or_insert((full, Instant::now()));
        *tokens = (*tokens + at.elapsed().as_secs_f64() * self.rate).min(full);
        *at = Instant::now();
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// sshd's random early drop, past `begin` held (so one address, capped at
    /// `per_source_startups` ≤ `begin` by default, cannot make others' logins a lottery):
    /// always at `full`, linearly between.
    fn drop_early(&self, total: usize) -> bool {
        let Startups { begin, rate, full } = self.startups;
        let (begin, full) = (begin as usize, full as usize);
        if total <= begin {
            return false;
        }
        if total >= full {
            return true;
        }
        let span = (full - begin).max(1);
        let percent = rate as usize + (100 - rate as usize) * (total - begin - 1) / span;
        let mut roll = [0u8; 2];
        if getrandom::fill(&mut roll).is_err() {
            return true;
        }
        (u16::from_le_bytes(roll) as usize % 100) < percent
    }

    /// Unauthenticated connections held now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Ticket {
    /// Resolves when a newer connection from the same address took this one's place.
    pub fn evicted(&self) -> CancellationToken {
        self.evicted.clone()
    }
}

impl Drop for Ticket {
    /// Gives the place back, if it is still this ticket's: an evicted ticket's place went to
    /// the connection that evicted it (which `admit` already took out of the queue, under the
    /// same lock, so the two cannot both give it back).
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        let Some(queue) = state.sources.get_mut(&self.source) else {
            return;
        };
        let before = queue.len();
        queue.retain(|(id, _)| *id != self.id);
        let held = queue.len() < before;
        if queue.is_empty() {
            state.sources.remove(&self.source);
        }
        if held {
            state.total = state.total.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(begin: u32, rate: u32, full: u32, per_source: u32) -> Arc<Gate> {
        Gate::new(Startups { begin, rate, full }, per_source, 1_000_000)
    }

    #[test]
    fn one_address_starts_connections_at_its_rate() {
        let gate = Gate::new(
            Startups {
                begin: 100,
                rate: 30,
                full: 100,
            },
            5,
            1,
        );
        let ip: IpAddr = [127, 0, 0, 3].into();
        let admitted = (0..20).filter_map(|_| gate.admit(ip)).count();
        assert_eq!(admitted, 5, "the bucket, then nothing until it refills");
        assert!(
            gate.admit([127, 0, 0, 4].into()).is_some(),
            "other addresses have their own"
        );
    }

    #[test]
    fn a_source_past_its_cap_replaces_its_oldest() {
        let gate = gate(100, 30, 100, 3);
        let ip: IpAddr = [127, 0, 0, 2].into();
        let tickets: Vec<Ticket> = (0..3).map(|_| gate.admit(ip).unwrap()).collect();
        let newest = gate.admit(ip).unwrap();
        assert!(tickets[0].evicted().is_cancelled(), "the oldest made room");
        assert!(!tickets[1].evicted().is_cancelled());
        assert_eq!(gate.held(), 3);
        drop(tickets);
        assert_eq!(gate.held(), 1, "only the newest is held");
        drop(newest);
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn past_full_every_new_connection_is_dropped_and_below_begin_none() {
        let gate = gate(2, 30, 4, 100);
        let mut held = Vec::new();
        for n in 0..2u8 {
            held.push(gate.admit([10, 0, 0, n].into()).expect("below begin"));
        }
        // Between begin and full some are dropped; fill up to full.
        let mut n = 2u8;
        while gate.held() < 4 {
            if let Some(t) = gate.admit([10, 0, 0, n].into()) {
                held.push(t);
            }
            n = n.wrapping_add(1);
        }
        for n in 100..200u8 {
            assert!(gate.admit([10, 0, 1, n].into()).is_none(), "full");
        }
        drop(held);
        assert_eq!(gate.held(), 0);
    }
}
