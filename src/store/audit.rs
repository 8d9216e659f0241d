//! Audit events, the ledger of files keyport wrote, and each file secret's last delivery.

use super::db::{Db, DbError, Dialect, Row, params};

use super::db::OptionalExtension;
use super::{Result, Store, now_ms};
use crate::store::{AuditEvent, AuditRecord, DeliveryRecord, FileRecord};

impl Store {
    /// Records an event that is not part of a change (a use: an injection, a signature).
    pub fn record(&mut self, audit: &AuditEvent) -> Result<()> {
        // A transaction of its own: on PostgreSQL an event is three statements.
        let tx = self.db.transaction("BEGIN")?;
        insert_audit(&tx, audit)?;
        Ok(tx.commit()?)
    }

    /// Records several uses in one transaction.
    pub fn record_all(&mut self, audits: &[AuditEvent]) -> Result<()> {
        let tx = self.write()?;
        for audit in audits {
            insert_audit(&tx, audit)?;
        }
        Ok(tx.commit()?)
    }

    /// A number that grows with every change (every change commits its audit event with
    /// it): the newest committed event's id (on PostgreSQL read from the `change_generation`
    /// row that hands out the ids). Equal marks mean nothing changed in between.
    pub fn change_mark(&self) -> Result<i64> {
        let sql = match self.dialect() {
            Dialect::Sqlite => "SELECT COALESCE(MAX(id), 0) FROM audit_events",
            Dialect::Postgres => "SELECT n FROM change_generation",
        };
        Ok(self.db.query_row(sql, params![], |r| r.get(0))?)
    }

