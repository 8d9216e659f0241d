//! `keyport admin rotate-master-key`: re-seal every sealed value under a new master key.

use keyport_keys::{Binding, MasterKey};
use serde_json::json;

use super::{Actor, Vault, VaultError};
use crate::keyring::{self, Keyring};

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Id of the retired key.
    pub old_id: String,
    /// Id of the key now in use.
    pub new_id: String,
    /// How many sealed values were re-sealed.
    pub resealed: usize,
}

impl Vault {
    /// Re-seals every sealed value under a new master key in one transaction. With a key file,
    /// the new key is durable in `master.key.next` before anything is re-sealed and is moved
    /// over `master.key` after the commit; with `KEYPORT_MASTER_KEY`, the new key comes from
    /// `KEYPORT_NEW_MASTER_KEY` and the operator swaps the variables afterwards.
    pub fn rotate_master_key(&mut self, actor: &Actor) -> Result<Rotation, VaultError> {
        // One rotation at a time: the lock keeps a second one from replacing master.key.next
        // under the first. Other writers are stopped by the store's key-id guard.
        let _lock = crate::datadir::lock(&self.data_dir).map_err(|source| VaultError::DataDir {
            path: self.data_dir.clone(),
            source,
        })?;
        let new = keyring::prepare_next(&self.keyring)?;
        let old_id = self.keyring.key.id();
        let new_id = new.id();
        let audit = Self::audit(
            actor,
            "",
            "master-key.rotate",
            None,
            json!({ "old_key_id": old_id, "new_key_id": new_id }),
        );
        let old = &self.keyring.key;
        let result = self.store.reseal_all(
            &new_id,
            |kind, owner, item, blob| {
                let binding = Binding {
                    purpose: kind.purpose(),
                    owner,
                    item,
                };
                let plain = old.unseal(binding, blob)?;
                Ok::<_, VaultError>(new.seal(binding, plain.expose())?)
            },
            &audit,
        );
        let resealed = match result {
            Ok(n) => n,
            Err(e) => {
                keyring::abandon_next(&self.keyring);
                return Err(e);
            }
        };
        keyring::commit_next(&self.keyring, &new_id)?;
        let source = self.keyring.source.clone();
        self.keyring = Keyring { key: new, source };
        Ok(Rotation {
            old_id,
            new_id,
            resealed,
        })
    }

    /// Whether `key` is the master key this vault uses (for tests and diagnostics).
    pub fn uses_key(&self, key: &MasterKey) -> bool {
        key.id() == self.keyring.key.id()
    }
}
