//! The backend for several replicas: a PostgreSQL database (`--database postgres://…`), through
//! the sync `postgres` client on a thread of its own. The client runs its own small runtime,
//! which must not start inside an async task; on its own thread it can be called from
//! anywhere, and the calls it serves are the store's, one at a time.
//!
//! Statements arrive as the store writes them: `?N` placeholders become `$N`, each statement
//! is prepared once per connection, and each value is converted to the type PostgreSQL
//! declares for its placeholder (ms since the epoch to `timestamptz`, 0/1 to `bigint`), and
//! back for each column.
//!
//! A lost connection is made again on the next call. A read that finds it lost is retried
//! once on the new one; a write is not (it may have landed), and a transaction that lost its
//! connection fails until it is ended, so no statement of it runs outside it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::{Backend, DbError, DbErrorKind, Dialect, Row, Value};
use super::{Result, StoreError};

/// The oldest server keyport runs on (`server_version_num`).
pub const MIN_SERVER_VERSION: i64 = 130_000;

/// The channel every audited change is announced on, at its commit (payload: the event id).
pub const CHANNEL: &str = "keyport_changes";

/// How long the listener waits in silence before it calls `changed` anyway, checking its
/// connection: the safety net for a notification lost in a way no error showed.
const GENERATION_CHECK: Duration = Duration::from_secs(30);

