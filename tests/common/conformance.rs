//! The store conformance suite's runner: the same cases on each backend. On SQLite each case
//! gets a sandbox with the data dir's file; on PostgreSQL one real server (Debian's package,
//! [`super::postgres::Postgres`]) serves the whole run and each case gets a database of its
//! own. Every case runs even when one fails; the run fails naming each failed case.
//!
//! Cases reach the database's rows with [`Raw`], plain SQL on either backend, for what the
//! store must not offer (copying a sealed blob into another user's row, counting orphans).

use std::panic::{AssertUnwindSafe, catch_unwind};

use keyport::store::Database;

use super::Sandbox;
use super::postgres::Postgres;

/// A named case.
pub type Case = (&'static str, fn(&Sandbox));

/// Runs every case on SQLite.
pub fn on_sqlite(cases: &[Case]) {
    run("SQLite", cases, |_| Sandbox::new());
}

/// Runs every case on a real PostgreSQL, a fresh database each.
pub fn on_postgres(cases: &[Case]) {
    let host = Sandbox::new();
    let pg = Postgres::start(&host);
    run("PostgreSQL", cases, |i| {
        let name = format!("case_{i}");
        pg.psql(&format!("CREATE DATABASE {name}"));
        Sandbox::on(Database::Postgres(pg.url(
            Postgres::SUPERUSER,
            Postgres::SUPERUSER_PASSWORD,
            &name,
        )))
    });
}

fn run(backend: &str, cases: &[Case], sandbox: impl Fn(usize) -> Sandbox) {
    let mut failed = Vec::new();
    for (i, (name, case)) in cases.iter().enumerate() {
        let sb = sandbox(i);
        eprintln!("--- {name} on {backend}");
        if catch_unwind(AssertUnwindSafe(|| case(&sb))).is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed on {backend}: {failed:?}",
        failed.len(),
        cases.len()
    );
}

/// `conformance!(case_a, case_b, …)`: the test `on_sqlite` and the test `on_postgres`, each
/// running every case.
#[macro_export]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        const CASES: &[common::conformance::Case] = &[$((stringify!($case), $case)),*];

        #[test]
        fn on_sqlite() {
            common::conformance::on_sqlite(CASES);
        }

        #[test]
        fn on_postgres() {
            common::conformance::on_postgres(CASES);
        }
    };
}

/// Plain SQL on the sandbox's database, outside the store.
pub enum Raw {
    /// The SQLite file.
    Sqlite(rusqlite::Connection),
    /// The PostgreSQL database.
    Postgres(postgres::Client),
}

impl Raw {
    /// A connection to `sb`'s database.
    pub fn open(sb: &Sandbox) -> Self {
        match sb.database() {
            Database::File(path) => Raw::Sqlite(rusqlite::Connection::open(path).unwrap()),
            Database::Postgres(url) => {
                Raw::Postgres(postgres::Client::connect(&url, postgres::NoTls).unwrap())
            }
        }
    }

    /// Runs a statement without parameters.
    pub fn execute(&mut self, sql: &str) {
        match self {
            Raw::Sqlite(c) => {
                c.execute_batch(sql).unwrap();
            }
            Raw::Postgres(c) => c.batch_execute(sql).unwrap(),
        }
    }

    /// The one integer `sql` returns.
    pub fn count(&mut self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(c) => c.query_row(sql, [], |r| r.get(0)).unwrap(),
            Raw::Postgres(c) => c.query_one(sql, &[]).unwrap().get(0),
        }
    }

    /// Rows of three texts and a blob.
    pub fn blobs(&mut self, sql: &str) -> Vec<(String, String, String, Vec<u8>)> {
        match self {
            Raw::Sqlite(c) => c
                .prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            Raw::Postgres(c) => c
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
        }
    }

    /// Every row of every table as text, sorted: equal dumps mean equal state. (A sequence's
    /// next value is not state: a rejected insert may take one.)
    pub fn dump(&mut self, sb: &Sandbox) -> String {
        match self {
            Raw::Sqlite(_) => super::dump(&sb.db()),
            Raw::Postgres(c) => {
                let tables: Vec<String> = c
                    .query(
                        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
                         AND tablename <> 'nodes' ORDER BY 1",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut out = String::new();
                for table in tables {
                    let mut rows: Vec<String> = c
                        .query(&format!("SELECT CAST(t AS text) FROM \"{table}\" t"), &[])
                        .unwrap()
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    rows.sort();
                    out.push_str(&format!("{table}:\n{}\n", rows.join("\n")));
                }
                out
            }
        }
    }

    /// Every stored byte a reader of the database could see, for "no value anywhere": the
    /// SQLite file and its WAL, or every row of every PostgreSQL table as text (bytea as hex,
    /// so a value must not appear hex-encoded either).
    pub fn everything(&mut self, sb: &Sandbox) -> Vec<u8> {
        match self {
            Raw::Sqlite(_) => {
                let mut bytes = std::fs::read(sb.db()).unwrap();
                bytes.extend(std::fs::read(sb.data().join("keyport.db-wal")).unwrap_or_default());
                bytes
            }
            Raw::Postgres(_) => self.dump(sb).into_bytes(),
        }
    }
}

/// `needle` in `haystack` as bytes or as lower-case hex (PostgreSQL's text form of bytea).
pub fn stored(haystack: &[u8], needle: &[u8]) -> bool {
    let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
    super::contains(haystack, needle) || super::contains(haystack, hex.as_bytes())
}
