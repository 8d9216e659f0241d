//! The SQL connection both backends stand behind: the store's modules write each statement
//! once, with `?N` placeholders and the values of [`Value`], and read rows as [`Row`]s; the
//! SQLite backend (`sqlite.rs`) runs them as they are, the PostgreSQL one (`postgres.rs`)
//! numbers the placeholders `$N` and converts each value to the type PostgreSQL declares for
//! it (a millisecond count to `timestamptz`, a flag to `bigint`), so neither backend's loose or
//! strict typing leaks into the store's code.
//!
//! The few statements that cannot be the same on both (how a write transaction begins and
//! what it locks) are chosen by [`Dialect`].

use std::ops::Deref;

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer: ids, counts, flags (0/1) and timestamps (ms since the epoch).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (sealed values).
    Bytes(Vec<u8>),
}

/// What can be bound to a placeholder.
pub trait ToValue {
    /// The value to bind.
    fn to_value(&self) -> Value;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}

impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Bytes(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Bytes(self.clone())
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// The values of a statement's placeholders, in order: `params![a, b]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::store::db::ToValue),*] as &[&dyn $crate::store::db::ToValue]
    };
}
pub(crate) use params;

/// What a column can be read as.
pub trait FromValue: Sized {
    /// The column's value as `Self`, or why it is not one.
    fn from_value(value: &Value) -> Result<Self, DbError>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self, DbError> {
        match value {
            Value::Int(n) => Ok(*n),
            other => Err(DbError::wrong_type("an integer", other)),
        }
    }
}

impl FromValue for u32 {
    fn from_value(value: &Value) -> Result<Self, DbError> {
        let n = i64::from_value(value)?;
        u32::try_from(n).map_err(|_| DbError::other(format!("{n} is out of range for u32")))
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, DbError> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, DbError> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => Err(DbError::wrong_type("text", other)),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, DbError> {
        match value {
            Value::Bytes(b) => Ok(b.clone()),
            other => Err(DbError::wrong_type("bytes", other)),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, DbError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug)]
pub struct Row(pub(super) Vec<Value>);

impl Row {
    /// Column `index` (from 0) as `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, DbError> {
        let value = self.0.get(index).ok_or_else(|| {
            DbError::other(format!("no column {index} in a row of {}", self.0.len()))
        })?;
        T::from_value(value).map_err(|e| DbError::other(format!("column {index}: {}", e.message)))
    }
}

/// What kind of failure a [`DbError`] is, as far as the store tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// A UNIQUE or PRIMARY KEY rule would be broken.
    Unique,
    /// A statement that must return a row returned none.
    NoRow,
    /// The server could not be reached, or the connection was lost.
    Connection,
    /// Anything else.
    Other,
}

/// A failed statement. The message names the rule or column, never a bound value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    /// What kind.
    pub kind: DbErrorKind,
    /// What went wrong.
    pub message: String,
}

impl DbError {
    /// A failure of kind `kind`.
    pub fn new(kind: DbErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A failure of kind [`DbErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(DbErrorKind::Other, message)
    }

    fn wrong_type(wanted: &str, found: &Value) -> Self {
        let found = match found {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        };
        Self::other(format!("expected {wanted}, found {found}"))
    }
}

/// Which SQL a backend speaks, for the statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A database connection: what each backend implements.
pub(super) trait Backend: Send {
    /// Runs one statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError>;
    /// Runs one statement; the rows it returned.
    fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError>;
    /// Runs several statements without parameters (migrations, BEGIN, COMMIT).
    fn batch(&self, sql: &str) -> Result<(), DbError>;
    /// Its dialect.
    fn dialect(&self) -> Dialect;
}

/// The store's connection: one backend, and the calls the store's modules make.
pub struct Db {
    backend: Box<dyn Backend>,
}

impl Db {
    pub(super) fn new(backend: Box<dyn Backend>) -> Self {
        Self { backend }
    }

    /// Which SQL this connection speaks.
    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<u64, DbError> {
        self.backend.execute(sql, values(params))
    }

    /// Every row `sql` returns, each through `map`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        map: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        self.backend
            .query(sql, values(params))?
            .iter()
            .map(map)
            .collect()
    }

    /// The first row `sql` returns, through `map`; [`DbErrorKind::NoRow`] when there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        map: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self.backend.query(sql, values(params))?.first() {
            Some(row) => map(row),
            None => Err(DbError::new(
                DbErrorKind::NoRow,
                "the query returned no row",
            )),
        }
    }

    /// Runs several statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        self.backend.batch(sql)
    }

    /// Begins a transaction with `begin` (`BEGIN IMMEDIATE`, `BEGIN`); it rolls back unless
    /// committed.
    pub fn transaction(&self, begin: &str) -> Result<Tx<'_>, DbError> {
        self.backend.batch(begin)?;
        Ok(Tx {
            db: self,
            done: false,
        })
    }
}

fn values(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

/// An open transaction; rolled back when dropped uncommitted.
pub struct Tx<'a> {
    db: &'a Db,
    done: bool,
}

impl Tx<'_> {
    /// Commits it.
    pub fn commit(mut self) -> Result<(), DbError> {
        // A COMMIT that fails (SQLite busy) leaves the transaction open: dropping it rolls it
        // back, so the connection is not left inside it.
        self.db.backend.batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

impl Deref for Tx<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A rollback that fails leaves nothing to undo: the connection is gone with it.
            let _ = self.db.backend.batch("ROLLBACK");
        }
    }
}

/// `Result::optional` as rusqlite has it: no row is `None`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`DbErrorKind::NoRow`].
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind == DbErrorKind::NoRow => Ok(None),
            Err(e) => Err(e),
        }
    }
}
