//! The vault: keyport's operations on users, keys, secrets and workspaces, on top of the [`Store`].
//!
//! It owns the store and the master key, applies the validation rules, seals values before they
//! reach the store and opens them only for the daemon's own use, and writes an audit event with
//! every change (names of things and fields, never a value). The CLI, the API and the SSH server
//! all go through it, so they enforce the same rules.

mod ca;
mod lifecycle;
mod live;
mod rotate;
mod secrets;
mod session;
mod users;
mod web;
mod workspace_rules;
mod workspaces;

use std::fmt;
use std::path::{Path, PathBuf};

use keyport_keys::{Binding, KeyError, MasterKey, SealError};

use crate::datadir::{self, DB_FILE};
use crate::keyring::{self, Keyring, KeyringError};
use crate::osuser::OsUserError;
use crate::secrets::{Limits, Violation};
use crate::store::{AuditEvent, Database, MASTER_KEY_ID, Store, StoreError};

pub use ca::{
    CaStatus, CertOrder, SignedCert, Signing, UserCaInfo, WorkspaceAuth, WorkspaceCaStatus,
};
pub use lifecycle::{RequiredStatus, SessionChecks, SourceNote};
pub use rotate::{Rotation, host_name};
pub use session::{Opened, SessionSecrets, SessionUser};
pub use users::{NewUserSpec, TokenIssued, UserKeyInfo};
pub use web::{WebLink, WebSignIn};
pub use workspaces::{
    GrantSpec, HostKeyChange, HostKeySource, Route, WorkspaceGrant, WorkspaceInfo, WorkspaceSpec,
    parse_host_key,
};

/// Why a vault operation failed. Each variant maps to one exit code and one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Input broke rules; every broken rule is listed.
    #[error("{}", join(.0))]
    Invalid(Vec<Violation>),
    /// Input collides with something that exists; every collision is listed.
    #[error("{}", join(.0))]
    Conflict(Vec<Violation>),
    /// The named thing does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// What kind of thing (`user`, `secret`, …).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The master key is missing or wrong.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// A sealed value did not open.
    #[error("a sealed value did not open: {0}")]
    Seal(#[from] SealError),
    /// Key generation or parsing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The password database could not be read.
    #[error(transparent)]
    OsUser(OsUserError),
    /// The data dir could not be created, locked or is not private.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, name } => VaultError::NotFound { kind, name },
            StoreError::Conflict { field, detail } => {
                VaultError::Conflict(vec![Violation::new(field, detail)])
            }
            other => VaultError::Store(other),
        }
    }
}

impl From<OsUserError> for VaultError {
    fn from(e: OsUserError) -> Self {
        match e {
            OsUserError::NoSuchUser(_) => {
                VaultError::Invalid(vec![Violation::new("os-user", e.to_string())])
            }
            OsUserError::Lookup(_) => VaultError::OsUser(e),
        }
    }
}

impl VaultError {
    pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        VaultError::NotFound {
            kind,
            name: name.into(),
        }
    }
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who is doing something, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator using the data-dir CLI, as this OS user.
    Cli(String),
    /// A keyport user (through the API or a session).
    User(String),
    /// keyport itself (bootstrap, rotation at start-up).
    System,
}

