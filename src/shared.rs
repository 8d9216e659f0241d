//! The daemon's one vault, shared by its listeners (API, SSH): calls run on a blocking thread
//! (SQLite blocks), one at a time, and a vault that finds the master key rotated by another
//! process is reopened with the new key and the call retried.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::secrets::Limits;
use crate::store::StoreError;
use crate::vault::{Vault, VaultError};

/// A cloneable handle to the daemon's vault.
#[derive(Clone)]
pub struct VaultHandle {
    vault: Arc<Mutex<Vault>>,
    reopen: Arc<(PathBuf, Limits, crate::vault::Policy)>,
}

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
            *vault.limits(),
            vault.policy().clone(),
        ));
        Self {
            vault: Arc::new(Mutex::new(vault)),
            reopen,
        }
    }

    /// The lifecycle rules the vault was opened with (read without taking the vault).
    pub fn policy(&self) -> &crate::vault::Policy {
        &self.reopen.2
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
                    *guard = Vault::open(&reopen.0, reopen.1)?.with_policy(reopen.2.clone());
                    f(&mut guard)
                }
                other => other,
            }
        })
        .await
        .map_err(|e| SharedError::Task(e.to_string()))?
        .map_err(SharedError::from)
    }
}
