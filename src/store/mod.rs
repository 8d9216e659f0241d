//! The one place keyport's state is persisted: an embedded SQLite database.
//!
//! [`Store`] is the narrow interface the rest of keyport uses: typed records in, typed records
//! out, and no SQL or rusqlite type outside this module, so a PostgreSQL backend can implement
//! the same methods later. It opens the database in WAL mode with `synchronous = FULL` (a
//! committed change survives `kill -9` and power loss), foreign keys on and a busy timeout, and
//! applies the embedded, append-only migrations. Every change that is audited writes its audit
//! event in the same transaction, so there is never a change without its event or the reverse.
//! Sealed bytes pass through unopened: this module never sees a master key.

mod records;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

pub use records::*;

/// Embedded migrations, applied in order; append only.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/0001_init.sql"))];

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule would be broken.
    #[error("{field}: {detail}")]
    Conflict {
        /// The field that must be unique.
        field: &'static str,
        /// What it collides with.
        detail: String,
    },
    /// The database was written by a newer keyport.
    #[error(
        "database schema version {found} is newer than this keyport knows ({known}); upgrade keyport"
    )]
    TooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// The database could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// Database path.
        path: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other database failure.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON column could not be read.
    #[error("database holds malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, as stored in every timestamp column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The SQLite store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed, mode 0600) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        // Create the file ourselves so it is 0600 from its first byte; SQLite gives the -wal
        // and -shm files the same mode as the database file.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(Box::new(e)))?;
        let conn = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })?)
    }

    /// `PRAGMA integrity_check`: `"ok"` when the database is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    // ---- meta ------------------------------------------------------------------------------

    /// A value from the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a value in the `meta` table.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Whether any sealed value is stored (so losing the master key would lose data).
    pub fn has_sealed_data(&self) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM secrets) OR EXISTS (SELECT 1 FROM user_keys)
                 OR EXISTS (SELECT 1 FROM host_keys) OR EXISTS (SELECT 1 FROM secret_files)",
            [],
            |r| r.get(0),
        )?)
    }

    // ---- users -----------------------------------------------------------------------------

    /// Creates a user with their login keys and the key pair `seal_key` returns, in one
    /// transaction. `seal_key` gets the new user's id, which the sealed key is bound to.
    pub fn create_user<E>(
        &mut self,
        user: &NewUser,
        login_keys: &[NewLoginKey],
        audit: &AuditEvent,
        seal_key: impl FnOnce(i64) -> Result<NewUserKey, E>,
    ) -> Result<UserRecord, E>
    where
        E: From<StoreError>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO users (name, is_admin, os_user, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![user.name, user.is_admin, user.os_user, now],
        )
        .map_err(|e| {
            conflict(e, "user", || {
                format!("a user named {} already exists", user.name)
            })
        })?;
        let id = tx.last_insert_rowid();
        put_user_key(&tx, id, &seal_key(id)?, now)?;
        for login in login_keys {
            insert_login_key(&tx, id, login, now)?;
        }
        insert_audit(&tx, audit)?;
        let record = query_user(&tx, &user.name)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(record)
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Result<UserRecord> {
        query_user(&self.conn, name)
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, is_admin, os_user, created_at, updated_at FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many users exist.
    pub fn user_count(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
    }

    /// Removes a user and, by cascade, their secrets, key pair, login keys and tokens.
    pub fn remove_user(&mut self, name: &str, audit: &AuditEvent) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM users WHERE name = ?1", [name])? == 0 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    // ---- login keys ------------------------------------------------------------------------

    /// The user's login keys, oldest first.
    pub fn login_keys(&self, user_id: i64) -> Result<Vec<LoginKeyRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, algorithm, public_key, fingerprint, comment, created_at
             FROM login_keys WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([user_id], |r| {
            Ok(LoginKeyRecord {
                id: r.get(0)?,
                algorithm: r.get(1)?,
                public_key: r.get(2)?,
                fingerprint: r.get(3)?,
                comment: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds login keys to a user, all or none.
    pub fn add_login_keys(
        &mut self,
        user_id: i64,
        keys: &[NewLoginKey],
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        for key in keys {
            insert_login_key(&tx, user_id, key, now)?;
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes the user's login key with this fingerprint.
    pub fn remove_login_key(
        &mut self,
        user_id: i64,
        fingerprint: &str,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "DELETE FROM login_keys WHERE user_id = ?1 AND fingerprint = ?2",
            params![user_id, fingerprint],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("login key {fingerprint}")));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    // ---- user keys ---------------------------------------------------------------------------

    /// The user's key pair (private half sealed).
    pub fn user_key(&self, user_id: i64) -> Result<UserKeyRecord> {
        self.conn
            .query_row(
                "SELECT algorithm, public_key, fingerprint, private_sealed, created_at
                 FROM user_keys WHERE user_id = ?1",
                [user_id],
                |r| {
                    Ok(UserKeyRecord {
                        algorithm: r.get(0)?,
                        public_key: r.get(1)?,
                        fingerprint: r.get(2)?,
                        private_sealed: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound("user key".into()))
    }

    /// Replaces the user's key pair.
    pub fn replace_user_key(
        &mut self,
        user_id: i64,
        key: &NewUserKey,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        put_user_key(&tx, user_id, key, now_ms())?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    // ---- host keys ---------------------------------------------------------------------------

    /// The host key for `algorithm`, if one was created.
    pub fn host_key(&self, algorithm: &str) -> Result<Option<HostKeyRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT algorithm, public_key, fingerprint, private_sealed, created_at
                 FROM host_keys WHERE algorithm = ?1",
                [algorithm],
                |r| {
                    Ok(HostKeyRecord {
                        algorithm: r.get(0)?,
                        public_key: r.get(1)?,
                        fingerprint: r.get(2)?,
                        private_sealed: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Stores a host key unless one for its algorithm exists; returns the one stored.
    pub fn insert_host_key(&mut self, key: &HostKeyRecord) -> Result<HostKeyRecord> {
        self.conn.execute(
            "INSERT INTO host_keys (algorithm, public_key, fingerprint, private_sealed, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (algorithm) DO NOTHING",
            params![
                key.algorithm,
                key.public_key,
                key.fingerprint,
                key.private_sealed,
                key.created_at
            ],
        )?;
        self.host_key(&key.algorithm)?
            .ok_or_else(|| StoreError::NotFound("host key".into()))
    }

    // ---- secrets -----------------------------------------------------------------------------

    /// The user's secrets (metadata only), sorted by name.
    pub fn secrets(&self, user_id: i64) -> Result<Vec<SecretRecord>> {
        query_secrets(&self.conn, user_id)
    }

    /// One secret's metadata.
    pub fn secret(&self, user_id: i64, name: &str) -> Result<SecretRecord> {
        self.conn
            .query_row(
                &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE user_id = ?1 AND name = ?2"),
                params![user_id, name],
                secret_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("secret {name}")))
    }

    /// One secret's sealed value.
    pub fn secret_sealed(&self, user_id: i64, name: &str) -> Result<Vec<u8>> {
        self.conn
            .query_row(
                "SELECT value_sealed FROM secrets WHERE user_id = ?1 AND name = ?2",
                params![user_id, name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("secret {name}")))
    }

    /// Reads the user's secrets and applies the change `decide` returns, in one write
    /// transaction: no other writer can slip in between the check and the write, so
    /// validation against "the other secrets" holds when the change lands.
    pub fn change_secrets<E>(
        &mut self,
        user_id: i64,
        decide: impl FnOnce(&[SecretRecord]) -> Result<(SecretChange, AuditEvent), E>,
    ) -> Result<Option<SecretRecord>, E>
    where
        E: From<StoreError>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let current = query_secrets(&tx, user_id)?;
        let (change, audit) = decide(&current)?;
        let now = now_ms();
        let name = match &change {
            SecretChange::Insert(row) => {
                tx.execute(
                    "INSERT INTO secrets (user_id, name, description, env_name, env_key,
                         file_path, file_resolved, enabled, value_sealed, value_len,
                         created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
                    params![
                        user_id,
                        row.name,
                        row.description,
                        row.env_name,
                        row.env_name.as_ref().map(|e| e.to_ascii_uppercase()),
                        row.file_path,
                        row.file_resolved,
                        row.enabled,
                        row.value_sealed,
                        row.value_len,
                        now
                    ],
                )
                .map_err(secret_conflict)?;
                Some(row.name.clone())
            }
            SecretChange::Update { id, row } => {
                tx.execute(
                    "UPDATE secrets SET description = ?2, env_name = ?3, env_key = ?4,
                         file_path = ?5, file_resolved = ?6, enabled = ?7,
                         value_sealed = COALESCE(?8, value_sealed),
                         value_len = COALESCE(?9, value_len), updated_at = ?10
                     WHERE id = ?1",
                    params![
                        id,
                        row.description,
                        row.env_name,
                        row.env_name.as_ref().map(|e| e.to_ascii_uppercase()),
                        row.file_path,
                        row.file_resolved,
                        row.enabled,
                        row.value_sealed,
                        row.value_len,
                        now
                    ],
                )
                .map_err(secret_conflict)?;
                Some(row.name.clone())
            }
            SecretChange::Delete { id } => {
                tx.execute("DELETE FROM secrets WHERE id = ?1", [id])
                    .map_err(StoreError::from)?;
                None
            }
        };
        insert_audit(&tx, &audit)?;
        let record = match name {
            Some(name) => Some(
                tx.query_row(
                    &format!(
                        "SELECT {SECRET_COLUMNS} FROM secrets WHERE user_id = ?1 AND name = ?2"
                    ),
                    params![user_id, name],
                    secret_from_row,
                )
                .map_err(StoreError::from)?,
            ),
            None => None,
        };
        tx.commit().map_err(StoreError::from)?;
        Ok(record)
    }

    // ---- tokens ------------------------------------------------------------------------------

    /// Stores a new API token by its hash.
    pub fn create_token(
        &mut self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, name, token_hash, now_ms()],
        )
        .map_err(|e| conflict(e, "name", || format!("a token named {name} already exists")))?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    // ---- audit -------------------------------------------------------------------------------

    /// Records an event that is not part of a change (a use: an injection, a signature).
    pub fn record(&mut self, audit: &AuditEvent) -> Result<()> {
        insert_audit(&self.conn, audit)
    }

    /// Audit events, newest last; only `user`'s when given.
    pub fn audit_events(&self, user: Option<&str>, since_ms: i64) -> Result<Vec<AuditRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, actor, user_name, action, secret_name, detail FROM audit_events
             WHERE (?1 IS NULL OR user_name = ?1) AND at >= ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![user, since_ms], |r| {
            Ok((
                AuditRecord {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    user_name: r.get(3)?,
                    action: r.get(4)?,
                    secret_name: r.get(5)?,
                    detail: serde_json::Value::Null,
                },
                r.get::<_, String>(6)?,
            ))
        })?;
        rows.map(|row| {
            let (mut record, detail) = row?;
            record.detail = serde_json::from_str(&detail)?;
            Ok(record)
        })
        .collect()
    }

    // ---- written-file ledger -------------------------------------------------------------------

    /// Records that keyport wrote `path` for `os_user`, replacing an earlier record.
    pub fn record_file(&mut self, file: &FileRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO secret_files (os_user, path, user_name, secret_name, hash_sealed, written_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (os_user, path) DO UPDATE SET user_name = excluded.user_name,
                 secret_name = excluded.secret_name, hash_sealed = excluded.hash_sealed,
                 written_at = excluded.written_at",
            params![
                file.os_user,
                file.path,
                file.user_name,
                file.secret_name,
                file.hash_sealed,
                file.written_at
            ],
        )?;
        Ok(())
    }

    /// The files keyport wrote for `os_user`.
    pub fn files(&self, os_user: &str) -> Result<Vec<FileRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT os_user, path, user_name, secret_name, hash_sealed, written_at
             FROM secret_files WHERE os_user = ?1 ORDER BY path",
        )?;
        let rows = stmt.query_map([os_user], |r| {
            Ok(FileRecord {
                os_user: r.get(0)?,
                path: r.get(1)?,
                user_name: r.get(2)?,
                secret_name: r.get(3)?,
                hash_sealed: r.get(4)?,
                written_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the record of a file (after removing it, or leaving a user-changed one).
    pub fn forget_file(&mut self, os_user: &str, path: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM secret_files WHERE os_user = ?1 AND path = ?2",
            params![os_user, path],
        )?;
        Ok(())
    }

    // ---- master key rotation -------------------------------------------------------------------

    /// Re-seals every sealed column in one transaction: `reseal` gets what each blob is bound
    /// to and the blob, and returns the new blob. Then `meta.master_key_id` becomes `new_key_id`.
    /// Any error rolls everything back.
    pub fn reseal_all<E>(
        &mut self,
        new_key_id: &str,
        mut reseal: impl FnMut(SealedKind, &str, &str, &[u8]) -> Result<Vec<u8>, E>,
        audit: &AuditEvent,
    ) -> Result<usize, E>
    where
        E: From<StoreError>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let mut count = 0;
        for kind in SealedKind::ALL {
            let (select, update) = kind.sql();
            let rows: Vec<(i64, String, String, Vec<u8>)> = {
                let mut stmt = tx.prepare(select).map_err(StoreError::from)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(StoreError::from)?;
                rows.collect::<Result<_, _>>().map_err(StoreError::from)?
            };
            for (rowid, owner, item, blob) in rows {
                let sealed = reseal(kind, &owner, &item, &blob)?;
                tx.execute(update, params![sealed, rowid])
                    .map_err(StoreError::from)?;
                count += 1;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('master_key_id', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [new_key_id],
        )
        .map_err(StoreError::from)?;
        insert_audit(&tx, audit)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(count)
    }
}

const SECRET_COLUMNS: &str = "id, name, description, env_name, file_path, file_resolved, enabled, \
                              value_len, created_at, updated_at";

fn secret_from_row(r: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        env_name: r.get(3)?,
        file_path: r.get(4)?,
        file_resolved: r.get(5)?,
        enabled: r.get(6)?,
        value_len: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn query_secrets(conn: &Connection, user_id: i64) -> Result<Vec<SecretRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE user_id = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([user_id], secret_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        is_admin: r.get(2)?,
        os_user: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

fn query_user(conn: &Connection, name: &str) -> Result<UserRecord> {
    conn.query_row(
        "SELECT id, name, is_admin, os_user, created_at, updated_at FROM users WHERE name = ?1",
        [name],
        user_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("user {name}")))
}

fn put_user_key(conn: &Connection, user_id: i64, key: &NewUserKey, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO user_keys (user_id, algorithm, public_key, fingerprint, private_sealed, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_id) DO UPDATE SET algorithm = excluded.algorithm,
             public_key = excluded.public_key, fingerprint = excluded.fingerprint,
             private_sealed = excluded.private_sealed, created_at = excluded.created_at",
        params![user_id, key.algorithm, key.public_key, key.fingerprint, key.private_sealed, now],
    )?;
    Ok(())
}

fn insert_login_key(conn: &Connection, user_id: i64, key: &NewLoginKey, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO login_keys (user_id, algorithm, public_key, fingerprint, comment, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            user_id,
            key.algorithm,
            key.public_key,
            key.fingerprint,
            key.comment,
            now
        ],
    )
    .map_err(|e| {
        conflict(e, "login-key", || {
            format!(
                "key {} is already a login key of this user",
                key.fingerprint
            )
        })
    })?;
    Ok(())
}

fn insert_audit(conn: &Connection, event: &AuditEvent) -> Result<()> {
    conn.execute(
        "INSERT INTO audit_events (at, actor, user_name, action, secret_name, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms(),
            event.actor,
            event.user_name,
            event.action,
            event.secret_name,
            event.detail.to_string()
        ],
    )?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn conflict(
    e: rusqlite::Error,
    field: &'static str,
    detail: impl FnOnce() -> String,
) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict {
            field,
            detail: detail(),
        }
    } else {
        StoreError::Sqlite(e)
    }
}

/// Names the column behind a UNIQUE failure on `secrets`. Validation catches these first;
/// this covers a writer that raced past it.
fn secret_conflict(e: rusqlite::Error) -> StoreError {
    let message = e.to_string();
    let field = if message.contains("env_key") {
        "env"
    } else if message.contains("file_resolved") {
        "file"
    } else {
        "name"
    };
    conflict(e, field, || {
        format!("{field} is already used by another secret")
    })
}
