//! keyport's user CAs (relay `--auth ca`): at most one per state — `next`, `active`,
//! `previous` — with their sealed private halves, the workspaces' auth setting, and which CA
//! each workspace's sshd last accepted.

use super::db::{DbError, OptionalExtension, Row, params};

use super::audit::insert_audit;
use super::{Result, Store, StoreError, now_ms};
use crate::store::AuditEvent;

/// A stored user CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCaRecord {
    /// `ca1`, `ca2`, … (never reused).
    pub id: String,
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: String,
    /// The public key line, without comment.
    pub public_key: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The sealed private key.
    pub private_sealed: Vec<u8>,
    /// `next`, `active` or `previous`.
    pub state: String,
    /// ms since the epoch.
    pub created_at: i64,
    /// When it became active, ms since the epoch.
    pub promoted_at: Option<i64>,
}

/// A CA to store: the id and sequence number are given by the store.
#[derive(Debug, Clone)]
pub struct NewUserCa {
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: String,
    /// The public key line, without comment.
    pub public_key: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The private key, sealed (bound to purpose `user-ca` and the fingerprint).
    pub private_sealed: Vec<u8>,
}

/// A workspace's CA setting and its last accepted CA, for `ca status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceCaRecord {
    /// Workspace name.
    pub name: String,
    /// `key` or `ca`.
    pub auth: String,
    /// The id of the CA whose certificate its sshd last accepted.
    pub last_ca: Option<String>,
    /// When, ms since the epoch.
    pub last_ca_at: Option<i64>,
}

const CA_COLUMNS: &str =
    "id, algorithm, public_key, fingerprint, private_sealed, state, created_at, promoted_at";

fn ca_from_row(r: &Row) -> Result<UserCaRecord, DbError> {
    Ok(UserCaRecord {
        id: r.get(0)?,
        algorithm: r.get(1)?,
        public_key: r.get(2)?,
        fingerprint: r.get(3)?,
        private_sealed: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        promoted_at: r.get(7)?,
    })
}

fn state_taken(state: &str) -> StoreError {
    StoreError::Conflict {
        field: "ca",
        detail: format!("there is already a {state} user CA"),
    }
}

impl Store {
    /// Every user CA: active, then next, then previous.
    pub fn user_cas(&self) -> Result<Vec<UserCaRecord>> {
        Ok(self.db.query_map(
            &format!(
                "SELECT {CA_COLUMNS} FROM user_cas ORDER BY CASE state
               WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END"
            ),
            params![],
            ca_from_row,
        )?)
    }

    /// The user CA in `state`, if any.
    pub fn user_ca_in(&self, state: &str) -> Result<Option<UserCaRecord>> {
        Ok(self
            .db
            .query_row(
                &format!("SELECT {CA_COLUMNS} FROM user_cas WHERE state = ?1"),
                params![state],
                ca_from_row,
            )
            .optional()?)
    }

