//! The one place keyport's state is persisted: an embedded SQLite file by default, or a
//! PostgreSQL database (`--database postgres://…`).
//!
//! [`Store`] is the narrow interface the rest of keyport uses: typed records in, typed records
//! out, and no SQL or driver type outside this module. Each statement is written once, for
//! both backends, against [`db::Db`]; `sqlite.rs` and `postgres.rs` are the two connections
//! behind it, and `migrations/sqlite` and `migrations/postgres` the two schemas, numbered in
//! step. SQLite runs in WAL mode with `synchronous = FULL` (a committed change survives
//! `kill -9` and power loss). Every change that is audited writes its audit event in the same
//! transaction, so there is never a change without its event or the reverse.
//!
//! Writers are serialized: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on
//! PostgreSQL — one for the store, and one per user for that user's secrets, so a check over
//! "the user's other secrets" (the limits) still holds when the write lands.
//!
//! Sealed bytes pass through unopened: this module never sees a master key. It does know the
//! *id* of the key its caller seals with, and every transaction that writes sealed bytes checks
//! it against the id the database records, so a process still holding a retired key after a
//! rotation cannot write blobs no one can open ([`StoreError::KeyRotated`]).
//!
//! # Layout
//! - `mod.rs`: opening, migrations, meta, transactions and the key-id guard.
//! - `db.rs`: the connection both backends implement, values and rows.
//! - `sqlite.rs`, `postgres.rs`: the backends.
//! - `users.rs`: users, login keys, user key pairs, the host key, API tokens.
//! - `secrets.rs`: secrets and the read-check-write transaction that changes them.
//! - `workspaces.rs`: relay-mode workspaces, their pinned host keys and who may use them.
//! - `cas.rs`: keyport's user CAs (relay `--auth ca`) and which one each workspace accepted.
//! - `nodes.rs`: the daemons' heartbeats (replicas).
//! - `web.rs`: sign-in links and signed-in browsers of the web pages.
//! - `audit.rs`: audit events, the change mark and the ledger of written files.
//! - `rotate.rs`: re-sealing every sealed column in one transaction.
//! - `records.rs`: the typed records.

mod audit;
mod cas;
pub(crate) mod db;
mod nodes;
pub mod postgres;
mod records;
mod rotate;
mod secrets;
mod sqlite;
mod users;
mod web;
mod workspaces;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use db::{Db, DbError, DbErrorKind, Dialect, OptionalExtension, params};

pub use cas::{NewUserCa, UserCaRecord, WorkspaceCaRecord};
pub use db::{DbError as DatabaseError, DbErrorKind as DatabaseErrorKind};
pub use nodes::NodeRecord;
pub use records::*;
pub use web::LinkTaken;

/// Embedded migrations of each backend, applied in order; append only. The same number is the
/// same schema on both.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_workspaces.sql")),
    (3, include_str!("migrations/sqlite/0003_deliveries.sql")),
    (4, include_str!("migrations/sqlite/0004_user_ca.sql")),
    (5, include_str!("migrations/sqlite/0005_lifecycle.sql")),
    (6, include_str!("migrations/sqlite/0006_sources.sql")),
    (7, include_str!("migrations/sqlite/0007_web.sql")),
    (8, include_str!("migrations/sqlite/0008_nodes.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_workspaces.sql")),
    (3, include_str!("migrations/postgres/0003_deliveries.sql")),
    (4, include_str!("migrations/postgres/0004_user_ca.sql")),
    (5, include_str!("migrations/postgres/0005_lifecycle.sql")),
    (6, include_str!("migrations/postgres/0006_sources.sql")),
    (7, include_str!("migrations/postgres/0007_web.sql")),
    (8, include_str!("migrations/postgres/0008_nodes.sql")),
];

/// The `meta` key holding the id of the master key every sealed value is sealed under.
pub const MASTER_KEY_ID: &str = "master_key_id";

