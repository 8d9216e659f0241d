//! The embedded backend: one SQLite file in the data dir (rusqlite, bundled SQLite), in WAL
//! mode with `synchronous = FULL` (a committed change survives `kill -9` and power loss),
//! foreign keys on and a busy timeout. Statements run as the store writes them, each prepared
//! once and cached.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, params_from_iter};

use super::db::{Backend, DbError, DbErrorKind, Dialect, Row, Value};
use super::{Result, StoreError};

/// The SQLite connection.
pub(super) struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Opens (creating if needed, mode 0600) the database at `path`.
    pub(super) fn open(path: &Path) -> Result<Self> {
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
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.set_prepared_statement_cache_capacity(64);
            Ok(())
        };
        setup().map_err(|e| open_err(Box::new(e)))?;
        Ok(Self { conn })
    }
}

impl Backend for Sqlite {
    fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(error)?;
        let n = stmt
            .execute(params_from_iter(params.iter()))
            .map_err(error)?;
        Ok(n as u64)
    }

    fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(error)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(params_from_iter(params.iter())).map_err(error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(error)? {
            let values = (0..columns)
                .map(|i| row.get_ref(i).map_err(error).and_then(value))
                .collect::<Result<_, DbError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(error)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> Result<Value, DbError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        // No column holds a real: one found is a schema the store does not know.
        ValueRef::Real(_) => return Err(DbError::other("a column holds a real number")),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    })
}

fn error(e: rusqlite::Error) -> DbError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            DbErrorKind::Unique
        }
        rusqlite::Error::QueryReturnedNoRows => DbErrorKind::NoRow,
        _ => DbErrorKind::Other,
    };
    DbError::new(kind, e.to_string())
}
