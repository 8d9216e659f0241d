//! Relay-mode workspaces: the upstream sshd's address and login, its pinned host keys, and the
//! grants that say which users may use it (and with which login).

use super::db::{Db, DbError, OptionalExtension, Row, params};

use super::audit::insert_audit;
use super::{Result, Store, StoreError, conflict, now_ms};
use crate::store::{
    AuditEvent, NewWorkspace, NewWorkspaceHostKey, WorkspaceGrantRecord, WorkspaceHostKeyRecord,
    WorkspaceRecord,
};

const WORKSPACE_COLUMNS: &str = "id, name, address, os_user, created_at, updated_at, auth";

impl Store {
    /// Creates a workspace with its host keys and its owners' grants, in one transaction with
    /// its audit event. `owners` are user ids.
    pub fn create_workspace(
        &mut self,
        workspace: &NewWorkspace,
        host_keys: &[NewWorkspaceHostKey],
        owners: &[i64],
        audit: &AuditEvent,
    ) -> Result<WorkspaceRecord> {
        let tx = self.write()?;
        let now = now_ms();
        let id: i64 = tx
            .query_row(
                "INSERT INTO workspaces (name, address, os_user, created_at, updated_at, auth)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5) RETURNING id",
                params![
                    workspace.name,
                    workspace.address,
                    workspace.os_user,
                    now,
                    workspace.auth
                ],
                |r| r.get(0),
            )
            .map_err(|e| {
                conflict(e, "name", || {
                    format!("a workspace named {} already exists", workspace.name)
                })
            })?;
        for key in host_keys {
            insert_host_key(&tx, id, key, now)?;
        }
        for user_id in owners {
            // A user named twice as owner is one grant.
            tx.execute(
                "INSERT INTO workspace_grants (workspace_id, user_id, owner, os_user, created_at)
                 VALUES (?1, ?2, 1, NULL, ?3) ON CONFLICT (workspace_id, user_id) DO NOTHING",
                params![id, user_id, now],
            )?;
        }
        insert_audit(&tx, audit)?;
        let record = query_workspace(&tx, &workspace.name)?;
        tx.commit()?;
        Ok(record)
    }

    /// The workspace named `name`.
    pub fn workspace(&self, name: &str) -> Result<WorkspaceRecord> {
        query_workspace(&self.db, name)
    }

    /// The workspace with row id `id`.
    pub fn workspace_by_id(&self, id: i64) -> Result<WorkspaceRecord> {
        self.db
            .query_row(
                &format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = ?1"),
                params![id],
                workspace_from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::not_found("workspace id", id.to_string()))
    }

    /// Every workspace, sorted by name.
    pub fn workspaces(&self) -> Result<Vec<WorkspaceRecord>> {
        Ok(self.db.query_map(
            &format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY name"),
            params![],
            workspace_from_row,
        )?)
    }

    /// The workspaces `user_id` has a grant for, with that grant, sorted by name.
    pub fn granted_workspaces(
        &self,
        user_id: i64,
    ) -> Result<Vec<(WorkspaceRecord, WorkspaceGrantRecord)>> {
        Ok(self.db.query_map(
            "SELECT w.id, w.name, w.address, w.os_user, w.created_at, w.updated_at, w.auth,
                    g.user_id, u.name, g.owner, g.os_user, g.created_at
             FROM workspace_grants g
             JOIN workspaces w ON w.id = g.workspace_id
             JOIN users u ON u.id = g.user_id
             WHERE g.user_id = ?1 ORDER BY w.name",
            params![user_id],
            |r| Ok((workspace_from_row(r)?, grant_from_row(r, 7)?)),
        )?)
    }

