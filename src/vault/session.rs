//! What an SSH session needs from the vault: is this key one of the user's login keys, the
//! user's enabled secrets as they are *now* (so a change shows in the next session), and a
//! record of each use.

use std::collections::HashMap;

use keyport_keys::{Binding, LoginKey, PublicKey, SecretBytes};
use serde_json::{Value, json};

use super::{Actor, Vault, VaultError, secret_binding};
use crate::secrets::files::{Plan, Report, Stale, Wanted};
use crate::store::{DeliveryRecord, FileRecord, SealedKind, SecretRecord, UserRecord, now_ms};

/// The secrets a new session gets.
#[derive(Debug, Default)]
pub struct SessionSecrets {
    /// Enabled env secrets: (env name, value).
    pub env: Vec<(String, SecretBytes)>,
    /// Enabled file secrets: (secret name, resolved path, value).
    pub files: Vec<(String, String, SecretBytes)>,
    /// Each file secret's path as set (`~/…` unresolved), in the order of `files`: a relayed
    /// session resolves it against the workspace login's home.
    pub file_paths: Vec<String>,
    /// Values a pty session's output must not show (enabled secrets with masking on, at
    /// least [`crate::secrets::MASK_MIN_LEN`] bytes), longest first.
    pub masked: Vec<SecretBytes>,
    /// Files left as they are, neither written nor removed: (resolved path, path as set) of
    /// file secrets whose source gave nothing on a refresh.
    pub keep: Vec<(String, String)>,
}

/// An enabled secret as a session start reads it: its value, or `None` when it has a source
/// (resolved by [`crate::sources`] on the way out of the vault).
#[derive(Debug)]
pub struct Opened {
    /// Its row.
    pub record: SecretRecord,
    /// Its stored value.
    pub value: Option<SecretBytes>,
}

impl SessionSecrets {
    /// What a session gets from `secrets` (records and their values, by name): each env
    /// secret, each file secret, and the values its pty output masks.
    pub fn compose(mut secrets: Vec<(SecretRecord, SecretBytes)>) -> (Self, Vec<String>) {
        secrets.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut out = SessionSecrets::default();
        let mut names = Vec::new();
        for (record, value) in secrets {
            names.push(record.name.clone());
            let kind = crate::secrets::lifecycle::SecretKind::stored(&record.kind);
            if kind.masks(record.mask, value.len()) {
                out.masked.push(value.clone());
            }
            if let Some(env) = &record.env_name {
                out.env.push((env.clone(), value.clone()));
            }
            if let (Some(path), Some(typed)) = (record.file_resolved, record.file_path) {
                out.files.push((record.name, path, value));
                out.file_paths.push(typed);
            }
        }
        // Longest first: a value inside a longer one is masked as part of it.
        out.masked.sort_by_key(|v| std::cmp::Reverse(v.len()));
        (out, names)
    }
}

/// The keyport user a running session (or its sockets) acts for: the name and the row id it
/// had at login. A name can be reused after its user is removed; the id never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    /// Row id at login.
    pub id: i64,
    /// Name at login.
    pub name: String,
}

impl Vault {
    /// The session's user, if it is still the same account: a session of a removed user never
    /// acts for a later user of the same name.
    pub fn session_user(&self, who: &SessionUser) -> Result<UserRecord, VaultError> {
        let user = self.store.user(&who.name)?;
        if user.id != who.id {
            return Err(VaultError::NotFound {
                kind: "user",
                name: who.name.clone(),
            });
        }
        Ok(user)
    }

    /// A number that changes with every change to the vault (see
    /// [`crate::store::Store::change_mark`]).
    pub fn change_mark(&self) -> Result<i64, VaultError> {
        Ok(self.store.change_mark()?)
    }

    /// (OS user, keyport user) of written files whose keyport user was removed.
    pub fn orphaned_files(&self) -> Result<Vec<(String, String)>, VaultError> {
        Ok(self.store.orphaned_files()?)
    }

