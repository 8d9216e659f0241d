//! OpenBao's database secrets engine against a real PostgreSQL ([`super::postgres`]): more of
//! [`OpenBao`]'s setup helpers (its own module because `openbao.rs` holds the server and the
//! other engines). [`OpenBao::enable_database_with_leases`] mounts `database/`, connects it to
//! the server as a superuser role made for it, and makes role [`DB_ROLE`] whose credentials
//! are a PostgreSQL login role created per request, with a **renewable** lease: renewing moves
//! the role's `VALID UNTIL`, revoking the lease drops the role. [`Postgres::login`] tells
//! whether a generated user can (still) log in.

use std::time::Duration;

use serde_json::json;

use super::openbao::{Lease, OpenBao, lease_of};
use super::postgres::Postgres;

/// The database role [`OpenBao::enable_database_with_leases`] makes:
/// `GET /v1/database/creds/readonly`.
pub const DB_ROLE: &str = "readonly";
/// The connection it configures (`database/config/pg`).
pub const DB_CONNECTION: &str = "pg";
/// The PostgreSQL superuser role made for OpenBao to connect as.
pub const DB_ADMIN: &str = "bao_admin";
const DB_ADMIN_PASSWORD: &str = "bao-admin-test-pw";
/// A table in database `postgres` the generated roles may read: `keyport_probe(v text)` holding
/// one row, `'reachable'`.
pub const DB_PROBE_TABLE: &str = "keyport_probe";

/// Credentials from the database engine: the lease and the login it stands for.
#[derive(Debug, Clone)]
pub struct DbCreds {
    pub lease: Lease,
    /// `data.username`: the PostgreSQL role made for this lease.
    pub username: String,
    /// `data.password`.
    pub password: String,
}

impl OpenBao {
    /// Mounts the database engine at `database/`, connected (`postgresql-database-plugin`) to
    /// `pg` as [`DB_ADMIN`] (a superuser role it creates there), with role [`DB_ROLE`]: each
    /// read of `database/creds/readonly` creates a login role that may read
    /// [`DB_PROBE_TABLE`], valid until its lease ends, under a renewable lease of
    /// `default_ttl` (renewable up to `max_ttl` from its creation). Returns the role.
    pub fn enable_database_with_leases(
        &self,
        pg: &Postgres,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> &'static str {
        pg.psql(&format!(
            "CREATE ROLE {DB_ADMIN} WITH LOGIN SUPERUSER PASSWORD '{DB_ADMIN_PASSWORD}'"
        ));
        pg.psql(&format!(
            "CREATE TABLE IF NOT EXISTS {DB_PROBE_TABLE} (v text); \
             INSERT INTO {DB_PROBE_TABLE} VALUES ('reachable')"
        ));
        self.root(
            "POST",
            "sys/mounts/database",
            Some(json!({ "type": "database" })),
        );
        self.root(
            "POST",
            &format!("database/config/{DB_CONNECTION}"),
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
                    pg.port()
                ),
                "username": DB_ADMIN,
                "password": DB_ADMIN_PASSWORD,
                "allowed_roles": [DB_ROLE],
                "verify_connection": true,
            })),
        );
        self.root(
            "POST",
            &format!("database/roles/{DB_ROLE}"),
            Some(json!({
                "db_name": DB_CONNECTION,
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                    format!("GRANT SELECT ON {DB_PROBE_TABLE} TO \"{{{{name}}}}\";"),
                ],
                "default_ttl": format!("{}s", default_ttl.as_secs()),
                "max_ttl": format!("{}s", max_ttl.as_secs()),
            })),
        );
        DB_ROLE
    }

    /// Reads `database/creds/ROLE` as root: a new PostgreSQL login and its lease.
    pub fn db_creds(&self, role: &str) -> DbCreds {
        let body = self.root("GET", &format!("database/creds/{role}"), None);
        let field = |name: &str| {
            body["data"][name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {body}"))
                .to_string()
        };
        DbCreds {
            username: field("username"),
            password: field("password"),
            lease: lease_of(&body),
        }
    }
}

impl OpenBao {
    /// The live leases whose ids start with `prefix` (`database/creds/readonly/`: the `/` at the
    /// end matters), as whole lease ids: what was handed out and is neither revoked nor
    /// expired, whoever asked for it.
    pub fn leases_under(&self, prefix: &str) -> Vec<String> {
        let reply = self.call(
            "GET",
            &format!("sys/leases/lookup/{prefix}?list=true"),
            Some(Self::ROOT_TOKEN),
            None,
        );
        if reply.status == 404 {
            return Vec::new();
        }
        assert!(reply.ok(), "listing leases under {prefix}: {reply:?}");
        reply.body["data"]["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("no keys in {reply:?}"))
            .iter()
            .map(|k| format!("{prefix}{}", k.as_str().unwrap()))
            .collect()
    }
}

/// The login roles the database engine made in `pg` and has not dropped: every role but the
/// superuser, [`DB_ADMIN`] and PostgreSQL's own `pg_*`.
pub fn generated_roles(pg: &Postgres) -> Vec<String> {
    let rows = pg.psql(&format!(
        "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' \
         AND rolname NOT IN ('{}', '{DB_ADMIN}') ORDER BY rolname",
        Postgres::SUPERUSER
    ));
    rows.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The generated role `password` logs in as: the one of [`generated_roles`] it opens (and
/// reads [`DB_PROBE_TABLE`] with), or `None` when it opens none.
pub fn role_of_password(pg: &Postgres, password: &str) -> Option<String> {
    generated_roles(pg)
        .into_iter()
        .find(|role| db_login(pg, role, password).is_ok())
}

impl DbCreds {
    /// Logs in to `pg` with these credentials and reads [`DB_PROBE_TABLE`]: `Ok` when that
    /// works (the role exists, the password is right and still valid), else why not.
    pub fn login(&self, pg: &Postgres) -> Result<(), String> {
        db_login(pg, &self.username, &self.password)
    }
}

/// Logs in to `pg` as `username` with `password` and reads [`DB_PROBE_TABLE`] (what a
/// generated role may do): `Ok` when that works, else what `psql` said.
pub fn db_login(pg: &Postgres, username: &str, password: &str) -> Result<(), String> {
    let rows = pg.run_sql(
        username,
        password,
        "postgres",
        &format!("SELECT v FROM {DB_PROBE_TABLE}"),
    )?;
    if rows == "reachable" {
        Ok(())
    } else {
        Err(format!("logged in, but {DB_PROBE_TABLE} holds {rows:?}"))
    }
}