/// Listens on `url` for changes on a dedicated connection (not pooled: a `LISTEN` belongs to
/// its session, so a transaction-mode PgBouncer cannot carry it), on a thread of its own for
/// the daemon's life, and calls `changed` for each one. Notifications sent while the
/// connection is down are lost: after every (re)connect and `LISTEN`, and after every
/// [`GENERATION_CHECK`] of silence, `changed` is called too, so its caller resyncs (reads the
/// change mark) then.
pub fn listen(url: &str, changed: impl Fn() + Send + 'static) -> Result<()> {
    let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: describe(url),
        source,
    };
    let mut config: Config = url.parse().map_err(|e| open_err(Box::new(e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("keyport-listen");
    keep_alive(&mut config);
    let tls = tls();
    std::thread::Builder::new()
        .name("keyport-listen".into())
        .spawn(move || {
            loop {
                if let Ok(mut client) = tls.clone().and_then(|t| config.connect(t).map_err(error))
                    && client.batch_execute(&format!("LISTEN {CHANNEL}")).is_ok()
                {
                    changed();
                    hear(&mut client, &changed);
                }
                tracing::warn!("the PostgreSQL change listener lost its connection; reconnecting");
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map_err(|e| open_err(Box::new(e)))?;
    Ok(())
}

/// Calls `changed` for each notification (or silence) until the connection fails.
fn hear(client: &mut Client, changed: &impl Fn()) {
    loop {
        let heard = client.notifications().timeout_iter(GENERATION_CHECK).next();
        match heard {
            Ok(Some(_)) => changed(),
            Err(_) => return,
            Ok(None) => {
                if client.simple_query("SELECT 1").is_err() {
                    return;
                }
                changed();
            }
        }
    }
}

/// A PostgreSQL connection, served by its own thread.
pub(super) struct Postgres {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    request: Request,
    reply: mpsc::SyncSender<Result<Reply, DbError>>,
}

enum Request {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
}

enum Reply {
    Count(u64),
    Rows(Vec<Row>),
    Done,
}

/// The environment variable naming a PEM file of CA certificates the server's certificate may
/// chain to (a private CA), besides the webpki roots.
pub const CA_ENV: &str = "KEYPORT_DATABASE_CA";

/// TLS as the URL's `sslmode` asks: `disable` never, `prefer` (the default) when the server
/// offers it, `require` always — the server's certificate checked against the webpki roots and
/// the CAs in [`CA_ENV`], its name against the host.
fn tls() -> Result<MakeRustlsConnect, DbError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = std::env::var_os(CA_ENV) {
        let shown = std::path::Path::new(&path).display().to_string();
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| DbError::other(format!("{CA_ENV} {shown}: {e}")))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| DbError::other(format!("{CA_ENV} {shown}: {e}")))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::other(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// TCP keepalives every few seconds, so a connection whose server went away without a word
/// (a host lost, a network cut) fails in about half a minute instead of the kernel's hours,
/// and the vault is not held meanwhile.
fn keep_alive(config: &mut Config) {
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
}

/// `url` without its password: what messages may show.
pub fn describe(url: &str) -> String {
    let Ok(config) = url.parse::<Config>() else {
        return "postgres://(unreadable address)".into();
    };
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

impl Postgres {
    /// Connects to `url` and checks the server's version.
    pub(super) fn connect(url: &str) -> Result<Self> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: describe(url),
            source,
        };
        let mut config: Config = url.parse().map_err(|e| open_err(Box::new(e)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("keyport");
        }
        keep_alive(&mut config);
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("keyport-postgres".into())
            .spawn(move || {
                let mut worker = Worker {
                    config,
                    client: None,
                    statements: HashMap::new(),
                    in_tx: false,
                    tx_lost: false,
                };
                let first = worker
                    .client()
                    .map(|_| ())
                    .and_then(|()| worker.check_version());
                let failed = first.is_err();
                let _ = ready.send(first);
                if failed {
                    return;
                }
                for job in queue {
                    let _ = job.reply.send(worker.run(job.request));
                }
            })
            .map_err(|e| open_err(Box::new(e)))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Self { jobs }),
            Ok(Err(e)) => Err(open_err(Box::new(e))),
            Err(e) => Err(open_err(Box::new(e))),
        }
    }

    fn call(&self, request: Request) -> Result<Reply, DbError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let lost = || DbError::new(DbErrorKind::Connection, "the PostgreSQL thread ended");
        self.jobs.send(Job { request, reply }).map_err(|_| lost())?;
        answer.recv().map_err(|_| lost())?
    }
}

impl Backend for Postgres {
    fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        match self.call(Request::Execute(sql.to_string(), params))? {
            Reply::Count(n) => Ok(n),
            _ => Err(DbError::other("unexpected reply to a statement")),
        }
    }

    fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        match self.call(Request::Query(sql.to_string(), params))? {
            Reply::Rows(rows) => Ok(rows),
            _ => Err(DbError::other("unexpected reply to a query")),
        }
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self.call(Request::Batch(sql.to_string()))? {
            Reply::Done => Ok(()),
            _ => Err(DbError::other("unexpected reply to a batch")),
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

/// The thread's side: the connection, its prepared statements, and whether a transaction is
/// open on it.
struct Worker {
    config: Config,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    in_tx: bool,
    /// The connection was lost while a transaction was open: every call fails until the
    /// transaction is ended.
    tx_lost: bool,
}

impl Worker {
    fn client(&mut self) -> Result<&mut Client, DbError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.forget_connection();
        }
        if self.tx_lost {
            return Err(lost_in_tx());
        }
        if self.client.is_none() {
            let client = self.config.connect(tls()?).map_err(error)?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| DbError::new(DbErrorKind::Connection, "no connection"))
    }

    fn forget_connection(&mut self) {
        self.client = None;
        self.statements.clear();
        if self.in_tx {
            self.tx_lost = true;
        }
    }

    fn check_version(&mut self) -> Result<(), DbError> {
        let row = self
            .client()?
            .query_one("SHOW server_version_num", &[])
            .map_err(error)?;
        let text: String = row.try_get(0).map_err(error)?;
        let version: i64 = text
            .trim()
            .parse()
            .map_err(|_| DbError::other(format!("unreadable server_version_num {text:?}")))?;
        if version < MIN_SERVER_VERSION {
            return Err(DbError::other(format!(
                "PostgreSQL {} is older than {}, the oldest keyport runs on",
                version / 10_000,
                MIN_SERVER_VERSION / 10_000
            )));
        }
        Ok(())
    }

    fn run(&mut self, request: Request) -> Result<Reply, DbError> {
        match request {
            Request::Batch(sql) => self.batch(&sql).map(|()| Reply::Done),
            Request::Execute(sql, params) => {
                let result = self.statement(&sql, &params, |client, stmt, refs| {
                    client.execute(stmt, refs).map(Reply::Count)
                });
                self.lost_on(result)
            }
            Request::Query(sql, params) => {
                let run = |w: &mut Self| {
                    w.statement(&sql, &params, |client, stmt, refs| {
                        let rows = client.query(stmt, refs)?;
                        Ok(Reply::Rows(
                            rows.iter().map(read_row).collect::<Result<_, _>>()?,
                        ))
                    })
                };
                match run(self) {
                    // A read outside a transaction changed nothing: it may run again.
                    Err(e) if e.kind == DbErrorKind::Connection && !self.in_tx => {
                        self.forget_connection();
                        let again = run(self);
                        self.lost_on(again)
                    }
                    other => self.lost_on(other),
                }
            }
        }
    }

    fn lost_on<T>(&mut self, result: Result<T, DbError>) -> Result<T, DbError> {
        if matches!(&result, Err(e) if e.kind == DbErrorKind::Connection) {
            self.forget_connection();
        }
        result
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let word = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if matches!(word.as_str(), "COMMIT" | "ROLLBACK") && self.tx_lost {
            self.in_tx = false;
            self.tx_lost = false;
            return if word == "COMMIT" {
                Err(lost_in_tx())
            } else {
                Ok(())
            };
        }
        let mut result = self
            .client()
            .and_then(|c| c.batch_execute(sql).map_err(error));
        if word == "BEGIN" && matches!(&result, Err(e) if e.kind == DbErrorKind::Connection) {
            // Nothing had begun: the transaction may begin on a new connection (the server
            // restarted since the last call).
            self.forget_connection();
            result = self
                .client()
                .and_then(|c| c.batch_execute(sql).map_err(error));
        }
        match word.as_str() {
            "BEGIN" if result.is_ok() => self.in_tx = true,
            "COMMIT" | "ROLLBACK" => self.in_tx = false,
            _ => {}
        }
        self.lost_on(result)
    }

    /// Prepares `sql` (once per connection), binds `params` by the types the server declares,
    /// and runs `f`.
    fn statement<T>(
        &mut self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&mut Client, &Statement, &[&(dyn ToSql + Sync)]) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        let stmt = match self.statements.get(sql) {
            Some(stmt) => stmt.clone(),
            None => {
                let stmt = self
                    .client()?
                    .prepare(&numbered(sql))
                    .map_err(|e| error(e).within(sql))?;
                self.statements.insert(sql.to_string(), stmt.clone());
                stmt
            }
        };
        let types = stmt.params();
        if types.len() != params.len() {
            return Err(DbError::other(format!(
                "a statement has {} placeholders and {} values",
                types.len(),
                params.len()
            )));
        }
        let bound = params
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (value, ty))| bind(value, ty).map_err(|e| e.at(i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| &**b as _).collect();
        let client = self.client()?;
        f(client, &stmt, &refs).map_err(error)
    }
}

