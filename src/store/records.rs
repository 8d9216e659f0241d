//! The typed records that cross the [`Store`](super::Store) interface.

use serde::Serialize;

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserRecord {
    /// Row id.
    #[serde(skip)]
    #[schema(ignore)]
    pub id: i64,
    /// keyport user name.
    pub name: String,
    /// Whether the user administers keyport.
    pub is_admin: bool,
    /// The OS account their sessions run as (when the daemon runs as root).
    pub os_user: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// keyport user name.
    pub name: String,
    /// Admin flag.
    pub is_admin: bool,
    /// OS account.
    pub os_user: String,
}

/// A login key to store.
#[derive(Debug, Clone)]
pub struct NewLoginKey {
    /// `ssh-ed25519`, …
    pub algorithm: String,
    /// Canonical public key line (no comment).
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// The comment the line carried.
    pub comment: String,
}

/// A stored login key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LoginKeyRecord {
    /// Row id.
    #[serde(skip)]
    #[schema(ignore)]
    pub id: i64,
    /// Algorithm name.
    pub algorithm: String,
    /// Canonical public key line.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// Comment.
    pub comment: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A user key pair to store; the private half is already sealed.
#[derive(Debug, Clone)]
pub struct NewUserKey {
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: String,
    /// OpenSSH public key line.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// Sealed private key.
    pub private_sealed: Vec<u8>,
}

/// A stored key pair: a user's, or the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairRecord {
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: String,
    /// OpenSSH public key line.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// Sealed private key.
    pub private_sealed: Vec<u8>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A stored secret's metadata. The sealed value is fetched separately, only when needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Row id.
    pub id: i64,
    /// Secret name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Env target.
    pub env_name: Option<String>,
    /// File target as given.
    pub file_path: Option<String>,
    /// File target with `~` resolved.
    pub file_resolved: Option<String>,
    /// Whether it is injected.
    pub enabled: bool,
    /// Value length in bytes.
    pub value_len: i64,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
    /// `token`, `password`, `key`, `certificate`, `config` or `other`.
    pub kind: String,
    /// Its own rotation age in seconds (0: never); `None`: its kind's.
    pub rotate_after_secs: Option<i64>,
    /// Its own masking choice; `None`: its kind's.
    pub mask: Option<bool>,
    /// When the value last changed, ms since the epoch.
    pub value_updated_at: i64,
    /// The reference its value is resolved from; `None`: its sealed value.
    pub source: Option<String>,
    /// Whether a session is refused when its value cannot be had.
    pub required: bool,
}

/// The columns of a secret to write.
#[derive(Debug, Clone)]
pub struct SecretRow {
    /// Secret name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Env target.
    pub env_name: Option<String>,
    /// File target as given.
    pub file_path: Option<String>,
    /// File target with `~` resolved.
    pub file_resolved: Option<String>,
    /// Whether it is injected.
    pub enabled: bool,
    /// New sealed value; `None` keeps the stored one (updates only).
    pub value_sealed: Option<Vec<u8>>,
    /// Length of the new value; `None` with `value_sealed`.
    pub value_len: Option<i64>,
    /// The kind's stored word.
    pub kind: String,
    /// Its own rotation age in seconds (0: never); `None`: its kind's.
    pub rotate_after_secs: Option<i64>,
    /// Its own masking choice; `None`: its kind's.
    pub mask: Option<bool>,
    /// The reference its value is resolved from; `None`: its sealed value.
    pub source: Option<String>,
    /// Whether a session is refused when its value cannot be had.
    pub required: bool,
}

/// An API token to store: its name and the hash of its text.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Token name, unique per user.
    pub name: String,
    /// Hex SHA-256 of the token text.
    pub hash: String,
}

/// A stored API token, as listed (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Token name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last use (to the minute), ms since the epoch.
    pub last_used_at: Option<i64>,
}

/// One change to a user's secrets.
#[derive(Debug, Clone)]
pub enum SecretChange {
    /// A new secret (`value_sealed` must be set).
    Insert(SecretRow),
    /// A changed secret.
    Update {
        /// Row id.
        id: i64,
        /// New columns.
        row: SecretRow,
    },
    /// A removed secret.
    Delete {
        /// Row id.
        id: i64,
    },
}

/// An audit event to record. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who did it: `user:alice`, `cli:root`, `system`.
    pub actor: String,
    /// Whose account it concerns.
    pub user_name: String,
    /// What happened: `secret.create`, `user.remove`, …
    pub action: String,
    /// Which secret, if any.
    pub secret_name: Option<String>,
    /// Further names (changed fields, session id, source address…).
    pub detail: serde_json::Value,
}

/// A recorded audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Row id.
    pub id: i64,
    /// When, ms since the epoch.
    pub at: i64,
    /// Who did it.
    pub actor: String,
    /// Whose account it concerns.
    pub user_name: String,
    /// What happened.
    pub action: String,
    /// Which secret, if any.
    pub secret_name: Option<String>,
    /// Further names.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// A file keyport wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// OS user whose file it is.
    pub os_user: String,
    /// Absolute path.
    pub path: String,
    /// keyport user it was written for.
    pub user_name: String,
    /// Secret it holds.
    pub secret_name: String,
    /// Sealed SHA-256 of what was written.
    pub hash_sealed: Vec<u8>,
    /// When, ms since the epoch.
    pub written_at: i64,
}

