//! Secret operations: create, update (absent = unchanged, `""` = clear), get, list, delete,
//! and opening a value for injection.

use keyport_keys::SecretBytes;
use serde_json::json;
use tracing::instrument;

use super::{Actor, Vault, VaultError, secret_binding};
use crate::secrets::validate::{self, SecretShape};
use crate::secrets::{SecretMeta, SecretPatch, SecretSpec, Violation};
use crate::store::{SecretChange, SecretRecord, SecretRow, UserRecord};

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
        let mut invalid = Vec::new();
        invalid.extend(validate::check_name(&spec.name).err());
        invalid.extend(validate::check_description(&spec.description).err());
        invalid.extend(
            spec.env
                .as_deref()
                .and_then(|e| validate::check_env_name(e).err()),
        );
        invalid.extend(
            spec.file
                .as_deref()
                .and_then(|f| validate::check_file_path(f).err()),
        );
        invalid.extend(validate::check_value(spec.value.expose(), spec.env.is_some()).err());
        if !invalid.is_empty() {
            return Err(VaultError::Invalid(invalid));
        }
        let file_resolved = resolve(&owner, spec.file.as_deref())?;
        let enabled = spec
            .enabled
            .unwrap_or(spec.env.is_some() || spec.file.is_some());
        let uid = owner.id.to_string();
        let sealed = self
            .master()
            .seal(secret_binding(&uid, &spec.name), spec.value.expose())?;
        let row = SecretRow {
            name: spec.name.clone(),
            description: spec.description.clone(),
            env_name: spec.env.clone(),
            file_path: spec.file.clone(),
            file_resolved,
            enabled,
            value_sealed: Some(sealed),
            value_len: Some(len_i64(spec.value.len())),
        };
        let limits = self.limits;
        let mut fields = vec!["value"];
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
        let record = self.store.change_secrets(owner.id, |current| {
            reject(validate::check_set(
                &shape(&row, spec.value.len()),
                &shapes(current, None),
                &limits,
            ))?;
            Ok::<_, VaultError>((SecretChange::Insert(row.clone()), audit))
        })?;
        record
            .map(SecretMeta::from)
            .ok_or_else(|| VaultError::NotFound(format!("secret {}", spec.name)))
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
        if patch.is_empty() {
            return Err(VaultError::Invalid(vec![Violation::new(
                "body",
                "give at least one of value, description, env, file, enabled",
            )]));
        }
        let owner = self.store.user(user)?;
        let current = self.store.secret(owner.id, name)?;
        let env = merge(&current.env_name, &patch.env);
        let file = merge(&current.file_path, &patch.file);
        let mut invalid = Vec::new();
        invalid.extend(
            patch
                .description
                .as_deref()
                .and_then(|d| validate::check_description(d).err()),
        );
        if patch.env.as_deref().is_some_and(|e| !e.is_empty()) {
            invalid.extend(
                env.as_deref()
                    .and_then(|e| validate::check_env_name(e).err()),
            );
        }
        if patch.file.as_deref().is_some_and(|f| !f.is_empty()) {
            invalid.extend(
                file.as_deref()
                    .and_then(|f| validate::check_file_path(f).err()),
            );
        }
        let uid = owner.id.to_string();
        match &patch.value {
            Some(value) => {
                invalid.extend(validate::check_value(value.expose(), env.is_some()).err())
            }
            // Giving a binary file secret an env target: its stored value must fit an env var.
            None if env.is_some() && current.env_name.is_none() => {
                let value = self.open_secret(&owner, name)?;
                invalid.extend(validate::check_value(value.expose(), true).err());
            }
            None => {}
        }
        if !invalid.is_empty() {
            return Err(VaultError::Invalid(invalid));
        }
        let value_sealed = match &patch.value {
            Some(value) => Some(
                self.master()
                    .seal(secret_binding(&uid, name), value.expose())?,
            ),
            None => None,
        };
        let value_len = patch.value.as_ref().map(|v| v.len());
        let row = SecretRow {
            name: name.to_string(),
            description: patch
                .description
                .clone()
                .unwrap_or_else(|| current.description.clone()),
            file_resolved: resolve(&owner, file.as_deref())?,
            env_name: env,
            file_path: file,
            enabled: patch.enabled.unwrap_or(current.enabled),
            value_sealed,
            value_len: value_len.map(len_i64),
        };
        let limits = self.limits;
        let audit = Self::audit(
            actor,
            user,
            "secret.update",
            Some(name),
            json!({ "fields": patch.fields(), "enabled": row.enabled }),
        );
        let record = self.store.change_secrets(owner.id, |secrets| {
            let Some(now) = secrets.iter().find(|s| s.name == name) else {
                return Err(VaultError::NotFound(format!("secret {name}")));
            };
            let len = value_len.unwrap_or_else(|| usize::try_from(now.value_len).unwrap_or(0));
            reject(validate::check_set(
                &shape(&row, len),
                &shapes(secrets, Some(now.id)),
                &limits,
            ))?;
            Ok((
                SecretChange::Update {
                    id: now.id,
                    row: row.clone(),
                },
                audit,
            ))
        })?;
        record
            .map(SecretMeta::from)
            .ok_or_else(|| VaultError::NotFound(format!("secret {name}")))
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
                return Err(VaultError::NotFound(format!("secret {name}")));
            };
            Ok((SecretChange::Delete { id: s.id }, audit))
        })?;
        Ok(())
    }

    /// One secret's metadata.
    pub fn secret(&self, user: &str, name: &str) -> Result<SecretMeta, VaultError> {
        let owner = self.store.user(user)?;
        Ok(self.store.secret(owner.id, name)?.into())
    }

    /// The user's secrets' metadata, sorted by name.
    pub fn secrets(&self, user: &str) -> Result<Vec<SecretMeta>, VaultError> {
        let owner = self.store.user(user)?;
        Ok(self
            .store
            .secrets(owner.id)?
            .into_iter()
            .map(SecretMeta::from)
            .collect())
    }

    /// Opens a secret's value, for injecting it into the user's own session. Never for output.
    #[instrument(skip_all, fields(user = %user, secret = %name))]
    pub fn secret_value(&self, user: &str, name: &str) -> Result<SecretBytes, VaultError> {
        let owner = self.store.user(user)?;
        self.open_secret(&owner, name)
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
