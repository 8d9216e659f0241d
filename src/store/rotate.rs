//! Re-sealing every sealed column in one transaction, for master key rotation.

use super::db::params;

use super::audit::insert_audit;
use super::{MASTER_KEY_ID, Result, Store, StoreError};
use crate::store::{AuditEvent, SealedKind};

impl Store {
    /// Re-seals every sealed column in one transaction: `reseal` gets what each blob is bound
    /// to and the blob, and returns the new blob. Then `meta.master_key_id` becomes
    /// `new_key_id` and this store seals under it. Any error rolls everything back.
    pub fn reseal_all<E>(
        &mut self,
        new_key_id: &str,
        mut reseal: impl FnMut(SealedKind, &str, &str, &[u8]) -> Result<Vec<u8>, E>,
        audit: &AuditEvent,
    ) -> Result<usize, E>
    where
        E: From<StoreError>,
    {
        let tx = self.write_sealed()?;
        // The key's row first: on PostgreSQL that waits for the sealing writes that read it
        // and makes the ones after wait for this (see `write_sealed`).
        tx.execute(
            "UPDATE meta SET value = ?2 WHERE key = ?1",
            params![MASTER_KEY_ID, new_key_id],
        )
        .map_err(StoreError::from)?;
        let mut count = 0;
        for kind in SealedKind::ALL {
            let (select, update) = kind.sql();
            let rows: Vec<(String, String, Vec<u8>)> = tx
                .query_map(select, params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(StoreError::from)?;
            for (owner, item, blob) in rows {
                let sealed = reseal(kind, &owner, &item, &blob)?;
                tx.execute(update, params![sealed, owner, item])
                    .map_err(StoreError::from)?;
                count += 1;
            }
        }
        insert_audit(&tx, audit)?;
        tx.commit().map_err(StoreError::from)?;
        self.sealing_key = Some(new_key_id.to_string());
        Ok(count)
    }
}
