//! What resolving references gives: each one's [`Resolution`] (outcome, value, latency, and
//! its audit event), a session's [`Resolved`] set with the leases it holds, and what `secret
//! test` reports ([`Tested`]).

use std::time::Duration;

use keyport_keys::SecretBytes;
use serde_json::{Value, json};

use super::Reference;
use super::leases::Hold;

/// How a reference was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// From the cache, still fresh.
    Hit,
    /// From the source.
    Miss,
    /// The source failed; the last good value stood in.
    Stale,
    /// No value.
    Failure,
}

impl Outcome {
    /// The word in audit events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Failure => "failure",
        }
    }
}

/// One reference's resolution. `Debug` leaves the value out.
pub struct Resolution {
    /// The secret's name.
    pub name: String,
    /// The reference.
    pub reference: Reference,
    /// How it went.
    pub outcome: Outcome,
    /// How long it took.
    pub latency: Duration,
    /// The value (none on failure).
    pub value: Option<SecretBytes>,
    /// The lease's time left, for a leased value.
    pub lease_ttl: Option<Duration>,
    /// How old the value standing in is (stale only).
    pub age: Option<Duration>,
    /// Why the source gave nothing (stale and failure).
    pub error: Option<String>,
}

impl std::fmt::Debug for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolution")
            .field("name", &self.name)
            .field("reference", &self.reference.to_string())
            .field("outcome", &self.outcome)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Resolution {
    /// No value for secret `name`'s `reference`, because of `error`.
    pub(super) fn failure(name: String, reference: Reference, error: super::SourceError) -> Self {
        Self {
            name,
            reference,
            outcome: Outcome::Failure,
            latency: Duration::ZERO,
            value: None,
            lease_ttl: None,
            age: None,
            error: Some(error.to_string()),
        }
    }

    /// The audit action and detail (never the value) for `session`.
    pub fn audit(&self, session: Option<u64>) -> (&'static str, Value) {
        let action = match self.outcome {
            Outcome::Hit | Outcome::Miss => "source.resolved",
            Outcome::Stale => "source.stale",
            Outcome::Failure => "source.failed",
        };
        let mut detail = json!({
            "session": session,
            "reference": self.reference.to_string(),
            "provider": self.reference.provider(),
            "outcome": self.outcome.as_str(),
            "latency_ms": millis(self.latency),
        });
        if let Some(ttl) = self.lease_ttl {
            detail["lease_ttl_secs"] = json!(ttl.as_secs());
        }
        if let Some(age) = self.age {
            detail["age_secs"] = json!(age.as_secs());
        }
        if let Some(error) = &self.error {
            detail["error"] = json!(error);
        }
        (action, detail)
    }
}

/// A session's references, resolved, in the order asked; `hold` keeps their leases alive.
#[derive(Debug, Default)]
pub struct Resolved {
    /// One per reference asked for.
    pub resolutions: Vec<Resolution>,
    /// The leases the session holds until it ends.
    pub hold: Hold,
}

/// What `keyport secret test` (`POST …/secrets/{name}/test`) reports: how resolving a
/// secret's source went, never the value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Tested {
    /// The secret.
    pub name: String,
    /// Its reference.
    pub source: String,
    /// The provider (`vault`, or an exec provider's name).
    pub provider: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// The value's length.
    pub bytes: Option<usize>,
    /// The lease's duration, for a leased value.
    pub lease_ttl_secs: Option<u64>,
    /// Whether the lease can be renewed.
    pub renewable: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
    /// How long it took, ms.
    pub latency_ms: u64,
    /// Whether the test's own lease was revoked right away (`lease_end = "revoke"`).
    #[serde(default)]
    pub lease_revoked: bool,
}

impl Tested {
    /// A test of secret `name` that could not even be tried: `why`.
    pub fn failed(name: &str, reference: &Reference, why: &str) -> Self {
        Self {
            name: name.to_string(),
            source: reference.to_string(),
            provider: reference.provider().to_string(),
            outcome: "failed".into(),
            bytes: None,
            lease_ttl_secs: None,
            renewable: None,
            error: Some(why.to_string()),
            latency_ms: 0,
            lease_revoked: false,
        }
    }
}

/// Resolutions counted by (provider, outcome), with their total latency.
#[derive(Default)]
pub(super) struct Counts(
    std::sync::Mutex<std::collections::BTreeMap<(String, Outcome), (u64, Duration)>>,
);

impl Counts {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, Outcome), (u64, Duration)>>
    {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `r`.
    pub(super) fn count(&self, r: &Resolution) {
        let mut counts = self.lock();
        let entry = counts
            .entry((r.reference.provider().to_string(), r.outcome))
            .or_default();
        entry.0 += 1;
        entry.1 += r.latency;
    }

    /// The counts and latencies, in Prometheus' text format.
    pub(super) fn render(&self) -> String {
        use std::fmt::Write as _;
        let counts = self.lock();
        let mut out = String::from(
            "# HELP keyport_source_resolutions_total References resolved, by provider and outcome.\n\
             # TYPE keyport_source_resolutions_total counter\n",
        );
        for ((provider, outcome), (n, _)) in counts.iter() {
            let _ = writeln!(
                out,
                "keyport_source_resolutions_total{{provider=\"{provider}\",outcome=\"{}\"}} {n}",
                outcome.as_str()
            );
        }
        out.push_str(
            "# HELP keyport_source_resolution_seconds Time to resolve a reference.\n\
             # TYPE keyport_source_resolution_seconds summary\n",
        );
        for ((provider, outcome), (n, total)) in counts.iter() {
            let labels = format!("provider=\"{provider}\",outcome=\"{}\"", outcome.as_str());
            let _ = writeln!(
                out,
                "keyport_source_resolution_seconds_sum{{{labels}}} {:.6}\n\
                 keyport_source_resolution_seconds_count{{{labels}}} {n}",
                total.as_secs_f64()
            );
        }
        out
    }
}

/// `d` in whole milliseconds, for audit details and reports.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