    /// (OS user, keyport user) of ledger entries on this host whose keyport user no longer
    /// exists. Files on workspaces (`workspace:…` places) are not among them: reaching them
    /// needs a login of the removed user.
    pub fn orphaned_files(&self) -> Result<Vec<(String, String)>> {
        Ok(self.db.query_map(
            "SELECT DISTINCT os_user, user_name FROM secret_files
             WHERE user_name NOT IN (SELECT name FROM users) AND os_user NOT LIKE 'workspace:%'
             ORDER BY os_user, user_name",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Audit events, oldest first, from `since_ms` on; only `user`'s when given.
    pub fn audit_events(&self, user: Option<&str>, since_ms: i64) -> Result<Vec<AuditRecord>> {
        self.audit_page(user, since_ms, 0, i64::MAX)
    }

    /// At most `limit` audit events with an id above `after`, oldest first, from `since_ms`
    /// on; only `user`'s when given. The last one's id is the next page's `after`.
    pub fn audit_page(
        &self,
        user: Option<&str>,
        since_ms: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let rows = self.db.query_map(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events
                 WHERE (CAST(?1 AS TEXT) IS NULL OR user_name = ?1) AND at >= ?2 AND id > ?3 ORDER BY id LIMIT ?4"
            ),
            params![user, since_ms, after, limit],
            audit_row,
        )?;
        rows.into_iter().map(audit_record).collect()
    }

    /// The newest `limit` events of `user` (everyone's: `None`) at `since_ms` to `until_ms`
    /// whose action is `kind` or starts with `kind.` (any: `None`), newest first.
    pub fn recent_audit_events(
        &self,
        user: Option<&str>,
        kind: Option<&str>,
        since_ms: i64,
        until_ms: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let rows = self.db.query_map(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_events
                 WHERE (CAST(?1 AS TEXT) IS NULL OR user_name = ?1)
                   AND (CAST(?2 AS TEXT) IS NULL OR action = ?2 OR substr(action, 1, length(?2) + 1) = ?2 || '.')
                   AND at >= ?3 AND at <= ?4
                 ORDER BY id DESC LIMIT ?5"
            ),
            params![user, kind, since_ms, until_ms, limit],
            audit_row,
        )?;
        rows.into_iter().map(audit_record).collect()
    }

    /// The files keyport wrote for `os_user`.
    pub fn files(&self, os_user: &str) -> Result<Vec<FileRecord>> {
        Ok(self.db.query_map(
            "SELECT os_user, path, user_name, secret_name, hash_sealed, written_at
             FROM secret_files WHERE os_user = ?1 ORDER BY path",
            params![os_user],
            |r| {
                Ok(FileRecord {
                    os_user: r.get(0)?,
                    path: r.get(1)?,
                    user_name: r.get(2)?,
                    secret_name: r.get(3)?,
                    hash_sealed: r.get(4)?,
                    written_at: r.get(5)?,
                })
            },
        )?)
    }

    /// The last delivery of each of `user_id`'s file secrets, per place, by secret name.
    pub fn deliveries(&self, user_id: i64) -> Result<Vec<DeliveryRecord>> {
        Ok(self.db.query_map(
            "SELECT s.name, d.place, d.path, d.outcome, d.reason, d.at
             FROM secret_deliveries d JOIN secrets s ON s.id = d.secret_id
             WHERE s.user_id = ?1 ORDER BY s.name, d.place",
            params![user_id],
            |r| {
                Ok(DeliveryRecord {
                    secret_name: r.get(0)?,
                    place: r.get(1)?,
                    path: r.get(2)?,
                    outcome: r.get(3)?,
                    reason: r.get(4)?,
                    at: r.get(5)?,
                })
            },
        )?)
    }

    /// Records and forgets ledger entries of `os_user`, records `user_id`'s deliveries there,
    /// with their audit events, in one transaction.
    pub fn update_ledger(
        &mut self,
        os_user: &str,
        record: &[FileRecord],
        forget: &[String],
        deliveries: (i64, &[DeliveryRecord]),
        audits: &[AuditEvent],
    ) -> Result<()> {
        let tx = self.write_sealed()?;
        let (user_id, deliveries) = deliveries;
        for d in deliveries {
            // By name: a secret deleted meanwhile has no row to attach it to, and needs none.
            let secret: Option<i64> = tx
                .query_row(
                    "SELECT id FROM secrets WHERE user_id = ?1 AND name = ?2",
                    params![user_id, d.secret_name],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(secret_id) = secret else { continue };
            tx.execute(
                "INSERT INTO secret_deliveries (secret_id, place, path, outcome, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (secret_id, place) DO UPDATE SET path = excluded.path,
                     outcome = excluded.outcome, reason = excluded.reason, at = excluded.at",
                params![secret_id, d.place, d.path, d.outcome, d.reason, d.at],
            )?;
        }
        for file in record {
            tx.execute(
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
        }
        for path in forget {
            tx.execute(
                "DELETE FROM secret_files WHERE os_user = ?1 AND path = ?2",
                params![os_user, path],
            )?;
        }
        for audit in audits {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Inserts an audit event; callers pass their open transaction so the event commits with the
/// change it describes.
pub(super) fn insert_audit(conn: &Db, event: &AuditEvent) -> Result<()> {
    let detail = event.detail.to_string();
    if conn.dialect() == Dialect::Postgres {
        // The event's id is the next change generation: the row's lock is held to commit, so
        // ids are committed in the order they are taken, across replicas, and the generation
        // is the newest committed id (a sequence's ids commit out of order). Every replica
        // LISTENing hears of it at commit (the payload is the id, never a value).
        let id: i64 = conn.query_row(
            "UPDATE change_generation SET n = n + 1 RETURNING n",
            params![],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO audit_events (id, at, actor, user_name, action, secret_name, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                now_ms(),
                event.actor,
                event.user_name,
                event.action,
                event.secret_name,
                detail
            ],
        )?;
        conn.execute(
            "SELECT pg_notify('keyport_changes', ?1)",
            params![id.to_string()],
        )?;
        return Ok(());
    }
    conn.execute(
        "INSERT INTO audit_events (at, actor, user_name, action, secret_name, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms(),
            event.actor,
            event.user_name,
            event.action,
            event.secret_name,
            detail
        ],
    )?;
    Ok(())
}

const AUDIT_COLUMNS: &str = "id, at, actor, user_name, action, secret_name, detail";

/// An event row of [`AUDIT_COLUMNS`], its detail still JSON text.
fn audit_row(r: &Row) -> Result<(AuditRecord, String), DbError> {
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
        r.get(6)?,
    ))
}

fn audit_record(row: (AuditRecord, String)) -> Result<AuditRecord> {
    let (mut record, detail) = row;
    record.detail = serde_json::from_str(&detail)?;
    Ok(record)
}
