//! Where the master key comes from, and how it is replaced without risking the data it seals.
//!
//! The key is `KEYPORT_MASTER_KEY` (base64 of 32 bytes) when set, else `<data dir>/master.key`,
//! created 0600 only when the database has never recorded a key. The database records the id of
//! the key its values are sealed under, so a missing or different key is refused at start-up
//! with a message naming the problem, before anything is changed.
//!
//! Rotation with a key file is crash-safe: the new key is first written to `master.key.next`,
//! then every blob is re-sealed in one transaction that also records the new id, then the file
//! is renamed over `master.key`. Whichever step a crash interrupts, the next start finds the key
//! the database names (see [`load`]).
//!
//! Replicas on one PostgreSQL database each have their own key file (or env). Before a
//! rotation the operator stages the new key on every one — `<data dir>/master.key.new`, or
//! `KEYPORT_NEW_MASTER_KEY` — and each reports it in its heartbeat; the rotation seals under
//! the staged key once every live replica holds it, and each replica then adopts it (its next
//! open finds the database naming the staged key, see [`load`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use keyport_keys::{MasterKey, SealError};

use crate::datadir::{self, MASTER_KEY_FILE};

/// The environment variable holding the master key.
pub const MASTER_KEY_ENV: &str = "KEYPORT_MASTER_KEY";
/// The environment variable holding the next master key, for rotation when the key is in env.
pub const NEW_MASTER_KEY_ENV: &str = "KEYPORT_NEW_MASTER_KEY";
const NEXT_SUFFIX: &str = ".next";
/// The key staged for the next rotation, in the data dir.
pub const STAGED_FILE: &str = "master.key.new";

/// Why the master key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The env var does not hold a valid key.
    #[error("{var}: {source}")]
    BadEnv {
        /// Variable name.
        var: &'static str,
        /// What is wrong with it.
        source: SealError,
    },
    /// The key file does not hold a valid key.
    #[error("master key file {path}: {source}")]
    BadFile {
        /// File path.
        path: PathBuf,
        /// What is wrong with it.
        source: SealError,
    },
    /// The database has sealed data but no key is available.
    #[error(
        "the master key is missing: the database's values are sealed under key {recorded}, but \
         {MASTER_KEY_ENV} is not set and {path} does not exist; restore the key file or set \
         {MASTER_KEY_ENV} (nothing was changed)"
    )]
    Missing {
        /// Key id the database records.
        recorded: String,
        /// Where the key file was expected.
        path: PathBuf,
    },
    /// The available key is not the one the database's data is sealed under.
    #[error(
        "wrong master key: the database's values are sealed under key {recorded}, but the key \
         from {source_name} is {loaded}; use the key this data dir was created with (nothing was changed)"
    )]
    Wrong {
        /// Key id the database records.
        recorded: String,
        /// Key id of the loaded key.
        loaded: String,
        /// Where the loaded key came from.
        source_name: String,
    },
    /// Reading or writing a key file failed.
    #[error("master key file {path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The re-seal committed, but moving the new key file into place failed.
    #[error(
        "the rotation committed (values are now sealed under key {new_id}) but {next} could not \
         be moved over master.key: {source}; keyport finishes this at its next start — do not \
         delete {next}"
    )]
    Unfinished {
        /// The new key's id.
        new_id: String,
        /// The `.next` file.
        next: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A fresh key could not be generated.
    #[error("cannot generate a master key: {0}")]
    Generate(SealError),
}

/// Where the loaded master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `KEYPORT_MASTER_KEY`.
    Env,
    /// A key file.
    File(PathBuf),
}

impl KeySource {
    fn name(&self) -> String {
        match self {
            KeySource::Env => MASTER_KEY_ENV.to_string(),
            KeySource::File(path) => path.display().to_string(),
        }
    }
}

/// The master key and where it came from.
#[derive(Debug)]
pub struct Keyring {
    /// The key.
    pub key: MasterKey,
    /// Its source.
    pub source: KeySource,
}

