//! Secret operations: create, update (absent = unchanged, `""` = clear), get, list, delete,
//! and opening a value for injection.
//!
//! Every change is decided inside the store's write transaction, against the secrets as they
//! are at that moment, so concurrent writers cannot combine into a state the rules forbid.

use keyport_keys::SecretBytes;
use serde_json::json;
use tracing::instrument;

use super::{Actor, Vault, VaultError, secret_binding};
use crate::secrets::lifecycle::RotateAfter;
use crate::secrets::validate::{self, SecretShape};
use crate::secrets::{SecretMeta, SecretPatch, SecretSpec, Violation, about, sets};
use crate::sources::Reference;
use crate::store::{SecretChange, SecretRecord, SecretRow, UserRecord, now_ms};

impl Vault {
    /// Creates a secret for `user`. Every broken rule is reported at once.
    #[instrument(skip_all, fields(user = %user, secret = %spec.name))]
    pub fn create_secret(
        &mut self,
        actor: &Actor,
        user: &str,
        spec: &SecretSpec,
    ) -> Result<SecretMeta, VaultError> {
        let owner = self.store.user(user)?;
        let mut invalid = validate::check_spec(spec);
        invalid.extend(self.check_source(spec.source.as_ref()).err());
        if !invalid.is_empty() {
            return Err(VaultError::Invalid(invalid));
        }
        let row = self.new_row(&owner, spec)?;
        let enabled = row.enabled;
        let mut fields = vec![if spec.source.is_some() {
            "source"
        } else {
            "value"
        }];
        fields.extend(spec.env.as_ref().map(|_| "env"));
        fields.extend(spec.file.as_ref().map(|_| "file"));
        fields.extend((!spec.description.is_empty()).then_some("description"));
        let audit = Self::audit(
            actor,
            user,
            "secret.create",
            Some(&spec.name),
            json!({ "fields": fields, "enabled": enabled }),
        );
        let limits = self.limits;
        let written = self.store.change_secrets(owner.id, |current| {
            let candidate = shape(&row, spec.value.len());
            reject(validate::check_set(
                &candidate,
                &shapes(current, None),
                &limits,
            ))?;
            Ok::<_, VaultError>((vec![SecretChange::Insert(row.clone())], vec![audit]))
        })?;
        self.first(written, &spec.name)
    }

    /// Creates many secrets, all or none. `problems` are those already found in the file
    /// (syntax, entries that broke a rule, see [`crate::secrets::import::check`]); every
    /// conflict of the remaining entries with existing secrets or each other is added, and
    /// all are reported at once.
    #[instrument(skip_all, fields(user = %user, count = specs.len()))]
    pub fn import_secrets(
        &mut self,
        actor: &Actor,
        user: &str,
        specs: &[SecretSpec],
        problems: Vec<Violation>,
    ) -> Result<Vec<SecretMeta>, VaultError> {
        let owner = self.store.user(user)?;
        let mut rows = Vec::new();
        for spec in specs {
            let mut own = validate::check_spec(spec);
            own.extend(self.check_source(spec.source.as_ref()).err());
            if own.is_empty() {
                rows.push((self.new_row(&owner, spec)?, spec.value.len()));
            } else {
                let label = format!("secret {}", spec.name);
                return Err(VaultError::Invalid(
                    own.into_iter().map(|v| about(&label, v)).collect(),
                ));
            }
        }
        let limits = self.limits;
        let audits: Vec<_> = rows
            .iter()
            .map(|(row, _)| {
                Self::audit(
                    actor,
                    user,
                    "secret.create",
                    Some(&row.name),
                    json!({ "via": "import", "enabled": row.enabled }),
                )
            })
            .collect();
        let written = self.store.change_secrets(owner.id, |current| {
            let mut others = shapes(current, None);
            let mut found = validate::SetProblems {
                invalid: problems,
                conflicts: Vec::new(),
            };
            for (row, len) in &rows {
                let label = format!("secret {}", row.name);
                let candidate = shape(row, *len);
                let set = validate::check_set(&candidate, &others, &limits);
                found
                    .conflicts
                    .extend(set.conflicts.into_iter().map(|v| about(&label, v)));
                found
                    .invalid
                    .extend(set.invalid.into_iter().map(|v| about(&label, v)));
                others.push(candidate);
            }
            if rows.is_empty() && found.invalid.is_empty() {
                found
                    .invalid
                    .push(Violation::new("content", "nothing to import"));
            }
            reject(found)?;
            let changes = rows
                .iter()
                .map(|(row, _)| SecretChange::Insert(row.clone()))
                .collect();
            Ok::<_, VaultError>((changes, audits))
        })?;
        Ok(written.into_iter().map(|r| self.meta(r)).collect())
    }

