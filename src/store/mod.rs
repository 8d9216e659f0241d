//! The one place keyport's state is persisted: an embedded SQLite database.
//!
//! [`Store`] is the narrow interface the rest of keyport uses: typed records in, typed records
//! out, and no SQL or rusqlite type outside this module, so a PostgreSQL backend can implement
//! the same methods later. It opens the database in WAL mode with `synchronous = FULL` (a
//! committed change survives `kill -9` and power loss), foreign keys on and a busy timeout, and
//! applies the embedded, append-only migrations. Every change that is audited writes its audit
//! event in the same transaction, so there is never a change without its event or the reverse.
//!
//! Sealed bytes pass through unopened: this module never sees a master key. It does know the
//! *id* of the key its caller seals with, and every transaction that writes sealed bytes checks
//! it against the id the database records, so a process still holding a retired key after a
//! rotation cannot write blobs no one can open ([`StoreError::KeyRotated`]).
//!
//! # Layout
//! - `mod.rs`: opening, migrations, meta, the key-id guard, shared helpers.
//! - `users.rs`: users, login keys, user key pairs, the host key, API tokens.
//! - `secrets.rs`: secrets and the read-check-write transaction that changes them.
//! - `workspaces.rs`: relay-mode workspaces, their pinned host keys and who may use them.
//! - `cas.rs`: keyport's user CAs (relay `--auth ca`) and which one each workspace accepted.
//! - `web.rs`: sign-in links and signed-in browsers of the web pages.
//! - `audit.rs`: audit events and the ledger of written files.
//! - `rotate.rs`: re-sealing every sealed column in one transaction.
//! - `records.rs`: the typed records.

mod audit;
mod cas;
mod records;
mod rotate;
mod secrets;
mod users;
mod web;
mod workspaces;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use cas::{NewUserCa, UserCaRecord, WorkspaceCaRecord};
pub use records::*;
pub use web::LinkTaken;

/// Embedded migrations, applied in order; append only.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_workspaces.sql")),
    (3, include_str!("migrations/0003_deliveries.sql")),
    (4, include_str!("migrations/0004_user_ca.sql")),
    (5, include_str!("migrations/0005_lifecycle.sql")),
    (6, include_str!("migrations/0006_sources.sql")),
    (7, include_str!("migrations/0007_web.sql")),
];

/// The `meta` key holding the id of the master key every sealed value is sealed under.
pub const MASTER_KEY_ID: &str = "master_key_id";

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// What kind of thing (`user`, `secret`, …).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A uniqueness rule would be broken.
    #[error("{field}: {detail}")]
    Conflict {
        /// The field that must be unique.
        field: &'static str,
        /// What it collides with.
        detail: String,
    },
    /// The database's values are now sealed under another master key than the caller's.
    #[error(
        "the master key was rotated by another process (now {found}, this process has \
         {expected}); nothing was written — run the command again"
    )]
    KeyRotated {
        /// The id the caller seals with.
        expected: String,
        /// The id the database records.
        found: String,
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

impl StoreError {
    pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            name: name.into(),
        }
    }
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
    /// Id of the master key this process seals with; checked in every sealing write.
    sealing_key: Option<String>,
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
        let mut store = Self {
            conn,
            sealing_key: None,
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self.write()?;
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

    /// A write transaction, taking the write lock up front (`BEGIN IMMEDIATE`), so a
    /// read-check-write sequence inside it cannot be overtaken by another writer.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Declares the id of the master key this process seals with; from now on every write
    /// of sealed bytes fails with [`StoreError::KeyRotated`] if the database records another.
    pub fn set_sealing_key(&mut self, key_id: &str) {
        self.sealing_key = Some(key_id.to_string());
    }

    /// A write transaction for a change that writes sealed bytes: as [`Store::write`], and
    /// the database must still record the key this process seals with.
    fn write_sealed(&mut self) -> Result<rusqlite::Transaction<'_>> {
        let expected = self.sealing_key.clone();
        let tx = self.write()?;
        if let Some(expected) = expected {
            let found: Option<String> = tx
                .query_row(
                    "SELECT value FROM meta WHERE key = ?1",
                    [MASTER_KEY_ID],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(found) = found.filter(|found| *found != expected) {
                return Err(StoreError::KeyRotated { expected, found });
            }
        }
        Ok(tx)
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

    /// This connection's journal mode and `synchronous` level (2 = FULL), as SQLite reports
    /// them: what the durability promise rests on.
    pub fn durability(&self) -> Result<(String, i64)> {
        let mode = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        let sync = self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        Ok((mode, sync))
    }

    /// A value from the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets `key` unless it is set, and returns the value it has afterwards: the first
    /// writer wins, so two processes racing to record a value agree on one.
    pub fn init_meta(&mut self, key: &str, value: &str) -> Result<String> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            params![key, value],
        )?;
        let stored: String =
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
        tx.commit()?;
        Ok(stored)
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// A UNIQUE failure as a [`StoreError::Conflict`] on `field`; anything else as it is.
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