    /// Whether the login `user_id` made with `key` still stands: `Ok(false)` only when the
    /// user is gone (or the name is someone else's now) or the key is no longer theirs; any
    /// other failure is an error, never a revocation.
    pub fn login_stands(
        &self,
        user: &str,
        user_id: i64,
        key: &PublicKey,
    ) -> Result<bool, VaultError> {
        let owner = match self.store.user(user) {
            Ok(owner) => owner,
            Err(crate::store::StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if owner.id != user_id {
            return Ok(false);
        }
        let offered = LoginKey::from_public(key.clone()).canonical_line()?;
        Ok(self
            .store
            .login_keys(owner.id)?
            .iter()
            .any(|k| k.public_key == offered))
    }

    /// The user, if `key` is one of their login keys. Unknown users and unknown keys give the
    /// same answer.
    pub fn login(&self, user: &str, key: &PublicKey) -> Result<Option<UserRecord>, VaultError> {
        let Ok(owner) = self.store.user(user) else {
            return Ok(None);
        };
        let offered = LoginKey::from_public(key.clone()).canonical_line()?;
        let known = self.store.login_keys(owner.id)?;
        Ok(known
            .iter()
            .any(|k| k.public_key == offered)
            .then_some(owner))
    }

    /// The user's enabled secrets, opened (references left for the sources to resolve).
    pub fn session_secrets(&self, who: &SessionUser) -> Result<Vec<Opened>, VaultError> {
        let owner = self.session_user(who)?;
        let rows = self.store.enabled_secrets_sealed(owner.id)?;
        self.open_rows(&owner, rows)
    }

    /// What a session starts with, from one read of the user's enabled secrets: them, opened
    /// (references left for the sources), and what the user is told or refused for (see
    /// [`Vault::session_checks`]) — for `who`, if still the same account.
    pub fn session_start(
        &self,
        who: &SessionUser,
        workspace: Option<&str>,
        groups: &[String],
    ) -> Result<(Vec<Opened>, super::SessionChecks), VaultError> {
        let owner = self.session_user(who)?;
        let rows = self.store.enabled_secrets_sealed(owner.id)?;
        let records: Vec<SecretRecord> = rows.iter().map(|(r, _)| r.clone()).collect();
        let checks = self.checks(&owner, &records, workspace, groups);
        Ok((self.open_rows(&owner, rows)?, checks))
    }

    /// `rows` (enabled secrets with their sealed values), opened.
    fn open_rows(
        &self,
        owner: &UserRecord,
        rows: Vec<(SecretRecord, Vec<u8>)>,
    ) -> Result<Vec<Opened>, VaultError> {
        let uid = owner.id.to_string();
        rows.into_iter()
            .map(|(record, blob)| {
                let value = match record.source {
                    Some(_) => None,
                    None => Some(
                        self.master()
                            .unseal(secret_binding(&uid, &record.name), &blob)?,
                    ),
                };
                Ok(Opened { record, value })
            })
            .collect()
    }

    /// Records uses (`(action, secret, detail)`, all by `actor` about `user`) in the audit
    /// log.
    pub fn record_uses(
        &mut self,
        actor: &Actor,
        user: &str,
        uses: &[(&'static str, Option<String>, Value)],
    ) -> Result<(), VaultError> {
        let events: Vec<_> = uses
            .iter()
            .map(|(action, secret, detail)| {
                Self::audit(actor, user, action, secret.as_deref(), detail.clone())
            })
            .collect();
        Ok(self.store.record_all(&events)?)
    }

    /// Records a use (an injection, a failed login) in the audit log.
    pub fn record_use(
        &mut self,
        actor: &Actor,
        user: &str,
        action: &str,
        detail: Value,
    ) -> Result<(), VaultError> {
        let event = Self::audit(actor, user, action, None, detail);
        Ok(self.store.record(&event)?)
    }
}

fn file_binding<'a>(os_user: &'a str, path: &'a str) -> Binding<'a> {
    Binding {
        purpose: SealedKind::FileHash.purpose(),
        owner: os_user,
        item: path,
    }
}

impl Vault {
    /// What `user`'s files under `os_user` should become: every enabled file secret written,
    /// and every file keyport wrote for this user that no secret wants any more (deleted,
    /// disabled, moved or cleared) removed if unchanged. Other users' files, even under the
    /// same OS account, are not touched.
    pub fn file_plan(
        &self,
        user: &str,
        os_user: &str,
        secrets: &SessionSecrets,
    ) -> Result<Plan, VaultError> {
        let mut plan = Plan::default();
        let ledger = self.store.files(os_user)?;
        let written = |path: &str| -> Result<Option<String>, VaultError> {
            let Some(file) = ledger.iter().find(|f| f.path == path) else {
                return Ok(None);
            };
            let hash = self
                .master()
                .unseal(file_binding(os_user, path), &file.hash_sealed)?;
            Ok(Some(String::from_utf8_lossy(hash.expose()).into_owned()))
        };
        for (_, path, value) in &secrets.files {
            plan.write.push(Wanted {
                path: path.clone(),
                content: value.clone(),
                // Whoever keyport wrote it for: a file still holding it is no one's edit.
                previous: written(path)?,
            });
        }
        for file in &ledger {
            let wanted = secrets.files.iter().any(|(_, p, _)| *p == file.path);
            let kept = secrets.keep.iter().any(|(p, _)| *p == file.path);
            if file.user_name != user || wanted || kept {
                continue;
            }
            plan.remove.push(Stale {
                path: file.path.clone(),
                sha256: written(&file.path)?.unwrap_or_default(),
            });
        }
        Ok(plan)
    }

    /// Brings the ledger up to date with what applying a plan did, and audits removals and
    /// the files left because the user changed them.
    pub fn record_files(
        &mut self,
        user: &str,
        os_user: &str,
        secrets: &SessionSecrets,
        report: &Report,
    ) -> Result<(), VaultError> {
        let known: HashMap<String, Vec<u8>> = self
            .store
            .files(os_user)?
            .into_iter()
            .map(|f| (f.path, f.hash_sealed))
            .collect();
        let mut record = Vec::new();
        for (path, hash) in report.written.iter().chain(&report.unchanged) {
            let same = known.get(path).is_some_and(|blob| {
                self.master()
                    .unseal(file_binding(os_user, path), blob)
                    .is_ok_and(|h| h.expose() == hash.as_bytes())
            });
            if same {
                continue;
            }
            let secret = secrets
                .files
                .iter()
                .find(|(_, p, _)| p == path)
                .map(|(name, _, _)| name.clone())
                .unwrap_or_default();
            record.push(FileRecord {
                os_user: os_user.to_string(),
                path: path.clone(),
                user_name: user.to_string(),
                secret_name: secret,
                hash_sealed: self
                    .master()
                    .seal(file_binding(os_user, path), hash.as_bytes())?,
                written_at: now_ms(),
            });
        }
        let place = os_user;
        let at = now_ms();
        let name_of = |path: &str| {
            secrets
                .files
                .iter()
                .find(|(_, p, _)| p == path)
                .map(|(name, _, _)| name.clone())
        };
        let delivered = |path: &String, outcome: &str, reason: Option<String>| {
            name_of(path).map(|secret_name| DeliveryRecord {
                secret_name,
                place: place.to_string(),
                path: path.clone(),
                outcome: outcome.to_string(),
                reason,
                at,
            })
        };
        let deliveries: Vec<DeliveryRecord> = report
            .written
            .iter()
            .filter_map(|(p, _)| delivered(p, "written", None))
            .chain(
                report
                    .unchanged
                    .iter()
                    .filter_map(|(p, _)| delivered(p, "unchanged", None)),
            )
            .chain(
                report
                    .failed
                    .iter()
                    .filter_map(|(p, why)| delivered(p, "failed", Some(why.clone()))),
            )
            .collect();
        // A removed user's files are still cleaned up; only their deliveries have no owner.
        let (user_id, deliveries) = match self.store.user(user) {
            Ok(owner) => (owner.id, deliveries),
            Err(crate::store::StoreError::NotFound { .. }) => (0, Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let forget: Vec<String> = report
            .removed
            .iter()
            .chain(&report.missing)
            .chain(&report.kept_changed)
            .cloned()
            .collect();
        let actor = Actor::System;
        let mut audits = Vec::new();
        if !report.removed.is_empty() {
            audits.push(Self::audit(
                &actor,
                user,
                "file.removed",
                None,
                json!({ "paths": report.removed }),
            ));
        }
        if !report.kept_changed.is_empty() {
            audits.push(Self::audit(
                &actor,
                user,
                "file.kept-changed",
                None,
                json!({ "paths": report.kept_changed }),
            ));
        }
        if !report.narrowed.is_empty() {
            audits.push(Self::audit(
                &actor,
                user,
                "file.replaced-foreign",
                None,
                json!({ "paths": report.narrowed }),
            ));
        }
        if !report.saved.is_empty() {
            let saved: Vec<_> = report
                .saved
                .iter()
                .map(|(path, kept)| json!({ "path": path, "saved_as": kept }))
                .collect();
            audits.push(Self::audit(
                &actor,
                user,
                "file.saved-edit",
                None,
                json!({ "files": saved }),
            ));
        }
        if !report.failed.is_empty() {
            let paths: Vec<&String> = report.failed.iter().map(|(p, _)| p).collect();
            audits.push(Self::audit(
                &actor,
                user,
                "file.failed",
                None,
                json!({ "paths": paths }),
            ));
        }
        if record.is_empty() && forget.is_empty() && audits.is_empty() && deliveries.is_empty() {
            return Ok(());
        }
        Ok(self
            .store
            .update_ledger(os_user, &record, &forget, (user_id, &deliveries), &audits)?)
    }
}