impl Actor {
    /// The data-dir CLI, as the OS user running it.
    pub fn cli() -> Self {
        Actor::Cli(
            crate::osuser::current()
                .map(|u| u.name)
                .unwrap_or_else(|_| "unknown".into()),
        )
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Cli(os) => write!(f, "cli:{os}"),
            Actor::User(name) => write!(f, "user:{name}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// The store plus the master key, with keyport's rules.
pub struct Vault {
    store: Store,
    keyring: Keyring,
    limits: Limits,
    policy: Policy,
    data_dir: PathBuf,
    database: Database,
    /// A daemon heard from within this many ms is live (`[replicas] alive_secs`).
    alive_ms: i64,
}

/// The operator's rules for secrets: when they are due for rotation, which are required, and
/// which providers their references may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `[rotation]`.
    pub rotation: crate::config::RotationSettings,
    /// `[[required]]`.
    pub required: Vec<crate::config::Requirement>,
    /// The providers references may name (`[sources.NAME]`).
    pub providers: std::collections::BTreeSet<String>,
}

impl Policy {
    /// Whether a requirement is scoped to OS groups (so sessions need their user's groups).
    pub fn needs_groups(&self) -> bool {
        self.required.iter().any(|r| !r.groups.is_empty())
    }

    /// The policy `config` sets.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            rotation: config.rotation.clone(),
            required: config.required.clone(),
            providers: config.sources.providers.keys().cloned().collect(),
        }
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("data_dir", &self.data_dir)
            .field("master_key", &self.keyring.key.id())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `data_dir`, creating the dir (0700), the database and — only when the
    /// database has never recorded a master key — the master key file (0600). Key set-up runs
    /// under the data dir's lock, so two processes starting on a fresh dir agree on one key.
    pub fn open(data_dir: &Path, limits: Limits) -> Result<Self, VaultError> {
        Self::open_at(data_dir, &Database::File(data_dir.join(DB_FILE)), limits)
    }

    /// As [`Vault::open`], with the store at `database` (the data dir still holds the master
    /// key, and its lock still guards key set-up on this host).
    pub fn open_at(
        data_dir: &Path,
        database: &Database,
        limits: Limits,
    ) -> Result<Self, VaultError> {
        let dir_err = |source| VaultError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        };
        datadir::ensure_private_dir(data_dir).map_err(dir_err)?;
        let _lock = datadir::lock(data_dir).map_err(dir_err)?;
        datadir::remove_stale_temp_files(data_dir).map_err(dir_err)?;
        let mut store = Store::connect(database)?;
        let recorded = store.meta(MASTER_KEY_ID)?;
        let keyring = keyring::load(data_dir, recorded.as_deref())?;
        let key_id = keyring.key.id();
        if recorded.is_none() {
            let stored = store.init_meta(MASTER_KEY_ID, &key_id)?;
            if stored != key_id {
                return Err(KeyringError::Wrong {
                    recorded: stored,
                    loaded: key_id,
                    source_name: "a key created concurrently".into(),
                }
                .into());
            }
        }
        store.set_sealing_key(&key_id);
        Ok(Self {
            store,
            keyring,
            limits,
            policy: Policy::default(),
            data_dir: data_dir.to_path_buf(),
            database: database.clone(),
            alive_ms: 30_000,
        })
    }

    /// The vault, judging rotation and requirements by `policy` (default: the built-in one).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The vault, counting a daemon live when heard from within `alive`.
    pub fn with_alive(mut self, alive: std::time::Duration) -> Self {
        self.alive_ms = i64::try_from(alive.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The lifecycle rules in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the store is.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The per-user limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The id of the master key in use.
    pub fn master_key_id(&self) -> String {
        self.keyring.key.id()
    }

    /// The store, for reads that need no rules (tests, diagnostics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn master(&self) -> &MasterKey {
        &self.keyring.key
    }

    fn audit(
        actor: &Actor,
        user: &str,
        action: &str,
        secret: Option<&str>,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            actor: actor.to_string(),
            user_name: user.to_string(),
            action: action.to_string(),
            secret_name: secret.map(str::to_string),
            detail,
        }
    }
}

fn secret_binding<'a>(user_id: &'a str, name: &'a str) -> Binding<'a> {
    Binding {
        purpose: crate::store::SealedKind::SecretValue.purpose(),
        owner: user_id,
        item: name,
    }
}

fn user_key_binding(user_id: &str) -> Binding<'_> {
    Binding {
        purpose: crate::store::SealedKind::UserKey.purpose(),
        owner: user_id,
        item: "",
    }
}

fn host_key_binding(algorithm: &str) -> Binding<'_> {
    Binding {
        purpose: crate::store::SealedKind::HostKey.purpose(),
        owner: "host",
        item: algorithm,
    }
}