fn lost_in_tx() -> DbError {
    DbError::new(
        DbErrorKind::Connection,
        "the connection to PostgreSQL was lost during a transaction; nothing of it was committed",
    )
}

impl DbError {
    /// Names the statement (its first words: statements hold placeholders, never values).
    fn within(self, sql: &str) -> Self {
        let words: Vec<&str> = sql.split_whitespace().take(8).collect();
        DbError::new(
            self.kind,
            format!("{} (in: {} …)", self.message, words.join(" ")),
        )
    }

    fn at(self, placeholder: usize) -> Self {
        DbError::new(self.kind, format!("${placeholder}: {}", self.message))
    }
}

/// `?N` placeholders as `$N`, outside quoted text.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

type Bound = Box<dyn ToSql + Sync + Send>;

/// `value` as the type the server declared for its placeholder.
fn bind(value: &Value, ty: &Type) -> Result<Bound, DbError> {
    let mismatch = |what: &str| DbError::other(format!("{what} cannot be bound as {ty}"));
    Ok(match (value, ty) {
        (Value::Null, ty) => null(ty).ok_or_else(|| mismatch("NULL"))?,
        (Value::Int(n), &Type::INT8) => Box::new(*n),
        (Value::Int(n), &Type::INT4) => {
            Box::new(i32::try_from(*n).map_err(|_| mismatch("a large integer"))?)
        }
        (Value::Int(n), &Type::INT2) => {
            Box::new(i16::try_from(*n).map_err(|_| mismatch("a large integer"))?)
        }
        (Value::Int(n), &Type::BOOL) => Box::new(*n != 0),
        (Value::Int(n), &Type::TIMESTAMPTZ | &Type::TIMESTAMP) => Box::new(time_of(*n)),
        (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
            Box::new(s.clone())
        }
        (Value::Bytes(b), &Type::BYTEA) => Box::new(b.clone()),
        (Value::Int(_), _) => return Err(mismatch("an integer")),
        (Value::Text(_), _) => return Err(mismatch("text")),
        (Value::Bytes(_), _) => return Err(mismatch("bytes")),
    })
}

