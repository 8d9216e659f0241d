//! Users, their login keys, key pairs and API tokens, and the host key.

use super::db::{Db, DbError, OptionalExtension, Row, ToValue, params};

use super::audit::insert_audit;
use super::{Result, Store, StoreError, conflict, now_ms};
use crate::store::{
    AuditEvent, KeyPairRecord, LoginKeyRecord, NewLoginKey, NewToken, NewUser, NewUserKey,
    TokenRecord, UserRecord,
};

pub(super) const USER_COLUMNS: &str = "id, name, is_admin, os_user, created_at, updated_at";

impl Store {
    /// Creates a user with their login keys, the key pair `seal_key` returns and, if given, a
    /// first API token, in one transaction. `seal_key` gets the new user's id, which the
    /// sealed key is bound to.
    pub fn create_user<E>(
        &mut self,
        user: &NewUser,
        login_keys: &[NewLoginKey],
        token: Option<&NewToken>,
        audit: &AuditEvent,
        seal_key: impl FnOnce(i64) -> Result<NewUserKey, E>,
    ) -> Result<UserRecord, E>
    where
        E: From<StoreError>,
    {
        let tx = self.write_sealed()?;
        let now = now_ms();
        let id: i64 = tx
            .query_row(
                "INSERT INTO users (name, is_admin, os_user, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
                params![user.name, user.is_admin, user.os_user, now],
                |r| r.get(0),
            )
            .map_err(|e| {
                conflict(e, "user", || {
                    format!("a user named {} already exists", user.name)
                })
            })?;
        put_user_key(&tx, id, &seal_key(id)?, now)?;
        for login in login_keys {
            insert_login_key(&tx, id, login, now)?;
        }
        if let Some(token) = token {
            insert_token(&tx, id, token, now)?;
        }
        insert_audit(&tx, audit)?;
        let record = query_user(&tx, &user.name)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(record)
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Result<UserRecord> {
        query_user(&self.db, name)
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        Ok(self.db.query_map(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
            params![],
            user_from_row,
        )?)
    }

    /// Removes a user and, by cascade, their secrets, key pair, login keys and tokens.
    pub fn remove_user(&mut self, name: &str, audit: &AuditEvent) -> Result<()> {
        let tx = self.write()?;
        if tx.execute("DELETE FROM users WHERE name = ?1", params![name])? == 0 {
            return Err(StoreError::not_found("user", name));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The user's login keys, oldest first.
    pub fn login_keys(&self, user_id: i64) -> Result<Vec<LoginKeyRecord>> {
        Ok(self.db.query_map(
            "SELECT id, algorithm, public_key, fingerprint, comment, created_at
             FROM login_keys WHERE user_id = ?1 ORDER BY id",
            params![user_id],
            |r| {
                Ok(LoginKeyRecord {
                    id: r.get(0)?,
                    algorithm: r.get(1)?,
                    public_key: r.get(2)?,
                    fingerprint: r.get(3)?,
                    comment: r.get(4)?,
                    created_at: r.get(5)?,
                })
            },
        )?)
    }

    /// Adds login keys to a user, all or none.
    pub fn add_login_keys(
        &mut self,
        user_id: i64,
        keys: &[NewLoginKey],
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self.write()?;
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
        self.delete_audited(
            "DELETE FROM login_keys WHERE user_id = ?1 AND fingerprint = ?2",
            params![user_id, fingerprint],
            ("login key", fingerprint),
            audit,
        )
    }

    /// The user's key pair (private half sealed).
    pub fn user_key(&self, user_id: i64) -> Result<KeyPairRecord> {
        self.db
            .query_row(
                "SELECT algorithm, public_key, fingerprint, private_sealed, created_at
                 FROM user_keys WHERE user_id = ?1",
                params![user_id],
                key_pair_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::not_found("user key of user id", user_id.to_string()))
    }

    /// Replaces the user's key pair.
    pub fn replace_user_key(
        &mut self,
        user_id: i64,
        key: &NewUserKey,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self.write_sealed()?;
        put_user_key(&tx, user_id, key, now_ms())?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The host key for `algorithm`, if one was created.
    pub fn host_key(&self, algorithm: &str) -> Result<Option<KeyPairRecord>> {
        Ok(self
            .db
            .query_row(
                "SELECT algorithm, public_key, fingerprint, private_sealed, created_at
                 FROM host_keys WHERE algorithm = ?1",
                params![algorithm],
                key_pair_from_row,
            )
            .optional()?)
    }

    /// Stores a host key unless one for its algorithm exists; returns the one stored, so two
    /// processes racing to create it agree on one.
    pub fn insert_host_key(&mut self, key: &KeyPairRecord) -> Result<KeyPairRecord> {
        let tx = self.write_sealed()?;
        tx.execute(
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
        tx.commit()?;
        self.host_key(&key.algorithm)?
            .ok_or_else(|| StoreError::not_found("host key", key.algorithm.clone()))
    }

    /// The user a token hash belongs to; notes the token's use at most once a minute (a write
    /// per request would cost an fsync per request).
    pub fn user_by_token(&mut self, token_hash: &str) -> Result<Option<UserRecord>> {
        let found: Option<(i64, Option<i64>, String)> = self
            .db
            .query_row(
                "SELECT t.id, t.last_used_at, u.name FROM api_tokens t
                 JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?1",
                params![token_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((token_id, last_used, name)) = found else {
            return Ok(None);
        };
        let now = now_ms();
        if last_used.is_none_or(|t| now - t > 60_000) {
            self.db.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
                params![token_id, now],
            )?;
        }
        query_user(&self.db, &name).map(Some)
    }

    /// The user's tokens (names and times; the hashes stay inside).
    pub fn tokens(&self, user_id: i64) -> Result<Vec<TokenRecord>> {
        Ok(self.db.query_map(
            "SELECT name, created_at, last_used_at FROM api_tokens WHERE user_id = ?1 ORDER BY name",
            params![user_id],
            |r| {
                Ok(TokenRecord {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    last_used_at: r.get(2)?,
                })
            },
        )?)
    }

    /// Revokes the user's token named `name`.
    pub fn revoke_token(&mut self, user_id: i64, name: &str, audit: &AuditEvent) -> Result<()> {
        self.delete_audited(
            "DELETE FROM api_tokens WHERE user_id = ?1 AND name = ?2",
            params![user_id, name],
            ("token", name),
            audit,
        )
    }

    /// Deletes what `sql` names together with its audit event; `what` (kind, name) is not
    /// found when nothing was deleted.
    fn delete_audited(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        what: (&'static str, &str),
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self.write()?;
        if tx.execute(sql, params)? == 0 {
            return Err(StoreError::not_found(what.0, what.1));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a new API token by its hash.
    pub fn create_token(
        &mut self,
        user_id: i64,
        token: &NewToken,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self.write()?;
        insert_token(&tx, user_id, token, now_ms())?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }
}

fn key_pair_from_row(r: &Row) -> Result<KeyPairRecord, DbError> {
    Ok(KeyPairRecord {
        algorithm: r.get(0)?,
        public_key: r.get(1)?,
        fingerprint: r.get(2)?,
        private_sealed: r.get(3)?,
        created_at: r.get(4)?,
    })
}

pub(super) fn user_from_row(r: &Row) -> Result<UserRecord, DbError> {
    Ok(UserRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        is_admin: r.get(2)?,
        os_user: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

fn query_user(conn: &Db, name: &str) -> Result<UserRecord> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
        params![name],
        user_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found("user", name))
}

fn put_user_key(conn: &Db, user_id: i64, key: &NewUserKey, now: i64) -> Result<()> {
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

fn insert_login_key(conn: &Db, user_id: i64, key: &NewLoginKey, now: i64) -> Result<()> {
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

fn insert_token(conn: &Db, user_id: i64, token: &NewToken, now: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![user_id, token.name, token.hash, now],
    )
    .map_err(|e| {
        conflict(e, "token", || {
            format!("a token named {} already exists", token.name)
        })
    })?;
    Ok(())
}
