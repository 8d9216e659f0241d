//! What an SSH session needs from the vault: is this key one of the user's login keys, the
//! user's enabled secrets as they are *now* (so a change shows in the next session), and a
//! record of each use.

use keyport_keys::{LoginKey, PublicKey, SecretBytes};
use serde_json::Value;

use super::{Actor, Vault, VaultError, secret_binding};
use crate::store::UserRecord;

/// The secrets a new session gets.
#[derive(Debug, Default)]
pub struct SessionSecrets {
    /// Enabled env secrets: (env name, value).
    pub env: Vec<(String, SecretBytes)>,
    /// Enabled file secrets: (secret name, resolved path, value).
    pub files: Vec<(String, String, SecretBytes)>,
}

impl Vault {
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

    /// The user's enabled secrets, opened, and the names of all of them.
    pub fn session_secrets(&self, user: &str) -> Result<(SessionSecrets, Vec<String>), VaultError> {
        let owner = self.store.user(user)?;
        let uid = owner.id.to_string();
        let mut out = SessionSecrets::default();
        let mut names = Vec::new();
        for record in self
            .store
            .secrets(owner.id)?
            .into_iter()
            .filter(|s| s.enabled)
        {
            let blob = self.store.secret_sealed(owner.id, &record.name)?;
            let value = self
                .master()
                .unseal(secret_binding(&uid, &record.name), &blob)?;
            names.push(record.name.clone());
            if let Some(env) = &record.env_name {
                out.env.push((env.clone(), value.clone()));
            }
            if let Some(path) = record.file_resolved {
                out.files.push((record.name, path, value));
            }
        }
        Ok((out, names))
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