/// A file secret's last delivery to one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The secret's name.
    pub secret_name: String,
    /// The OS account, or `workspace:<id>:<login>` for a workspace login.
    pub place: String,
    /// Where it was to be written there.
    pub path: String,
    /// `written`, `unchanged` or `failed`.
    pub outcome: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// When, ms since the epoch.
    pub at: i64,
}

/// The kinds of sealed column, each with what its blobs are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// `secrets.value_sealed`: owner = user id, item = secret name.
    SecretValue,
    /// `user_keys.private_sealed`: owner = user id, item empty.
    UserKey,
    /// `host_keys.private_sealed`: owner `host`, item = algorithm.
    HostKey,
    /// `secret_files.hash_sealed`: owner = OS user, item = path.
    FileHash,
    /// `user_cas.private_sealed`: owner `keyport`, item = the CA's fingerprint.
    UserCa,
}

impl SealedKind {
    /// Every kind, for rotation.
    pub const ALL: [SealedKind; 5] = [
        SealedKind::SecretValue,
        SealedKind::UserKey,
        SealedKind::HostKey,
        SealedKind::FileHash,
        SealedKind::UserCa,
    ];

    /// The seal purpose string this kind is bound to.
    pub fn purpose(self) -> &'static str {
        match self {
            SealedKind::SecretValue => "secret",
            SealedKind::UserKey => "user-key",
            SealedKind::HostKey => "host-key",
            SealedKind::FileHash => "file-hash",
            SealedKind::UserCa => "user-ca",
        }
    }

    /// (select owner, item, blob; update the blob `?1` of the row `?2` owner, `?3` item).
    pub(super) fn sql(self) -> (&'static str, &'static str) {
        match self {
            SealedKind::SecretValue => (
                "SELECT CAST(user_id AS TEXT), name, value_sealed FROM secrets",
                "UPDATE secrets SET value_sealed = ?1
                 WHERE CAST(user_id AS TEXT) = ?2 AND name = ?3",
            ),
            SealedKind::UserKey => (
                "SELECT CAST(user_id AS TEXT), '', private_sealed FROM user_keys",
                "UPDATE user_keys SET private_sealed = ?1
                 WHERE CAST(user_id AS TEXT) = ?2 AND ?3 = ''",
            ),
            SealedKind::HostKey => (
                "SELECT 'host', algorithm, private_sealed FROM host_keys",
                "UPDATE host_keys SET private_sealed = ?1 WHERE ?2 = 'host' AND algorithm = ?3",
            ),
            SealedKind::FileHash => (
                "SELECT os_user, path, hash_sealed FROM secret_files",
                "UPDATE secret_files SET hash_sealed = ?1 WHERE os_user = ?2 AND path = ?3",
            ),
            SealedKind::UserCa => (
                "SELECT 'keyport', fingerprint, private_sealed FROM user_cas",
                "UPDATE user_cas SET private_sealed = ?1
                 WHERE ?2 = 'keyport' AND fingerprint = ?3",
            ),
        }
    }
}

/// A stored workspace (relay mode): an upstream sshd and the login used there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// Row id (never reused).
    pub id: i64,
    /// Workspace name, unique.
    pub name: String,
    /// `HOST:PORT` of its sshd.
    pub address: String,
    /// The login on the workspace, unless a grant overrides it.
    pub os_user: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change (to it, its host keys or its grants), ms since the epoch.
    pub updated_at: i64,
    /// How relay mode logs in there: `key` or `ca`.
    pub auth: String,
}

/// A workspace to create.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    /// Workspace name.
    pub name: String,
    /// `HOST:PORT`.
    pub address: String,
    /// The login on the workspace.
    pub os_user: String,
    /// `key` or `ca`.
    pub auth: String,
}

/// A host key pinned for a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WorkspaceHostKeyRecord {
    /// Canonical OpenSSH public key line, no comment.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// How it was pinned: `pinned` (given by an admin), `scan` (read by `--scan` and
    /// confirmed), `announced` (proved by the upstream with `hostkeys-prove`).
    pub source: String,
    /// When it was pinned, ms since the epoch.
    pub added_at: i64,
}

/// A host key to pin.
#[derive(Debug, Clone)]
pub struct NewWorkspaceHostKey {
    /// Canonical OpenSSH public key line, no comment.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// `pinned`, `scan` or `announced`.
    pub source: String,
}

/// A user's grant to use a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceGrantRecord {
    /// The user's row id.
    pub user_id: i64,
    /// The user's name.
    pub user_name: String,
    /// Whether the user owns the workspace.
    pub owner: bool,
    /// This user's login on the workspace, overriding the workspace's; `None` = the workspace's.
    pub os_user: Option<String>,
    /// When it was granted, ms since the epoch.
    pub created_at: i64,
}