    /// The workspace `name` with `user_id`'s grant and its host keys, read in one snapshot;
    /// `None` when the workspace does not exist or the user has no grant for it.
    pub fn workspace_for_user(
        &self,
        user_id: i64,
        name: &str,
    ) -> Result<
        Option<(
            WorkspaceRecord,
            WorkspaceGrantRecord,
            Vec<WorkspaceHostKeyRecord>,
        )>,
    > {
        // One read transaction, so a workspace removed meanwhile is not seen without its keys.
        let tx = self.read()?;
        let found = tx
            .query_row(
                "SELECT w.id, w.name, w.address, w.os_user, w.created_at, w.updated_at, w.auth,
                        g.user_id, u.name, g.owner, g.os_user, g.created_at
                 FROM workspaces w
                 JOIN workspace_grants g ON g.workspace_id = w.id
                 JOIN users u ON u.id = g.user_id
                 WHERE w.name = ?1 AND g.user_id = ?2",
                params![name, user_id],
                |r| Ok((workspace_from_row(r)?, grant_from_row(r, 7)?)),
            )
            .optional()?;
        let Some((workspace, grant)) = found else {
            return Ok(None);
        };
        let keys = query_host_keys(&tx, workspace.id)?;
        tx.commit()?;
        Ok(Some((workspace, grant, keys)))
    }

    /// The workspace's pinned host keys, oldest first.
    pub fn workspace_host_keys(&self, workspace_id: i64) -> Result<Vec<WorkspaceHostKeyRecord>> {
        query_host_keys(&self.db, workspace_id)
    }

    /// The workspace's grants, sorted by user name.
    pub fn workspace_grants(&self, workspace_id: i64) -> Result<Vec<WorkspaceGrantRecord>> {
        Ok(self.db.query_map(
            "SELECT g.user_id, u.name, g.owner, g.os_user, g.created_at
             FROM workspace_grants g JOIN users u ON u.id = g.user_id
             WHERE g.workspace_id = ?1 ORDER BY u.name",
            params![workspace_id],
            |r| grant_from_row(r, 0),
        )?)
    }