    /// The row for a new secret: targets resolved, value sealed, enabled by default when it
    /// has a target.
    fn new_row(&self, owner: &UserRecord, spec: &SecretSpec) -> Result<SecretRow, VaultError> {
        let uid = owner.id.to_string();
        // A reference's own sealed value is empty: every row opens the same way.
        let value = match spec.source {
            Some(_) => &[][..],
            None => spec.value.expose(),
        };
        Ok(SecretRow {
            name: spec.name.clone(),
            description: spec.description.clone(),
            env_name: spec.env.clone(),
            file_path: spec.file.clone(),
            file_resolved: resolve(owner, spec.file.as_deref())?,
            enabled: spec
                .enabled
                .unwrap_or(spec.env.is_some() || spec.file.is_some()),
            value_sealed: Some(
                self.master()
                    .seal(secret_binding(&uid, &spec.name), value)?,
            ),
            value_len: Some(len_i64(value.len())),
            kind: spec.lifecycle.kind.as_str().into(),
            rotate_after_secs: spec.lifecycle.rotate_after.map(RotateAfter::stored),
            mask: spec.lifecycle.mask,
            source: spec.source.as_ref().map(ToString::to_string),
            required: spec.required,
        })
    }

    /// A reference's provider is one the operator configured (`[sources.NAME]`).
    fn check_source(&self, source: Option<&Reference>) -> Result<(), Violation> {
        let Some(source) = source else {
            return Ok(());
        };
        let provider = source.provider();
        if self.policy.providers.contains(provider) {
            return Ok(());
        }
        Err(Violation::new(
            "source",
            format!(
                "no provider `{provider}` is configured on this server (the operator adds \
                 [sources.{provider}] to keyport's config)"
            ),
        ))
    }