/// Loads the master key for a data dir whose database records `recorded` (None: nothing sealed
/// yet, so a key file may be created). Finishes a rotation a crash interrupted.
pub fn load(data_dir: &Path, recorded: Option<&str>) -> Result<Keyring, KeyringError> {
    let path = data_dir.join(MASTER_KEY_FILE);
    if let Some(text) = std::env::var_os(MASTER_KEY_ENV) {
        let key = MasterKey::from_base64(&text.to_string_lossy()).map_err(|source| {
            KeyringError::BadEnv {
                var: MASTER_KEY_ENV,
                source,
            }
        })?;
        if let Some(recorded) = recorded
            && key.id() != recorded
            && let Some(new) = env_key(NEW_MASTER_KEY_ENV)?
            && new.id() == recorded
        {
            // Rotated elsewhere to the key staged here: seal under it until the operator
            // swaps the variables.
            return Ok(Keyring {
                key: new,
                source: KeySource::Env,
            });
        }
        return check(key, KeySource::Env, recorded);
    }
    let next = next_path(&path);
    if path.exists() {
        let key = read_key_file(&path)?;
        if let Some(recorded) = recorded {
            if key.id() != recorded && next.exists() {
                // Crash after the re-seal committed but before the rename: finish it.
                let new = read_key_file(&next)?;
                if new.id() == recorded {
                    fs::rename(&next, &path).map_err(|source| io_err(&path, source))?;
                    datadir::sync_dir(data_dir).map_err(|source| io_err(data_dir, source))?;
                    return Ok(Keyring {
                        key: new,
                        source: KeySource::File(path),
                    });
                }
            } else if key.id() == recorded && next.exists() {
                // Crash before the re-seal committed: the new key was never used.
                fs::remove_file(&next).map_err(|source| io_err(&next, source))?;
            }
            let staged = data_dir.join(STAGED_FILE);
            if key.id() == recorded
                && staged.exists()
                && read_key_file(&staged).is_ok_and(|k| k.id() == recorded)
            {
                // A rotation to the staged key committed here but stopped before tidying up:
                // that key is the key now, and nothing is staged.
                fs::remove_file(&staged).map_err(|source| io_err(&staged, source))?;
            }
            if key.id() != recorded && staged.exists() && read_key_file(&staged)?.id() == recorded {
                // Another replica rotated to the key staged here: it becomes this one's.
                let new = read_key_file(&staged)?;
                fs::rename(&staged, &path).map_err(|source| io_err(&path, source))?;
                datadir::sync_dir(data_dir).map_err(|source| io_err(data_dir, source))?;
                return Ok(Keyring {
                    key: new,
                    source: KeySource::File(path),
                });
            }
        }
        return check(key, KeySource::File(path), recorded);
    }
    if let Some(recorded) = recorded {
        return Err(KeyringError::Missing {
            recorded: recorded.to_string(),
            path,
        });
    }
    let key = MasterKey::generate().map_err(KeyringError::Generate)?;
    write_key_file(&path, &key)?;
    Ok(Keyring {
        key,
        source: KeySource::File(path),
    })
}

fn check(
    key: MasterKey,
    source: KeySource,
    recorded: Option<&str>,
) -> Result<Keyring, KeyringError> {
    match recorded {
        Some(recorded) if recorded != key.id() => Err(KeyringError::Wrong {
            recorded: recorded.to_string(),
            loaded: key.id(),
            source_name: source.name(),
        }),
        _ => Ok(Keyring { key, source }),
    }
}

