//! What the daemon's live file-secret watcher (`ssh::live`) needs from the vault: which users
//! something happened to since it last looked — every change to a user's secrets is audited
//! under that user's name, in the change's own transaction — and which secret each file
//! keyport wrote for a user still stands for, so a pass can name what it removed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Vault, VaultError};

/// Audit rows read at a time.
const PAGE: i64 = 1000;

impl Vault {
    /// The users named by audit events after `after` up to `upto` (audit ids, as
    /// [`Vault::change_mark`] gives them).
    pub fn users_audited(&self, after: i64, upto: i64) -> Result<BTreeSet<String>, VaultError> {
        let mut users = BTreeSet::new();
        let mut from = after;
        while from < upto {
            let page = self.store.audit_page(None, 0, from, PAGE)?;
            let Some(last) = page.last() else {
                break;
            };
            from = last.id;
            users.extend(
                page.into_iter()
                    .filter(|event| event.id <= upto)
                    .map(|event| event.user_name),
            );
            if from >= upto {
                break;
            }
        }
        Ok(users)
    }

    /// The files keyport wrote for `user` at `place` (an OS account, or a workspace login's
    /// ledger place), each with the secret it was written for.
    pub fn written_files(
        &self,
        user: &str,
        place: &str,
    ) -> Result<BTreeMap<String, String>, VaultError> {
        Ok(self
            .store
            .files(place)?
            .into_iter()
            .filter(|file| file.user_name == user)
            .map(|file| (file.path, file.secret_name))
            .collect())
    }
}