    /// Updates a secret: fields absent from `patch` stay as they are, `""` clears `description`,
    /// `env` or `file`. The result is checked as a whole (e.g. an enabled secret keeps a target).
    #[instrument(skip_all, fields(user = %user, secret = %name))]
    pub fn update_secret(
        &mut self,
        actor: &Actor,
        user: &str,
        name: &str,
        patch: &SecretPatch,
    ) -> Result<SecretMeta, VaultError> {
        // Checks on the patch alone; checks on the merged result happen in the transaction.
        let mut invalid = validate::check_patch(patch);
        invalid.extend(self.check_source(patch.source.as_ref()).err());
        if !invalid.is_empty() {
            return Err(VaultError::Invalid(invalid));
        }
        let owner = self.store.user(user)?;
        let uid = owner.id.to_string();
        // A new source empties the sealed value, as on create.
        let new_value = match (&patch.value, &patch.source) {
            (Some(value), _) => Some(value.expose()),
            (None, Some(_)) => Some(&[][..]),
            (None, None) => None,
        };
        let value_sealed = match new_value {
            Some(value) => Some(self.master().seal(secret_binding(&uid, name), value)?),
            None => None,
        };
        // Giving a secret an env target without a new value: its stored value must fit an env
        // var. Opened before the transaction; the transaction checks it is still that value.
        // A source's value is checked when it is resolved.
        let stored = match (&patch.value, &patch.source, sets(&patch.env)) {
            (None, None, Some(_)) => {
                let current = self.store.secret(owner.id, name)?;
                match current.source {
                    Some(_) => None,
                    None => Some((current.updated_at, self.open_secret(&owner, name)?)),
                }
            }
            _ => None,
        };
        let file_resolved = match sets(&patch.file) {
            Some(file) => Some(resolve(&owner, Some(file))?),
            None => None,
        };
        let limits = self.limits;
        let audit = Self::audit(actor, user, "secret.update", Some(name), json!({}));
        let written = self.store.change_secrets(owner.id, |secrets| {
            let Some(now) = secrets.iter().find(|s| s.name == name) else {
                return Err(VaultError::not_found("secret", name));
            };
            let env = merge(&now.env_name, &patch.env);
            let value_check = match (&patch.value, &stored) {
                (Some(value), _) => validate::check_value(value.expose(), env.is_some()),
                (None, Some((read_at, value))) if *read_at == now.updated_at => {
                    validate::check_value(value.expose(), env.is_some())
                }
                (None, Some(_)) => {
                    return Err(VaultError::Conflict(vec![Violation::new(
                        "value",
                        "the secret changed while this update was checked; try again",
                    )]));
                }
                (None, None) => Ok(()),
            };
            if let Err(v) = value_check {
                return Err(VaultError::Invalid(vec![v]));
            }
            let file_path = merge(&now.file_path, &patch.file);
            // Clearing a secret's last target keeps it, not injected (Coder's "stored, but
            // not injected"), unless the same patch asks for it enabled.
            let cleared = [&patch.env, &patch.file]
                .iter()
                .any(|f| f.as_deref() == Some(""));
            let untargeted = cleared && env.is_none() && file_path.is_none();
            let enabled = match patch.enabled {
                Some(enabled) => enabled,
                None if untargeted => false,
                None => now.enabled,
            };
            let row = SecretRow {
                name: name.to_string(),
                description: patch
                    .description
                    .clone()
                    .unwrap_or_else(|| now.description.clone()),
                env_name: env,
                file_path,
                file_resolved: match &patch.file {
                    None => now.file_resolved.clone(),
                    Some(_) => file_resolved.clone().flatten(),
                },
                enabled,
                value_sealed: value_sealed.clone(),
                value_len: new_value.map(|v| len_i64(v.len())),
                kind: patch
                    .kind
                    .map_or_else(|| now.kind.clone(), |k| k.as_str().to_string()),
                rotate_after_secs: match patch.rotate_after {
                    None => now.rotate_after_secs,
                    Some(own) => own.map(RotateAfter::stored),
                },
                mask: patch.mask.or(now.mask),
                source: match (&patch.value, &patch.source) {
                    (_, Some(source)) => Some(source.to_string()),
                    (Some(_), None) => None,
                    (None, None) => now.source.clone(),
                },
                required: patch.required.unwrap_or(now.required),
            };
            let len =
                new_value.map_or_else(|| usize::try_from(now.value_len).unwrap_or(0), <[u8]>::len);
            reject(validate::check_set(
                &shape(&row, len),
                &shapes(secrets, Some(now.id)),
                &limits,
            ))?;
            let mut audit = audit.clone();
            audit.detail = json!({ "fields": patch.fields(), "enabled": row.enabled });
            Ok((vec![SecretChange::Update { id: now.id, row }], vec![audit]))
        })?;
        self.first(written, name)
    }

    /// Deletes a secret.
    #[instrument(skip_all, fields(user = %user, secret = %name))]
    pub fn delete_secret(
        &mut self,
        actor: &Actor,
        user: &str,
        name: &str,
    ) -> Result<(), VaultError> {
        let owner = self.store.user(user)?;
        let audit = Self::audit(actor, user, "secret.delete", Some(name), json!({}));
        self.store.change_secrets(owner.id, |secrets| {
            let Some(s) = secrets.iter().find(|s| s.name == name) else {
                return Err(VaultError::not_found("secret", name));
            };
            Ok((vec![SecretChange::Delete { id: s.id }], vec![audit]))
        })?;
        Ok(())
    }

