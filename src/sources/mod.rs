//! External sources: values that live in Vault/OpenBao or behind an operator's command,
//! resolved at each session start. Called by the vault's session-start path
//! ([`crate::shared::VaultHandle::session_start`]); nothing else knows where a value came from.
//!
//! A session's references are resolved concurrently within `[sources] timeout`, through a
//! cache in daemon memory (`cache`): KV values for `kv_ttl`, command values for `cache_ttl`,
//! leased values while their lease lasts (`leases`: renewed while a session holds them,
//! revoked or left to expire when the last one ends). When a source cannot be reached, the
//! last good value stands in up to `max_stale`. Values are never written anywhere: the audit
//! log gets references and outcomes.

mod cache;
mod exec;
mod leases;
mod outcome;
pub mod reference;
mod vault;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyport_keys::{KeyPair, SecretBytes};
use serde_json::Value;

pub use leases::Hold;
pub use outcome::{Outcome, Resolution, Resolved, Tested};
pub use reference::Reference;

use crate::config::{LeaseEnd, SourceProviders, VaultAuth};
use crate::secrets::validate::MAX_VALUE_BYTES;
use outcome::millis;

/// The keyport user a value is resolved for: the cache is theirs by id (a later user of the
/// same name starts empty); Vault and commands see the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// (user id, reference text): whose value a cache entry or lease is.
type UserKey = (i64, String);

/// Why resolving is happening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A session start: fresh values, new leases if need be, audited by the caller.
    Session,
    /// A refresh outside one (live files, the owner's files at start): any cached value
    /// still usable; the source only when there is none, and never a new lease.
    Refresh,
}

/// Why a source gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// It could not be asked, or did not answer in time: a last good value may stand in.
    #[error("{0}")]
    Unavailable(String),
    /// It answered no (denied, not found, no such field) or gave what a session cannot take:
    /// nothing stands in.
    #[error("{0}")]
    Refused(String),
}

impl SourceError {
    /// Whether a last good value may stand in for the answer that did not come.
    pub fn stands_in(&self) -> bool {
        matches!(self, SourceError::Unavailable(_))
    }
}

/// A value as a provider gave it, with its lease.
pub(crate) struct Fetched {
    value: SecretBytes,
    lease: Option<LeaseInfo>,
}

/// A lease as Vault described it, and the token that made it.
#[derive(Clone)]
pub(crate) struct LeaseInfo {
    id: String,
    duration: Duration,
    renewable: bool,
    token: Arc<vault::Token>,
}

/// A reference a session wants resolved.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The secret's name.
    pub name: String,
    /// Where its value lives.
    pub reference: Reference,
    /// Whether it goes into the environment (so may not hold a NUL byte).
    pub env: bool,
}