fn null(ty: &Type) -> Option<Bound> {
    Some(match *ty {
        Type::INT8 => Box::new(None::<i64>),
        Type::INT4 => Box::new(None::<i32>),
        Type::INT2 => Box::new(None::<i16>),
        Type::BOOL => Box::new(None::<bool>),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => Box::new(None::<SystemTime>),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Box::new(None::<String>),
        Type::BYTEA => Box::new(None::<Vec<u8>>),
        _ => return None,
    })
}

/// PostgreSQL's `timestamptz` spans years 4713 BC to 294276 AD; keyport's bounds stay within
/// years 1 to 9999 (an open bound such as `i64::MAX` becomes year 9999).
const MS_MIN: i64 = -62_135_596_800_000;
const MS_MAX: i64 = 253_402_300_799_999;

fn time_of(ms: i64) -> SystemTime {
    let ms = ms.clamp(MS_MIN, MS_MAX);
    let span = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + span
    } else {
        UNIX_EPOCH - span
    }
}

fn ms_of(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn read_row(row: &postgres::Row) -> Result<Row, postgres::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|n| Value::Int(n.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|n| Value::Int(n.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|b| Value::Int(b.into())),
            Type::TIMESTAMPTZ | Type::TIMESTAMP => row
                .try_get::<_, Option<SystemTime>>(i)?
                .map(|t| Value::Int(ms_of(t))),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
            // Text, and anything else the server can send as text (an error if it cannot).
            _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

fn error(e: postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let kind = if *code == SqlState::UNIQUE_VIOLATION {
            DbErrorKind::Unique
        } else if code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            DbErrorKind::Connection
        } else {
            DbErrorKind::Other
        };
        // The message and the rule's name; the detail would quote the row's values.
        let message = match db.constraint() {
            Some(rule) => format!("{} ({rule})", db.message()),
            None => db.message().to_string(),
        };
        return DbError::new(kind, message);
    }
    let kind = if e.is_closed()
        || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
    {
        DbErrorKind::Connection
    } else {
        DbErrorKind::Other
    };
    // The causes too ("error performing TLS handshake: invalid peer certificate: …"); none
    // of them holds a bound value.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    DbError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT ?1, '?2', ?12 WHERE a = '' AND b = ?3"),
            "SELECT $1, '?2', $12 WHERE a = '' AND b = $3"
        );
    }

    #[test]
    fn times_round_trip_and_open_bounds_stay_in_range() {
        for ms in [0, 1, -1, 1_764_633_600_123, MS_MAX, MS_MIN] {
            assert_eq!(ms_of(time_of(ms)), ms);
        }
        assert_eq!(ms_of(time_of(i64::MAX)), MS_MAX);
    }

    #[test]
    fn described_addresses_have_no_password() {
        let shown = describe("postgres://kp:hunter2@db.example:6543/keyport");
        assert_eq!(shown, "postgres://kp@db.example:6543/keyport");
        assert!(!describe("host=h user=u password=hunter2").contains("hunter2"));
    }
}
