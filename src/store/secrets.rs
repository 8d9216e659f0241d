//! Secrets: metadata reads, the sealed value on its own, and the one read-check-write
//! transaction every change goes through.

use super::db::{Db, DbError, OptionalExtension, Row, params};

use super::audit::insert_audit;
use super::{Result, Store, StoreError, conflict, now_ms};
use crate::store::{AuditEvent, SecretChange, SecretRecord};

const SECRET_COLUMNS: &str = "id, name, description, env_name, file_path, file_resolved, enabled, \
                              value_len, created_at, updated_at, kind, rotate_after_secs, mask, \
                              value_updated_at, source, required";

impl Store {
    /// The user's secrets (metadata only), sorted by name.
    pub fn secrets(&self, user_id: i64) -> Result<Vec<SecretRecord>> {
        query_secrets(&self.db, user_id)
    }

    /// How many secrets are stored, over all users (for metrics).
    pub fn secret_count(&self) -> Result<i64> {
        Ok(self
            .db
            .query_row("SELECT COUNT(*) FROM secrets", params![], |r| r.get(0))?)
    }

    /// The user's enabled secrets with their sealed values, sorted by name: one cached
    /// statement for a whole session start.
    pub fn enabled_secrets_sealed(&self, user_id: i64) -> Result<Vec<(SecretRecord, Vec<u8>)>> {
        Ok(self.db.query_map(
            &format!(
                "SELECT {SECRET_COLUMNS}, value_sealed FROM secrets \
                 WHERE user_id = ?1 AND enabled <> 0 ORDER BY name"
            ),
            params![user_id],
            |r| Ok((secret_from_row(r)?, r.get(16)?)),
        )?)
    }

    /// One secret's metadata.
    pub fn secret(&self, user_id: i64, name: &str) -> Result<SecretRecord> {
        query_secret(&self.db, user_id, name)
    }

    /// One secret's sealed value.
    pub fn secret_sealed(&self, user_id: i64, name: &str) -> Result<Vec<u8>> {
        self.db
            .query_row(
                "SELECT value_sealed FROM secrets WHERE user_id = ?1 AND name = ?2",
                params![user_id, name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::not_found("secret", name))
    }

    /// Reads the user's secrets and applies the changes `decide` returns, with their audit
    /// events, in one write transaction: no other writer can slip in between the check and the
    /// write, so validation against "the other secrets" still holds when the change lands, and
    /// a batch (an import) lands whole or not at all. Returns the written secrets' metadata.
    pub fn change_secrets<E>(
        &mut self,
        user_id: i64,
        decide: impl FnOnce(&[SecretRecord]) -> Result<(Vec<SecretChange>, Vec<AuditEvent>), E>,
    ) -> Result<Vec<SecretRecord>, E>
    where
        E: From<StoreError>,
    {
        let tx = self.write_user_sealed(user_id)?;
        let current = query_secrets(&tx, user_id)?;
        let (changes, audits) = decide(&current)?;
        let now = now_ms();
        let mut written = Vec::new();
        for change in &changes {
            match change {
                SecretChange::Insert(row) => {
                    tx.execute(
                        "INSERT INTO secrets (user_id, name, description, env_name, env_key,
                             file_path, file_resolved, enabled, value_sealed, value_len,
                             created_at, updated_at, value_updated_at, kind, rotate_after_secs,
                             mask, source, required)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?11, ?12,
                                 ?13, ?14, ?15, ?16)",
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
                            now,
                            row.kind,
                            row.rotate_after_secs,
                            row.mask,
                            row.source,
                            row.required
                        ],
                    )
                    .map_err(secret_conflict)?;
                    written.push(row.name.as_str());
                }
                SecretChange::Update { id, row } => {
                    tx.execute(
                        "UPDATE secrets SET description = ?2, env_name = ?3, env_key = ?4,
                             file_path = ?5, file_resolved = ?6, enabled = ?7,
                             value_sealed = COALESCE(?8, value_sealed),
                             value_len = COALESCE(?9, value_len), updated_at = ?10,
                             value_updated_at = CASE WHEN ?8 IS NULL THEN value_updated_at
                                                     ELSE ?10 END,
                             kind = ?11, rotate_after_secs = ?12, mask = ?13,
                             source = ?14, required = ?15
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
                            now,
                            row.kind,
                            row.rotate_after_secs,
                            row.mask,
                            row.source,
                            row.required
                        ],
                    )
                    .map_err(secret_conflict)?;
                    written.push(row.name.as_str());
                }
                SecretChange::Delete { id } => {
                    tx.execute("DELETE FROM secrets WHERE id = ?1", params![id])
                        .map_err(StoreError::from)?;
                }
            }
        }
        for audit in &audits {
            insert_audit(&tx, audit)?;
        }
        let records = written
            .into_iter()
            .map(|name| query_secret(&tx, user_id, name))
            .collect::<Result<Vec<_>>>()?;
        tx.commit().map_err(StoreError::from)?;
        Ok(records)
    }
}

fn secret_from_row(r: &Row) -> Result<SecretRecord, DbError> {
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
        kind: r.get(10)?,
        rotate_after_secs: r.get(11)?,
        mask: r.get(12)?,
        value_updated_at: r.get(13)?,
        source: r.get(14)?,
        required: r.get(15)?,
    })
}

fn query_secrets(conn: &Db, user_id: i64) -> Result<Vec<SecretRecord>> {
    Ok(conn.query_map(
        &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE user_id = ?1 ORDER BY name"),
        params![user_id],
        secret_from_row,
    )?)
}

fn query_secret(conn: &Db, user_id: i64, name: &str) -> Result<SecretRecord> {
    conn.query_row(
        &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE user_id = ?1 AND name = ?2"),
        params![user_id, name],
        secret_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found("secret", name))
}

/// Names the column behind a UNIQUE failure on `secrets` from the backend's message (SQLite:
/// "UNIQUE constraint failed: secrets.user_id, secrets.env_key"; PostgreSQL names the rule,
/// "secrets_user_id_env_key_key"). Validation reports these first; this only covers a writer
/// that raced past it.
fn secret_conflict(e: DbError) -> StoreError {
    let message = e.message.clone();
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