    /// Removes a workspace and, by cascade, its host keys and grants.
    pub fn remove_workspace(&mut self, name: &str, audit: &AuditEvent) -> Result<()> {
        let tx = self.write()?;
        if tx.execute("DELETE FROM workspaces WHERE name = ?1", params![name])? == 0 {
            return Err(StoreError::not_found("workspace", name));
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Grants `user_id` the workspace, or changes their grant: `os_user` becomes their login
    /// override (`None` clears it), and `owner` makes them an owner (an owner stays one; only
    /// a revoke ends ownership).
    pub fn grant_workspace(
        &mut self,
        workspace_id: i64,
        user_id: i64,
        owner: bool,
        os_user: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self.write()?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO workspace_grants (workspace_id, user_id, owner, os_user, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET
                 os_user = excluded.os_user, owner = CASE WHEN excluded.owner > workspace_grants.owner
                     THEN excluded.owner ELSE workspace_grants.owner END",
            params![workspace_id, user_id, owner, os_user, now],
        )?;
        touch(&tx, workspace_id, now)?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Ends `user_id`'s grant. The last owner's grant is not revoked (a workspace always has
    /// an owner; remove the workspace instead).
    pub fn revoke_workspace(
        &mut self,
        workspace_id: i64,
        user_id: i64,
        audit: &AuditEvent,
    ) -> Result<()> {
        let tx = self.write()?;
        // Read-check-write under the write lock, so two revokes cannot each leave the other
        // owner as "the last one" and both succeed.
        let grant = tx
            .query_row(
                "SELECT g.user_id, u.name, g.owner, g.os_user, g.created_at
                 FROM workspace_grants g JOIN users u ON u.id = g.user_id
                 WHERE g.workspace_id = ?1 AND g.user_id = ?2",
                params![workspace_id, user_id],
                |r| grant_from_row(r, 0),
            )
            .optional()?;
        let Some(grant) = grant else {
            return Err(StoreError::not_found("grant for user", user_id.to_string()));
        };
        if grant.owner {
            let owners: i64 = tx.query_row(
                "SELECT COUNT(*) FROM workspace_grants WHERE workspace_id = ?1 AND owner <> 0",
                params![workspace_id],
                |r| r.get(0),
            )?;
            if owners <= 1 {
                return Err(StoreError::Conflict {
                    field: "user",
                    detail: format!(
                        "{} is the workspace's last owner; make another user an owner first, \
                         or remove the workspace",
                        grant.user_name
                    ),
                });
            }
        }
        tx.execute(
            "DELETE FROM workspace_grants WHERE workspace_id = ?1 AND user_id = ?2",
            params![workspace_id, user_id],
        )?;
        touch(&tx, workspace_id, now_ms())?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// Pins one more host key for a workspace, with its audit event; `false` (and no event)
    /// when a key with that fingerprint is already pinned.
    pub fn add_workspace_host_key(
        &mut self,
        workspace_id: i64,
        key: &NewWorkspaceHostKey,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let tx = self.write()?;
        let now = now_ms();
        let added = tx.execute(
            "INSERT INTO workspace_host_keys
                 (workspace_id, public_key, fingerprint, source, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (workspace_id, fingerprint) DO NOTHING",
            params![
                workspace_id,
                key.public_key,
                key.fingerprint,
                key.source,
                now
            ],
        )? == 1;
        if added {
            touch(&tx, workspace_id, now)?;
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Replaces the workspace's pinned host keys with `keys` (its sshd was rebuilt), in one
    /// transaction with the audit event `audit` makes from the keys replaced. Those are read
    /// under the write lock, so the event names exactly what was pinned when the change landed
    /// — the relay may pin an announced key in between. Returns the workspace and the keys
    /// replaced.
    pub fn replace_workspace_host_keys(
        &mut self,
        name: &str,
        keys: &[NewWorkspaceHostKey],
        audit: impl FnOnce(&[WorkspaceHostKeyRecord]) -> AuditEvent,
    ) -> Result<(WorkspaceRecord, Vec<WorkspaceHostKeyRecord>)> {
        let tx = self.write()?;
        let workspace = query_workspace(&tx, name)?;
        let replaced = query_host_keys(&tx, workspace.id)?;
        let now = now_ms();
        tx.execute(
            "DELETE FROM workspace_host_keys WHERE workspace_id = ?1",
            params![workspace.id],
        )?;
        for key in keys {
            insert_host_key(&tx, workspace.id, key, now)?;
        }
        touch(&tx, workspace.id, now)?;
        insert_audit(&tx, &audit(&replaced))?;
        let record = query_workspace(&tx, name)?;
        tx.commit()?;
        Ok((record, replaced))
    }
}

/// Marks the workspace changed (its keys or grants changed).
fn touch(conn: &Db, workspace_id: i64, now: i64) -> Result<()> {
    if conn.execute(
        "UPDATE workspaces SET updated_at = ?2 WHERE id = ?1",
        params![workspace_id, now],
    )? == 0
    {
        return Err(StoreError::not_found(
            "workspace id",
            workspace_id.to_string(),
        ));
    }
    Ok(())
}

fn insert_host_key(
    conn: &Db,
    workspace_id: i64,
    key: &NewWorkspaceHostKey,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO workspace_host_keys (workspace_id, public_key, fingerprint, source, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            workspace_id,
            key.public_key,
            key.fingerprint,
            key.source,
            now
        ],
    )
    .map_err(|e| {
        conflict(e, "host-key", || {
            format!("key {} is given twice", key.fingerprint)
        })
    })?;
    Ok(())
}

fn query_workspace(conn: &Db, name: &str) -> Result<WorkspaceRecord> {
    conn.query_row(
        &format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE name = ?1"),
        params![name],
        workspace_from_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::not_found("workspace", name))
}

fn query_host_keys(conn: &Db, workspace_id: i64) -> Result<Vec<WorkspaceHostKeyRecord>> {
    Ok(conn.query_map(
        "SELECT public_key, fingerprint, source, added_at FROM workspace_host_keys
         WHERE workspace_id = ?1 ORDER BY added_at, fingerprint",
        params![workspace_id],
        |r| {
            Ok(WorkspaceHostKeyRecord {
                public_key: r.get(0)?,
                fingerprint: r.get(1)?,
                source: r.get(2)?,
                added_at: r.get(3)?,
            })
        },
    )?)
}

fn workspace_from_row(r: &Row) -> Result<WorkspaceRecord, DbError> {
    Ok(WorkspaceRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        address: r.get(2)?,
        os_user: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        auth: r.get(6)?,
    })
}

/// A grant from the five columns starting at `at`: user id, user name, owner, os_user, created.
fn grant_from_row(r: &Row, at: usize) -> Result<WorkspaceGrantRecord, DbError> {
    Ok(WorkspaceGrantRecord {
        user_id: r.get(at)?,
        user_name: r.get(at + 1)?,
        owner: r.get(at + 2)?,
        os_user: r.get(at + 3)?,
        created_at: r.get(at + 4)?,
    })
}