    /// Stores a CA in `state` (`active` for the first one, `next` for a rotation) with the id
    /// `ca<N>` after the highest ever given, in one transaction with its audit event (whose
    /// detail gets `ca`: the id). Conflict if a CA is in that state already (a process racing
    /// this one made it).
    pub fn insert_user_ca(
        &mut self,
        ca: &NewUserCa,
        state: &str,
        audit: &AuditEvent,
    ) -> Result<UserCaRecord> {
        let tx = self.write_sealed()?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM user_cas WHERE state = ?1)",
            params![state],
            |r| r.get(0),
        )?;
        if taken {
            return Err(state_taken(state));
        }
        // Ids are never reused: the highest ever given is kept in meta.
        let last: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'user_ca_seq'",
                params![],
                |r| r.get(0),
            )
            .optional()?;
        let seq = last.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + 1;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('user_ca_seq', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![seq.to_string()],
        )?;
        let id = format!("ca{seq}");
        let now = now_ms();
        let promoted = (state == "active").then_some(now);
        tx.execute(
            "INSERT INTO user_cas (id, seq, algorithm, public_key, fingerprint, private_sealed,
                                   state, created_at, promoted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                seq,
                ca.algorithm,
                ca.public_key,
                ca.fingerprint,
                ca.private_sealed,
                state,
                now,
                promoted
            ],
        )?;
        let mut audit = audit.clone();
        audit.detail["ca"] = id.clone().into();
        insert_audit(&tx, &audit)?;
        let record = tx.query_row(
            &format!("SELECT {CA_COLUMNS} FROM user_cas WHERE id = ?1"),
            params![&id],
            ca_from_row,
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// `next` becomes `active`, `active` becomes `previous`, with the audit event. Conflict
    /// when there is no next CA, or a previous one is still kept.
    pub fn promote_user_ca(&mut self, audit: &AuditEvent) -> Result<()> {
        let tx = self.write()?;
        let count = |state: &str| -> Result<bool> {
            Ok(tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM user_cas WHERE state = ?1)",
                params![state],
                |r| r.get(0),
            )?)
        };
        if !count("next")? {
            return Err(StoreError::Conflict {
                field: "ca",
                detail: "there is no next user CA to promote (keyport ca rotate makes one)".into(),
            });
        }
        if count("previous")? {
            return Err(StoreError::Conflict {
                field: "ca",
                detail: "a previous user CA is still kept: retire it first (keyport ca retire)"
                    .into(),
            });
        }
        // Active first, then next: `state` is unique, so no two rows may share one between.
        tx.execute(
            "UPDATE user_cas SET state = 'previous' WHERE state = 'active'",
            params![],
        )?;
        tx.execute(
            "UPDATE user_cas SET state = 'active', promoted_at = ?1 WHERE state = 'next'",
            params![now_ms()],
        )?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Drops the CA `id` (never the active one), with the audit event.
    pub fn remove_user_ca(&mut self, id: &str, audit: &AuditEvent) -> Result<()> {
        let tx = self.write()?;
        let n = tx.execute(
            "DELETE FROM user_cas WHERE id = ?1 AND state <> 'active'",
            params![id],
        )?;
        if n == 0 {
            return Err(StoreError::not_found("retirable user CA", id));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Sets how relay mode logs in to workspace `name` (`key` or `ca`), with the audit event.
    pub fn set_workspace_auth(&mut self, name: &str, auth: &str, audit: &AuditEvent) -> Result<()> {
        let tx = self.write()?;
        let n = tx.execute(
            "UPDATE workspaces SET auth = ?1, updated_at = ?2 WHERE name = ?3",
            params![auth, now_ms(), name],
        )?;
        if n == 0 {
            return Err(StoreError::not_found("workspace", name));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Notes that workspace `workspace_id`'s sshd accepted a certificate from CA `ca` (at most
    /// one write a minute per workspace while the CA stays the same).
    pub fn note_workspace_ca(&mut self, workspace_id: i64, ca: &str) -> Result<()> {
        let now = now_ms();
        self.db.execute(
            "UPDATE workspaces SET last_ca = ?1, last_ca_at = ?2
             WHERE id = ?3 AND (last_ca IS DISTINCT FROM ?1 OR last_ca_at IS NULL OR last_ca_at < ?4)",
            params![ca, now, workspace_id, now - 60_000],
        )?;
        Ok(())
    }

    /// Every workspace's CA setting and last accepted CA, by name.
    pub fn workspace_cas(&self) -> Result<Vec<WorkspaceCaRecord>> {
        Ok(self.db.query_map(
            "SELECT name, auth, last_ca, last_ca_at FROM workspaces ORDER BY name",
            params![],
            |r| {
                Ok(WorkspaceCaRecord {
                    name: r.get(0)?,
                    auth: r.get(1)?,
                    last_ca: r.get(2)?,
                    last_ca_at: r.get(3)?,
                })
            },
        )?)
    }
}
