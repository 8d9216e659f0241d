//! `keyport admin rotate-master-key`: re-seal every sealed value under a new master key, once
//! every live daemon on the database holds it; and the daemons' heartbeats it relies on.

use keyport_keys::{Binding, MasterKey};
use serde_json::json;

use super::{Actor, Vault, VaultError};
use crate::keyring::{self, Keyring};
use crate::secrets::Violation;
use crate::store::{MASTER_KEY_ID, NodeRecord};

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
        if new_id == old_id {
            keyring::abandon_next(&self.keyring);
            return Err(VaultError::Conflict(vec![Violation::new(
                "master-key",
                format!(
                    "the staged key ({} or {}) is {old_id}, the key in use: stage a new one",
                    keyring::STAGED_FILE,
                    keyring::NEW_MASTER_KEY_ENV
                ),
            )]));
        }
        // Replicas with their own key: each must hold the new key before anything is sealed
        // under it (warpgate's rule). The re-seal itself is the compare-and-swap: it commits
        // only if the database still names the old key.
        if let Err(e) = self.check_nodes_hold(&new_id) {
            keyring::abandon_next(&self.keyring);
            return Err(e);
        }
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

/// A data dir as heartbeats record it: absolute, so two processes naming it differently agree.
fn dir_text(dir: &std::path::Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// This host's name, as heartbeats record it.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

impl Vault {
    /// Writes this daemon's heartbeat (node `id`, started at `started_ms`): the master key it
    /// seals with and the one staged for the next rotation.
    pub fn heartbeat(&mut self, id: &str, started_ms: i64) -> Result<(), VaultError> {
        // An unreadable staged key is reported as none (a rotation then waits for this
        // replica), not a missing heartbeat (which would make it look gone).
        let next_key_id = match keyring::staged(&self.keyring) {
            Ok(staged) => staged.map(|k| k.id()),
            Err(e) => {
                tracing::warn!(error = %e, "the staged master key cannot be read");
                None
            }
        };
        let node = NodeRecord {
            id: id.to_string(),
            host: host_name(),
            data_dir: dir_text(&self.data_dir),
            version: env!("CARGO_PKG_VERSION").to_string(),
            key_id: self.keyring.key.id(),
            next_key_id,
            started_at: started_ms,
            seen_at: crate::store::now_ms(),
        };
        Ok(self.store.heartbeat(&node, FORGET_MS)?)
    }

    /// Removes this daemon's heartbeat (at its clean shutdown).
    pub fn leave(&mut self, id: &str) -> Result<(), VaultError> {
        Ok(self.store.remove_node(id)?)
    }

    /// Every daemon with a heartbeat row, most recently seen first.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, VaultError> {
        Ok(self.store.nodes()?)
    }

    /// The key the database's values are sealed under, when it is not this vault's (a
    /// rotation by another process or replica): the vault must be opened again.
    pub fn rotated_elsewhere(&self) -> Result<Option<String>, VaultError> {
        let recorded = self.store.meta(MASTER_KEY_ID)?;
        Ok(recorded.filter(|id| *id != self.keyring.key.id()))
    }

    /// Refuses a rotation to `new_id` while a live daemon (heard from within `alive`) could
    /// not open what it seals: one that neither holds nor has staged `new_id`, and does not
    /// share this data dir's key file (same host and data dir).
    fn check_nodes_hold(&self, new_id: &str) -> Result<(), VaultError> {
        let now = crate::store::now_ms();
        let host = host_name();
        let here = dir_text(&self.data_dir);
        let lacking: Vec<Violation> = self
            .store
            .nodes()?
            .into_iter()
            .filter(|n| now - n.seen_at <= self.alive_ms)
            .filter(|n| n.key_id != new_id && n.next_key_id.as_deref() != Some(new_id))
            .filter(|n| !(n.host == host && n.data_dir == here))
            .map(|n| {
                Violation::new(
                    "master-key",
                    format!(
                        "replica {} on {} (data dir {}, seen {} s ago) does not hold the new key \
                         {new_id}: stage it there first ({} in its data dir, or {}), then \
                         wait for its next heartbeat",
                        n.id,
                        n.host,
                        n.data_dir,
                        (now - n.seen_at) / 1000,
                        keyring::STAGED_FILE,
                        keyring::NEW_MASTER_KEY_ENV
                    ),
                )
            })
            .collect();
        if lacking.is_empty() {
            Ok(())
        } else {
            Err(VaultError::Conflict(lacking))
        }
    }
}

/// A heartbeat row silent this long is removed (its daemon is long gone).
const FORGET_MS: i64 = 24 * 3600 * 1000;
