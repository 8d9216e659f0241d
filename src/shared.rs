//! The daemon's one vault, shared by its listeners (API, SSH): calls run on a blocking thread
//! (SQLite blocks), one at a time, and a vault that finds the master key rotated by another
//! process is reopened with the new key and the call retried. What a session starts with
//! comes out of here with its references resolved by the daemon's [`Sources`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use keyport_keys::SecretBytes;
use serde_json::Value;

use crate::secrets::{Limits, Violation};
use crate::sources::{Hold, Mode, Outcome, Reference, Sources, Tested, User, Wanted};
use crate::store::{SecretRecord, StoreError};
use crate::vault::{
    Actor, Opened, SessionChecks, SessionSecrets, SessionUser, SourceNote, Vault, VaultError,
};

/// A cloneable handle to the daemon's vault.
#[derive(Clone)]
pub struct VaultHandle {
    vault: Arc<Mutex<Vault>>,
    reopen: Arc<(
        PathBuf,
        crate::store::Database,
        Limits,
        crate::vault::Policy,
    )>,
    sources: Arc<OnceLock<Arc<Sources>>>,
    /// Bumped when another process announced a change (PostgreSQL's LISTEN/NOTIFY): the
    /// watchers look at the change mark at once instead of at their next poll.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a session starts with: its secrets (references resolved), their names, what the user
/// is told or refused for, and the leases it holds until it ends.
#[derive(Debug)]
pub struct SessionStart {
    /// The values.
    pub secrets: SessionSecrets,
    /// The names of the secrets it got.
    pub names: Vec<String>,
    /// Notices and refusals.
    pub checks: SessionChecks,
    /// Leases its values came with: kept (and renewed) while this lives.
    pub hold: Hold,
    /// The audit events of its references' resolutions (`action`, secret, detail), for the
    /// caller to record off the session's way.
    pub resolutions: Vec<Use>,
}

/// A use to audit: (action, secret, detail).
pub type Use = (&'static str, Option<String>, Value);

/// Why a call on the shared vault failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// The call itself failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The blocking task died (a panic).
    #[error("vault task failed: {0}")]
    Task(String),
}

impl VaultHandle {
    /// Shares `vault`.
    pub fn new(vault: Vault) -> Self {
        let reopen = Arc::new((
            vault.data_dir().to_path_buf(),
            vault.database().clone(),
            *vault.limits(),
            vault.policy().clone(),
        ));
        Self {
            vault: Arc::new(Mutex::new(vault)),
            reopen,
            sources: Arc::new(OnceLock::new()),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Says that the store changed elsewhere (see [`VaultHandle::changes`]).
    pub fn wake(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever [`VaultHandle::wake`] is called.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resolves references through `sources` from now on (once, at start).
    pub fn set_sources(&self, sources: Arc<Sources>) {
        let _ = self.sources.set(sources);
    }

    fn sources(&self) -> Option<&Arc<Sources>> {
        self.sources.get()
    }

    /// The sources' resolution counts, in Prometheus' text format (none without sources).
    pub fn source_metrics(&self) -> String {
        self.sources().map(|s| s.metrics()).unwrap_or_default()
    }

    /// Resolves `user`'s secret `name`'s source now, as a session would but not from the
    /// cache, and audits the outcome (`source.tested`).
    pub async fn test_source(
        &self,
        actor: Actor,
        user: &str,
        name: &str,
    ) -> Result<Tested, SharedError> {
        let (u, n) = (user.to_string(), name.to_string());
        let meta = self.call(move |v| v.secret(&u, &n)).await?;
        let Some(source) = meta.source else {
            return Err(VaultError::Invalid(vec![Violation::new(
                "source",
                format!(
                    "secret {name} holds a stored value; only a secret with a source is tested"
                ),
            )])
            .into());
        };
        let reference =
            crate::secrets::parse_source(&source).map_err(|v| VaultError::Invalid(vec![v]))?;
        let tested = match self.sources() {
            Some(sources) => {
                let env = meta.env.is_some();
                sources.test(user, name, &reference, env).await
            }
            None => Tested::failed(
                name,
                &reference,
                "no source is configured on this server ([sources] in keyport's config)",
            ),
        };
        let detail = serde_json::json!({
            "reference": source, "outcome": tested.outcome, "bytes": tested.bytes,
            "error": tested.error, "latency_ms": tested.latency_ms,
        });
        let (who, uses) = (
            user.to_string(),
            [("source.tested", Some(name.to_string()), detail)],
        );
        self.call(move |v| v.record_uses(&actor, &who, &uses))
            .await?;
        Ok(tested)
    }

    /// What a session (`session`, relayed to `workspace` if given) of `who` starts with: one
    /// read of their enabled secrets, references resolved and audited (never their values).
    pub async fn session_start(
        &self,
        who: &SessionUser,
        workspace: Option<&str>,
        groups: Vec<String>,
        session: u64,
    ) -> Result<SessionStart, SharedError> {
        let (lookup, workspace) = (who.clone(), workspace.map(str::to_string));
        let (opened, mut checks) = self
            .call(move |v| v.session_start(&lookup, workspace.as_deref(), &groups))
            .await?;
        let resolved = self.resolve(who, opened, Some(session)).await;
        checks.sources = resolved.notes.into_iter().map(|(note, _)| note).collect();
        let (secrets, names) = SessionSecrets::compose(resolved.values);
        Ok(SessionStart {
            secrets,
            names,
            checks,
            hold: resolved.hold,
            resolutions: resolved.audits,
        })
    }

    /// `who`'s enabled secrets as they are now, for a refresh outside a session start (live
    /// files, the owner's files at start): file secrets' references from the cache or their
    /// source, but no new lease and no audit (env-only references are left out). A file
    /// secret whose source gives nothing now keeps its file as it is.
    pub async fn user_secrets(&self, who: &SessionUser) -> Result<SessionSecrets, SharedError> {
        let lookup = who.clone();
        let opened = self.call(move |v| v.session_secrets(&lookup)).await?;
        let resolved = self.resolve(who, opened, None).await;
        let mut secrets = SessionSecrets::compose(resolved.values).0;
        secrets.keep = resolved
            .notes
            .into_iter()
            .filter(|(note, _)| note.stale_secs.is_none())
            .filter_map(|(_, file)| file)
            .collect();
        Ok(secrets)
    }

    /// `opened`'s values, references resolved (for `session`, if a session start: only then
    /// are new leases made and resolutions audited).
    async fn resolve(
        &self,
        who: &SessionUser,
        opened: Vec<Opened>,
        session: Option<u64>,
    ) -> Resolving {
        let mut out = Resolving::default();
        let mut pending: Vec<SecretRecord> = Vec::new();
        let mut wanted = Vec::new();
        for Opened { record, value } in opened {
            // A refresh is about files: a source only an env var takes is left alone.
            if session.is_none() && record.source.is_some() && record.file_path.is_none() {
                continue;
            }
            match (value, record.source.as_deref().map(Reference::parse)) {
                (Some(value), _) => out.values.push((record, value)),
                (None, Some(Ok(reference))) => {
                    wanted.push(Wanted {
                        name: record.name.clone(),
                        reference,
                        env: record.env_name.is_some(),
                    });
                    pending.push(record);
                }
                (None, other) => {
                    let reason = match other {
                        Some(Err(rule)) => format!("the stored reference is not valid: {rule}"),
                        _ => "it has neither a value nor a source".into(),
                    };
                    out.note(&record, reason, None);
                }
            }
        }
        if wanted.is_empty() {
            return out;
        }
        let Some(sources) = self.sources() else {
            for record in &pending {
                out.note(
                    record,
                    "no source is configured on this server".into(),
                    None,
                );
            }
            return out;
        };
        let user = User {
            id: who.id,
            name: who.name.clone(),
        };
        let mode = match session {
            Some(_) => Mode::Session,
            None => Mode::Refresh,
        };
        let resolved = sources.resolve(&user, wanted, mode).await;
        // Resolved env values count against the env limit as stored ones do (`limits`).
        let env_bytes = |r: &SecretRecord, v: &SecretBytes| {
            r.env_name.as_ref().map_or(0, |e| e.len() + 1 + v.len())
        };
        let mut env_left = self
            .reopen
            .2
            .max_env_bytes
            .saturating_sub(out.values.iter().map(|(r, v)| env_bytes(r, v)).sum());
        for (record, mut r) in pending.into_iter().zip(resolved.resolutions) {
            if let Some(value) = &r.value {
                let needs = env_bytes(&record, value);
                if needs > env_left {
                    r.value = None;
                    r.outcome = Outcome::Failure;
                    r.error = Some(format!(
                        "its value would take the session's environment past the {} bytes \
                         allowed ([limits] max_env_bytes)",
                        self.reopen.2.max_env_bytes
                    ));
                } else {
                    env_left -= needs;
                }
            }
            if session.is_some() {
                let (action, detail) = r.audit(session);
                out.audits.push((action, Some(record.name.clone()), detail));
            }
            let reason = r.error.clone().unwrap_or_default();
            match (r.outcome, r.value) {
                (Outcome::Stale, Some(value)) => {
                    out.note(&record, reason, r.age.map(|a| a.as_secs()));
                    out.values.push((record, value));
                }
                (_, Some(value)) => out.values.push((record, value)),
                (_, None) => out.note(&record, reason, None),
            }
        }
        out.hold = resolved.hold;
        out
    }

    /// The lifecycle rules the vault was opened with (read without taking the vault).
    pub fn policy(&self) -> &crate::vault::Policy {
        &self.reopen.3
    }

    /// Runs `f` on the vault on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, SharedError>
    where
        T: Send + 'static,
        F: Fn(&mut Vault) -> Result<T, VaultError> + Send + 'static,
    {
        let vault = self.vault.clone();
        let reopen = self.reopen.clone();
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere cannot leave the database half-written (every change is one
            // transaction), so a poisoned lock is safe to take over.
            let mut guard = vault
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match f(&mut guard) {
                Err(VaultError::Store(StoreError::KeyRotated { .. })) => {
                    *guard = reopened(&reopen)?;
                    f(&mut guard)
                }
                // A value that does not open under a key rotated away elsewhere (another
                // replica): open again with the key the database names, and retry.
                Err(VaultError::Seal(e)) => {
                    if guard.rotated_elsewhere()?.is_some() {
                        *guard = reopened(&reopen)?;
                        f(&mut guard)
                    } else {
                        Err(VaultError::Seal(e))
                    }
                }
                other => other,
            }
        })
        .await
        .map_err(|e| SharedError::Task(e.to_string()))?
        .map_err(SharedError::from)
    }
}

type Reopen = (
    PathBuf,
    crate::store::Database,
    Limits,
    crate::vault::Policy,
);

fn reopened(how: &Reopen) -> Result<Vault, VaultError> {
    Ok(Vault::open_at(&how.0, &how.1, how.2)?.with_policy(how.3.clone()))
}

impl VaultHandle {
    /// Writes this daemon's heartbeat; first opens the vault again if the master key was
    /// rotated elsewhere (so this replica takes up the key staged for it).
    pub async fn heartbeat(&self, node: String, started_ms: i64) -> Result<(), SharedError> {
        self.call(move |v| {
            if let Some(found) = v.rotated_elsewhere()? {
                // As a sealing write would find it: `call` opens the vault again and retries.
                return Err(VaultError::Store(StoreError::KeyRotated {
                    expected: v.master_key_id(),
                    found,
                }));
            }
            v.heartbeat(&node, started_ms)
        })
        .await
    }
}

/// References on their way to values.
#[derive(Default)]
struct Resolving {
    values: Vec<(SecretRecord, SecretBytes)>,
    /// What the user is told, and the secret's file target (resolved, as set), if any.
    notes: Vec<(SourceNote, Option<(String, String)>)>,
    audits: Vec<Use>,
    hold: Hold,
}

impl Resolving {
    fn note(&mut self, record: &SecretRecord, reason: String, stale_secs: Option<u64>) {
        let note = SourceNote {
            name: record.name.clone(),
            reference: record.source.clone().unwrap_or_default(),
            required: record.required,
            reason,
            stale_secs,
        };
        let file = record.file_resolved.clone().zip(record.file_path.clone());
        self.notes.push((note, file));
    }
}