/// Something to put in the audit log: (user, action, secret, detail).
pub type AuditSink = Arc<dyn Fn(&str, &'static str, Option<&str>, Value) + Send + Sync>;

/// The daemon's sources: its providers, its cache and leases, its counts.
pub struct Sources {
    timeout: Duration,
    max_stale: Duration,
    vault: Option<vault::VaultClient>,
    exec: BTreeMap<String, exec::ExecProvider>,
    cache: cache::Cache,
    leases: leases::Leases,
    audit: AuditSink,
    counts: outcome::Counts,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("vault", &self.vault.is_some())
            .field("exec", &self.exec.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Sources {
    /// Whether `settings` log in to Vault with a JWT keyport signs (so need its JWT key).
    pub fn needs_jwt_key(settings: &SourceProviders) -> bool {
        settings
            .vault
            .as_ref()
            .is_some_and(|v| matches!(v.auth, VaultAuth::Jwt { .. }))
    }

    /// The providers `settings` configure, checked (accounts exist, files read), and the
    /// task that renews and ends leases until [`Sources::stop`]; `audit` records lease ends.
    /// The error names the setting.
    pub fn start(
        settings: &SourceProviders,
        jwt_key: Option<KeyPair>,
        audit: AuditSink,
    ) -> Result<Arc<Self>, String> {
        let vault = settings
            .vault
            .clone()
            .map(|v| vault::VaultClient::new(v, jwt_key))
            .transpose()?;
        let exec = settings
            .exec
            .iter()
            .map(|(name, s)| Ok((name.clone(), exec::ExecProvider::new(name, s.clone())?)))
            .collect::<Result<_, String>>()?;
        let sources = Arc::new(Self {
            timeout: settings.timeout,
            max_stale: settings.max_stale,
            vault,
            exec,
            cache: cache::Cache::default(),
            leases: leases::Leases::new(),
            audit,
            counts: outcome::Counts::default(),
        });
        tokio::spawn(leases::keep(Arc::downgrade(&sources)));
        Ok(sources)
    }

    /// At shutdown, once every session has ended: stops renewing and revokes (with
    /// `lease_end = "revoke"`) every lease still alive, within a few seconds.
    pub async fn stop(self: &Arc<Self>) {
        self.leases.stop(self).await;
    }

    /// Resolves `wanted` for `user`, concurrently, all within the session timeout, as `mode`
    /// says; one resolution per wanted reference, in order.
    pub async fn resolve(
        self: &Arc<Self>,
        user: &User,
        wanted: Vec<Wanted>,
        mode: Mode,
    ) -> Resolved {
        let deadline = Instant::now() + self.timeout;
        let mut tasks = tokio::task::JoinSet::new();
        let asked: Vec<(String, Reference)> = wanted
            .iter()
            .map(|w| (w.name.clone(), w.reference.clone()))
            .collect();
        for (i, w) in wanted.into_iter().enumerate() {
            let (sources, user) = (self.clone(), user.clone());
            tasks.spawn(async move { (i, sources.resolve_one(&user, w, deadline, mode).await) });
        }
        let mut done: Vec<Option<(Resolution, Hold)>> = asked.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, r)) = joined
                && let Some(slot) = done.get_mut(i)
            {
                *slot = Some(r);
            }
        }
        let mut resolved = Resolved::default();
        for (slot, (name, reference)) in done.into_iter().zip(asked) {
            // A task that died answers as a failure, in its place.
            let (resolution, hold) = slot.unwrap_or_else(|| {
                let error = SourceError::Unavailable("its resolution failed".into());
                (Resolution::failure(name, reference, error), Hold::default())
            });
            self.counts.count(&resolution);
            resolved.hold.absorb(hold);
            resolved.resolutions.push(resolution);
        }
        resolved
    }

    async fn resolve_one(
        self: &Arc<Self>,
        user: &User,
        wanted: Wanted,
        deadline: Instant,
        mode: Mode,
    ) -> (Resolution, Hold) {
        let started = Instant::now();
        let got = self.cache.get(self, user, &wanted, deadline, mode).await;
        let mut r = Resolution {
            name: wanted.name.clone(),
            reference: wanted.reference.clone(),
            outcome: got.outcome,
            latency: started.elapsed(),
            value: got.value,
            lease_ttl: got.hold.time_left(),
            age: got.age,
            error: got.error.map(|e| e.to_string()),
        };
        // A value the session could not take is no value (and its hold goes with `got`).
        if let Some(value) = &r.value
            && let Err(rule) = usable(value.expose(), wanted.env)
        {
            r.value = None;
            r.outcome = Outcome::Failure;
            r.error = Some(rule);
            return (r, Hold::default());
        }
        (r, got.hold)
    }

    /// Fetches `reference` for `user` from its provider, within `budget`. A Vault answer
    /// that comes too late is not lost: a lease it made is revoked.
    async fn fetch(
        self: &Arc<Self>,
        user: &str,
        reference: &Reference,
        budget: Duration,
    ) -> Result<Fetched, SourceError> {
        if let Reference::Exec { provider, key } = reference {
            let p = self.exec.get(provider).ok_or_else(|| {
                SourceError::Refused(format!(
                    "no provider `{provider}` is configured ([sources.{provider}])"
                ))
            })?;
            return p.fetch(user, key, budget).await;
        }
        if self.vault.is_none() {
            return Err(SourceError::Refused(
                "no Vault is configured ([sources.vault])".into(),
            ));
        }
        let (sources, who, what) = (self.clone(), user.to_string(), reference.clone());
        let mut call = tokio::task::spawn_blocking(move || match &sources.vault {
            Some(vault) => vault.fetch(&who, &what, budget),
            None => Err(SourceError::Refused("no Vault is configured".into())),
        });
        match tokio::time::timeout(budget, &mut call).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SourceError::Unavailable(format!(
                "the Vault call failed: {e}"
            ))),
            Err(_) => {
                let (sources, user) = (self.clone(), user.to_string());
                self.leases.tasks().spawn(async move {
                    if let Ok(Ok(Fetched {
                        lease: Some(lease), ..
                    })) = call.await
                    {
                        let _ = sources.revoke(&lease, &user).await;
                    }
                });
                Err(SourceError::Unavailable(format!(
                    "timed out after {}",
                    humantime::format_duration(budget)
                )))
            }
        }
    }

    /// How long a fresh value of `reference` is used without asking its source again (leased
    /// values: while more than a third of the lease is left).
    fn ttl(&self, reference: &Reference) -> Duration {
        match reference {
            Reference::Exec { provider, .. } => self
                .exec
                .get(provider)
                .map_or(Duration::ZERO, exec::ExecProvider::cache_ttl),
            _ => self
                .vault
                .as_ref()
                .map_or(Duration::ZERO, |v| v.settings().kv_ttl),
        }
    }

    fn lease_end(&self) -> LeaseEnd {
        self.vault
            .as_ref()
            .map_or(LeaseEnd::Expire, |v| v.settings().lease_end)
    }

    /// Resolves secret `name`'s `reference` (an env var's if `env`) for `user` from its
    /// source (never the cache), as a session would, and says how that went. A lease it
    /// makes is revoked right away when `lease_end = "revoke"`.
    pub async fn test(
        self: &Arc<Self>,
        user: &str,
        name: &str,
        reference: &Reference,
        env: bool,
    ) -> Tested {
        let started = Instant::now();
        let got = self.fetch(user, reference, self.timeout).await;
        let mut tested = Tested::failed(name, reference, "");
        tested.latency_ms = millis(started.elapsed());
        match got {
            Ok(fetched) => {
                tested.bytes = Some(fetched.value.len());
                match usable(fetched.value.expose(), env) {
                    Ok(()) => {
                        tested.outcome = "ok".into();
                        tested.error = None;
                    }
                    Err(rule) => tested.error = Some(rule),
                }
                if let Some(lease) = fetched.lease {
                    tested.lease_ttl_secs = Some(lease.duration.as_secs());
                    tested.renewable = Some(lease.renewable);
                    if self.lease_end() == LeaseEnd::Revoke {
                        tested.lease_revoked = self.revoke(&lease, user).await.is_ok();
                    }
                }
            }
            Err(e) => tested.error = Some(e.to_string()),
        }
        tested
    }

    /// Revokes `lease`, made for `user`.
    async fn revoke(self: &Arc<Self>, lease: &LeaseInfo, user: &str) -> Result<(), SourceError> {
        let (sources, user, lease) = (self.clone(), user.to_string(), lease.clone());
        tokio::task::spawn_blocking(move || match &sources.vault {
            Some(vault) => vault.revoke(&lease.token, &user, &lease.id),
            None => Err(SourceError::Refused("no Vault is configured".into())),
        })
        .await
        .map_err(|e| SourceError::Unavailable(e.to_string()))?
    }

    /// The resolution counts and latencies, in Prometheus' text format.
    pub fn metrics(&self) -> String {
        self.counts.render()
    }
}

/// Whether a session can take `value`: 1 byte to 64 KiB, and no NUL for an env var.
fn usable(value: &[u8], env: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err("the source gave an empty value".into());
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the source gave {} bytes, over the {MAX_VALUE_BYTES} a secret may hold",
            value.len()
        ));
    }
    if env && value.contains(&0) {
        return Err("the value holds a NUL byte, which an env var cannot".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
