//! The daemons on this database (replicas on PostgreSQL; the one daemon on SQLite): each
//! rewrites its row every heartbeat with the master keys it holds, so a rotation can wait for
//! every live one, and `keyport admin nodes` can list them.

use super::db::{DbError, Row, params};
use super::{Result, Store};

/// A daemon's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Random, per start.
    pub id: String,
    /// Its host name.
    pub host: String,
    /// Its data dir (where its master key is, on its host).
    pub data_dir: String,
    /// keyport's version.
    pub version: String,
    /// The id of the master key it seals with.
    pub key_id: String,
    /// The id of the key staged for the next rotation, if any.
    pub next_key_id: Option<String>,
    /// When it started, ms since the epoch.
    pub started_at: i64,
    /// Its last heartbeat, ms since the epoch.
    pub seen_at: i64,
}

impl Store {
    /// Writes a heartbeat (the row is the node's own: no audit event), and forgets nodes
    /// silent for longer than `forget_ms`.
    pub fn heartbeat(&mut self, node: &NodeRecord, forget_ms: i64) -> Result<()> {
        let tx = self.db.transaction("BEGIN")?;
        tx.execute(
            "INSERT INTO nodes (id, host, data_dir, version, key_id, next_key_id, started_at,
                 seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id,
                 next_key_id = excluded.next_key_id, version = excluded.version,
                 seen_at = excluded.seen_at",
            params![
                node.id,
                node.host,
                node.data_dir,
                node.version,
                node.key_id,
                node.next_key_id,
                node.started_at,
                node.seen_at
            ],
        )?;
        tx.execute(
            "DELETE FROM nodes WHERE seen_at < ?1",
            params![node.seen_at - forget_ms],
        )?;
        Ok(tx.commit()?)
    }

    /// Removes a node's row (its clean shutdown).
    pub fn remove_node(&mut self, id: &str) -> Result<()> {
        self.db
            .execute("DELETE FROM nodes WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Every node with a row, most recently seen first.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        Ok(self.db.query_map(
            "SELECT id, host, data_dir, version, key_id, next_key_id, started_at, seen_at
             FROM nodes ORDER BY seen_at DESC, id",
            params![],
            node_from_row,
        )?)
    }
}

fn node_from_row(r: &Row) -> Result<NodeRecord, DbError> {
    Ok(NodeRecord {
        id: r.get(0)?,
        host: r.get(1)?,
        data_dir: r.get(2)?,
        version: r.get(3)?,
        key_id: r.get(4)?,
        next_key_id: r.get(5)?,
        started_at: r.get(6)?,
        seen_at: r.get(7)?,
    })
}
