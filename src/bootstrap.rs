//! What `keyport serve` does before it listens: make sure the host key exists, and on the very
//! first start create an admin user for the OS user running it, with their `~/.ssh/*.pub` keys
//! as login keys and CLI credentials written 0600, so the `ssh -p PORT USER@HOST` that serve
//! prints and `keyport secret create …` work right after.

use std::path::PathBuf;

use tracing::warn;

use crate::config::ClientConfig;
use crate::datadir;
use crate::secrets::validate;
use crate::vault::{NewUserSpec, TokenIssued, Vault, VaultError};

/// The admin user created on first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstUser {
    /// Their name (the OS user's).
    pub name: String,
    /// How many login keys were found in `~/.ssh`.
    pub login_keys: usize,
    /// Where their CLI credentials were written.
    pub credentials: PathBuf,
}

/// What start-up found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    /// The host key's `SHA256:` fingerprint.
    pub host_fingerprint: String,
    /// Set when this start created the first user.
    pub first_user: Option<FirstUser>,
}

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A vault operation failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The CLI credentials file could not be written.
    #[error("cannot write CLI credentials {path}: {source}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Ensures the host key, and bootstraps the first admin user when there is no user yet.
/// `api_url` goes into the credentials file.
pub fn prepare(vault: &mut Vault, api_url: &str) -> Result<Startup, BootstrapError> {
    let host_fingerprint = vault.host_key()?.fingerprint();
    let first_user = if vault.users()?.is_empty() {
        bootstrap_admin(vault, api_url)?
    } else {
        None
    };
    Ok(Startup {
        host_fingerprint,
        first_user,
    })
}

/// The credentials file is written before the user exists, with a token only the coming
/// transaction makes valid: a crash in between leaves a dead token in a file and no user, so
/// the next start simply bootstraps again. The reverse order could leave an admin nobody can
/// log in to the API as.
fn bootstrap_admin(vault: &mut Vault, api_url: &str) -> Result<Option<FirstUser>, BootstrapError> {
    let os = crate::osuser::current().map_err(VaultError::from)?;
    if let Err(v) = validate::check_user_name(&os.name) {
        warn!(os_user = %os.name, rule = %v, "no first user created; add one with `keyport user add`");
        return Ok(None);
    }
    let login_keys = ssh_public_keys();
    let spec = NewUserSpec {
        name: os.name.clone(),
        admin: true,
        os_user: Some(os.name.clone()),
        login_keys: login_keys.clone(),
        ..NewUserSpec::default()
    };
    let token = TokenIssued::generate()?;
    let credentials = ClientConfig::path();
    ClientConfig {
        url: api_url.to_string(),
        token: token.token.to_string(),
    }
    .write(&credentials)
    .map_err(|source| BootstrapError::Credentials {
        path: credentials.clone(),
        source,
    })?;
    vault.add_first_admin(&spec, &token)?;
    Ok(Some(FirstUser {
        name: os.name,
        login_keys: login_keys.len(),
        credentials,
    }))
}

/// The public key lines in `~/.ssh/*.pub` that parse; others are skipped with a warning.
fn ssh_public_keys() -> Vec<String> {
    let dir = datadir::home_dir().join(".ssh");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| match std::fs::read_to_string(&p) {
            Ok(text) if keyport_keys::LoginKey::parse(&text).is_ok() => Some(text.trim().to_string()),
            _ => {
                warn!(path = %p.display(), "skipping a .pub file that is not a supported public key");
                None
            }
        })
        .collect()
}