    /// One secret's metadata.
    pub fn secret(&self, user: &str, name: &str) -> Result<SecretMeta, VaultError> {
        let owner = self.store.user(user)?;
        Ok(self.meta(self.store.secret(owner.id, name)?))
    }

    /// The user's secrets' metadata, sorted by name.
    pub fn secrets(&self, user: &str) -> Result<Vec<SecretMeta>, VaultError> {
        let owner = self.store.user(user)?;
        let mut deliveries = self.store.deliveries(owner.id)?;
        Ok(self
            .store
            .secrets(owner.id)?
            .into_iter()
            .map(|record| {
                let mut meta = self.meta(record);
                let (mine, rest): (Vec<_>, Vec<_>) = deliveries
                    .drain(..)
                    .partition(|d| d.secret_name == meta.name);
                deliveries = rest;
                meta.deliveries = mine.into_iter().map(Into::into).collect();
                meta
            })
            .collect())
    }

    /// Opens a secret's value, for injecting it into the user's own session. Never for output.
    #[instrument(skip_all, fields(user = %user, secret = %name))]
    pub fn secret_value(&self, user: &str, name: &str) -> Result<SecretBytes, VaultError> {
        let owner = self.store.user(user)?;
        self.open_secret(&owner, name)
    }

    /// What users see of `record`, its rotation judged now under the configured policy.
    fn meta(&self, record: SecretRecord) -> SecretMeta {
        SecretMeta::new(record, &self.policy.rotation, now_ms())
    }

    fn first(&self, written: Vec<SecretRecord>, name: &str) -> Result<SecretMeta, VaultError> {
        written
            .into_iter()
            .next()
            .map(|r| self.meta(r))
            .ok_or_else(|| VaultError::not_found("secret", name))
    }

    fn open_secret(&self, owner: &UserRecord, name: &str) -> Result<SecretBytes, VaultError> {
        let blob = self.store.secret_sealed(owner.id, name)?;
        let uid = owner.id.to_string();
        Ok(self.master().unseal(secret_binding(&uid, name), &blob)?)
    }
}

/// `Some("")` in a patch clears; `None` keeps the current value.
fn merge(current: &Option<String>, patch: &Option<String>) -> Option<String> {
    match patch {
        None => current.clone(),
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.clone()),
    }
}

/// Resolves `~/` against the home of the OS account the user's sessions run as.
fn resolve(owner: &UserRecord, file: Option<&str>) -> Result<Option<String>, VaultError> {
    let Some(file) = file else { return Ok(None) };
    if file.starts_with('/') {
        return Ok(Some(file.to_string()));
    }
    let os = crate::osuser::lookup(&owner.os_user).map_err(|e| {
        VaultError::Invalid(vec![Violation::new(
            "file",
            format!("cannot resolve ~ for OS user {}: {e}", owner.os_user),
        )])
    })?;
    Ok(Some(validate::resolve_file_path(file, &os.home)))
}

fn shape(row: &SecretRow, value_len: usize) -> SecretShape {
    SecretShape {
        name: row.name.clone(),
        env: row.env_name.clone(),
        file: row.file_path.clone(),
        file_resolved: row.file_resolved.clone(),
        enabled: row.enabled,
        value_len,
    }
}

fn shapes(records: &[SecretRecord], except: Option<i64>) -> Vec<SecretShape> {
    records
        .iter()
        .filter(|r| Some(r.id) != except)
        .map(SecretShape::from)
        .collect()
}

/// Broken rules win over conflicts (400 before 409), and every problem is listed.
fn reject(problems: validate::SetProblems) -> Result<(), VaultError> {
    match (problems.invalid.is_empty(), problems.conflicts.is_empty()) {
        (true, true) => Ok(()),
        (true, false) => Err(VaultError::Conflict(problems.conflicts)),
        (false, _) => {
            let mut all = problems.invalid;
            all.extend(problems.conflicts);
            Err(VaultError::Invalid(all))
        }
    }
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