/// The key rotation will seal under, made durable before any blob is re-sealed: a new key
/// written to `master.key.next` for a file source, or `KEYPORT_NEW_MASTER_KEY` for an env one.
pub fn prepare_next(keyring: &Keyring) -> Result<MasterKey, KeyringError> {
    match &keyring.source {
        KeySource::Env => {
            let text = std::env::var(NEW_MASTER_KEY_ENV).map_err(|_| KeyringError::BadEnv {
                var: NEW_MASTER_KEY_ENV,
                source: SealError::BadMasterKey(
                    "not set: the master key comes from KEYPORT_MASTER_KEY, so set \
                     KEYPORT_NEW_MASTER_KEY to the new key (e.g. `head -c32 /dev/urandom | base64`)",
                ),
            })?;
            MasterKey::from_base64(&text).map_err(|source| KeyringError::BadEnv {
                var: NEW_MASTER_KEY_ENV,
                source,
            })
        }
        KeySource::File(path) => {
            let key = match staged(keyring)? {
                Some(key) => key,
                None => MasterKey::generate().map_err(KeyringError::Generate)?,
            };
            write_key_file(&next_path(path), &key)?;
            Ok(key)
        }
    }
}

/// The key staged for the next rotation: `master.key.new` beside a key file, or
/// `KEYPORT_NEW_MASTER_KEY` beside `KEYPORT_MASTER_KEY`.
pub fn staged(keyring: &Keyring) -> Result<Option<MasterKey>, KeyringError> {
    match &keyring.source {
        KeySource::Env => env_key(NEW_MASTER_KEY_ENV),
        KeySource::File(path) => {
            let staged = path.with_file_name(STAGED_FILE);
            if staged.exists() {
                read_key_file(&staged).map(Some)
            } else {
                Ok(None)
            }
        }
    }
}

fn env_key(var: &'static str) -> Result<Option<MasterKey>, KeyringError> {
    let Some(text) = std::env::var_os(var) else {
        return Ok(None);
    };
    MasterKey::from_base64(&text.to_string_lossy())
        .map(Some)
        .map_err(|source| KeyringError::BadEnv { var, source })
}

/// After the re-seal committed: moves `master.key.next` into place (file source only), after
/// checking it holds the key the data is now sealed under.
pub fn commit_next(keyring: &Keyring, new_id: &str) -> Result<(), KeyringError> {
    let KeySource::File(path) = &keyring.source else {
        return Ok(());
    };
    let next = next_path(path);
    let unfinished = |source| KeyringError::Unfinished {
        new_id: new_id.to_string(),
        next: next.clone(),
        source,
    };
    let key = read_key_file(&next)?;
    if key.id() != new_id {
        return Err(unfinished(io::Error::other(format!(
            "it holds key {}, not {new_id}",
            key.id()
        ))));
    }
    fs::rename(&next, path).map_err(unfinished)?;
    // A staged key is now the key: nothing is left to stage.
    let staged = path.with_file_name(STAGED_FILE);
    if read_key_file(&staged).is_ok_and(|k| k.id() == new_id) {
        let _ = fs::remove_file(&staged);
    }
    if let Some(dir) = path.parent() {
        datadir::sync_dir(dir).map_err(unfinished)?;
    }
    Ok(())
}

/// After a failed re-seal: removes `master.key.next`, which sealed nothing.
pub fn abandon_next(keyring: &Keyring) {
    if let KeySource::File(path) = &keyring.source {
        let _ = fs::remove_file(next_path(path));
    }
}

fn next_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(NEXT_SUFFIX);
    PathBuf::from(name)
}

fn read_key_file(path: &Path) -> Result<MasterKey, KeyringError> {
    let text =
        zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|source| io_err(path, source))?);
    MasterKey::from_base64(&text).map_err(|source| KeyringError::BadFile {
        path: path.to_path_buf(),
        source,
    })
}

fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), KeyringError> {
    let mut text = key.to_base64();
    text.push('\n');
    datadir::write_private_file(path, text.as_bytes()).map_err(|source| io_err(path, source))
}

fn io_err(path: &Path, source: io::Error) -> KeyringError {
    KeyringError::Io {
        path: path.to_path_buf(),
        source,
    }
}
