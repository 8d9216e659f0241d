//! Re-sealing every sealed column in one transaction, for master key rotation.

use rusqlite::params;

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
        let mut count = 0;
        for kind in SealedKind::ALL {
            let (select, update) = kind.sql();
            let rows: Vec<(i64, String, String, Vec<u8>)> = {
                let mut stmt = tx.prepare(select).map_err(StoreError::from)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(StoreError::from)?;
                rows.collect::<Result<_, _>>().map_err(StoreError::from)?
            };
            for (rowid, owner, item, blob) in rows {
                let sealed = reseal(kind, &owner, &item, &blob)?;
                tx.execute(update, params![sealed, rowid])
                    .map_err(StoreError::from)?;
                count += 1;
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?2 WHERE key = ?1",
            params![MASTER_KEY_ID, new_key_id],
        )
        .map_err(StoreError::from)?;
        insert_audit(&tx, audit)?;
        tx.commit().map_err(StoreError::from)?;
        self.sealing_key = Some(new_key_id.to_string());
        Ok(count)
    }
}