/// Where the store is. Its `Debug` shows no password (as [`Database::describe`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (the default: `keyport.db` in the data dir).
    File(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL (which may hold a password: show it
    /// with [`Database::describe`]).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::File(path) => f.debug_tuple("File").field(path).finish(),
            Database::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&postgres::describe(url))
                .finish(),
        }
    }
}

impl Database {
    /// Where it is, without a password.
    pub fn describe(&self) -> String {
        match self {
            Database::File(path) => path.display().to_string(),
            Database::Postgres(url) => postgres::describe(url),
        }
    }
}

/// The advisory lock every PostgreSQL write transaction takes: writers one at a time, as
/// SQLite's `BEGIN IMMEDIATE` makes them.
const PG_WRITE_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('keyport:store', 0))";

/// The meta row naming the sealing key, read by a sealing write: on PostgreSQL it is share-
/// locked, so a rotation (which updates that row first) waits for the write, or the write
/// waits for the rotation and sees the new key.
const SEALING_KEY_SQLITE: &str = "SELECT value FROM meta WHERE key = ?1";
const SEALING_KEY_PG: &str = "SELECT value FROM meta WHERE key = ?1 FOR SHARE";

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
    Database(#[from] DbError),
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

/// The store, on either backend.
pub struct Store {
    db: Db,
    /// Id of the master key this process seals with; checked in every sealing write.
    sealing_key: Option<String>,
}

impl Store {
    /// Opens (creating if needed, mode 0600) the SQLite database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::connect(&Database::File(path.to_path_buf()))
    }

    /// Opens the store at `database` and migrates it.
    pub fn connect(database: &Database) -> Result<Self> {
        Self::connect_migrating(database).map(|(store, _)| store)
    }

    /// As [`Store::connect`]; also the migrations it applied.
    pub fn connect_migrating(database: &Database) -> Result<(Self, Vec<i64>)> {
        let backend: Box<dyn db::Backend> = match database {
            Database::File(path) => Box::new(sqlite::Sqlite::open(path)?),
            Database::Postgres(url) => Box::new(postgres::Postgres::connect(url)?),
        };
        let mut store = Self {
            db: Db::new(backend),
            sealing_key: None,
        };
        let applied = store.migrate()?;
        Ok((store, applied))
    }

    /// Which backend this store is on.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// Applies the migrations the database lacks, in one transaction (on PostgreSQL under
    /// the write lock, so replicas starting together migrate once); returns the versions
    /// applied.
    fn migrate(&mut self) -> Result<Vec<i64>> {
        let (migrations, table) = match self.dialect() {
            Dialect::Sqlite => (
                SQLITE_MIGRATIONS,
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            ),
            Dialect::Postgres => (
                POSTGRES_MIGRATIONS,
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version bigint PRIMARY KEY, applied_at timestamptz NOT NULL)",
            ),
        };
        let tx = self.write()?;
        tx.execute_batch(table)?;
        let current: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            params![],
            |r| r.get(0),
        )?;
        let known = migrations.last().map_or(0, |m| m.0);
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        let mut applied = Vec::new();
        for (version, sql) in migrations.iter().filter(|m| m.0 > current) {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now_ms()],
            )?;
            applied.push(*version);
        }
        tx.commit()?;
        Ok(applied)
    }

    /// A write transaction that cannot be overtaken by another writer between its reads and
    /// its writes: `BEGIN IMMEDIATE` on SQLite, the store's advisory lock on PostgreSQL.
    fn write(&self) -> Result<db::Tx<'_>> {
        Ok(match self.dialect() {
            Dialect::Sqlite => self.db.transaction("BEGIN IMMEDIATE")?,
            Dialect::Postgres => {
                let tx = self.db.transaction("BEGIN")?;
                tx.execute(PG_WRITE_LOCK, params![])?;
                tx
            }
        })
    }

    /// A read-only transaction: every read in it sees the same committed state.
    fn read(&self) -> Result<db::Tx<'_>> {
        Ok(self.db.transaction(match self.dialect() {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?)
    }

    /// A write transaction for a change to one user's secrets: as [`Store::write_sealed`],
    /// and on PostgreSQL serialized per user (an advisory lock on the user's id) rather than
    /// with every other writer, so checks over "the user's other secrets" (the limits) hold
    /// across replicas while other users' writes go on.
    fn write_user_sealed(&self, user_id: i64) -> Result<db::Tx<'_>> {
        let tx = match self.dialect() {
            Dialect::Sqlite => self.db.transaction("BEGIN IMMEDIATE")?,
            Dialect::Postgres => {
                let tx = self.db.transaction("BEGIN")?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('keyport:user:' || CAST(CAST(?1 AS bigint) AS text), 0))",
                    params![user_id],
                )?;
                tx
            }
        };
        self.check_sealing_key(&tx)?;
        Ok(tx)
    }

    /// Declares the id of the master key this process seals with; from now on every write
    /// of sealed bytes fails with [`StoreError::KeyRotated`] if the database records another.
    pub fn set_sealing_key(&mut self, key_id: &str) {
        self.sealing_key = Some(key_id.to_string());
    }

    /// A write transaction for a change that writes sealed bytes: as [`Store::write`], and
    /// the database must still record the key this process seals with.
    fn write_sealed(&self) -> Result<db::Tx<'_>> {
        let tx = self.write()?;
        self.check_sealing_key(&tx)?;
        Ok(tx)
    }

    fn check_sealing_key(&self, tx: &Db) -> Result<()> {
        let Some(expected) = self.sealing_key.clone() else {
            return Ok(());
        };
        let sql = match self.dialect() {
            Dialect::Sqlite => SEALING_KEY_SQLITE,
            Dialect::Postgres => SEALING_KEY_PG,
        };
        let found: Option<String> = tx
            .query_row(sql, params![MASTER_KEY_ID], |r| r.get(0))
            .optional()?;
        match found.filter(|found| *found != expected) {
            Some(found) => Err(StoreError::KeyRotated { expected, found }),
            None => Ok(()),
        }
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.db.query_row(
            "SELECT MAX(version) FROM schema_migrations",
            params![],
            |r| r.get(0),
        )?)
    }

    /// SQLite's `PRAGMA integrity_check`: `"ok"` when the file is sound. PostgreSQL keeps its
    /// own pages' checks; there this is an error saying so.
    pub fn integrity_check(&self) -> Result<String> {
        match self.dialect() {
            Dialect::Sqlite => Ok(self
                .db
                .query_row("PRAGMA integrity_check", params![], |r| r.get(0))?),
            Dialect::Postgres => Err(DbError::other(
                "integrity_check is SQLite's; PostgreSQL checks its own pages",
            )
            .into()),
        }
    }

    /// What the durability promise rests on: SQLite's journal mode and `synchronous` level
    /// (2 = FULL); on PostgreSQL `("postgresql", 2)` when `synchronous_commit` is on, else 0.
    pub fn durability(&self) -> Result<(String, i64)> {
        match self.dialect() {
            Dialect::Sqlite => {
                let mode = self
                    .db
                    .query_row("PRAGMA journal_mode", params![], |r| r.get(0))?;
                let sync = self
                    .db
                    .query_row("PRAGMA synchronous", params![], |r| r.get(0))?;
                Ok((mode, sync))
            }
            Dialect::Postgres => {
                let on: String = self.db.query_row(
                    "SELECT current_setting('synchronous_commit')",
                    params![],
                    |r| r.get(0),
                )?;
                Ok(("postgresql".into(), if on == "off" { 0 } else { 2 }))
            }
        }
    }

    /// A value from the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
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
            tx.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        Ok(stored)
    }
}

/// A UNIQUE failure as a [`StoreError::Conflict`] on `field`; anything else as it is.
fn conflict(e: DbError, field: &'static str, detail: impl FnOnce() -> String) -> StoreError {
    if e.kind == DbErrorKind::Unique {
        StoreError::Conflict {
            field,
            detail: detail(),
        }
    } else {
        StoreError::Database(e)
    }
}
