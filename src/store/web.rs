//! The web pages' sign-in state: one-time links and signed-in browsers, both by the hash of
//! their token (the tokens themselves live only in the link and the cookie).

use super::db::{OptionalExtension, params};

use super::audit::insert_audit;
use super::users::{USER_COLUMNS, user_from_row};
use super::{Result, Store, now_ms};
use crate::store::{AuditEvent, UserRecord};

/// How a sign-in link was taken.
#[derive(Debug)]
pub enum LinkTaken {
    /// It was good: the browser is signed in as this user.
    SignedIn(UserRecord),
    /// It was issued but ran out (and is gone now).
    Expired,
    /// No such link: never issued, or used already.
    Unknown,
}

impl Store {
    /// Stores a sign-in link for `user_id`, good until `expires_at`, with its audit event;
    /// links and sessions that ran out are dropped on the way.
    pub fn create_web_link(
        &mut self,
        user_id: i64,
        hash: &str,
        expires_at: i64,
        audit: &AuditEvent,
    ) -> Result<()> {
        let now = now_ms();
        let tx = self.write()?;
        tx.execute("DELETE FROM web_links WHERE expires_at <= ?1", params![now])?;
        tx.execute(
            "DELETE FROM web_sessions WHERE expires_at <= ?1",
            params![now],
        )?;
        tx.execute(
            "INSERT INTO web_links (token_hash, user_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![hash, user_id, now, expires_at],
        )?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The user of the link `hash` while it is still good, without using it up (the page that
    /// asks "sign in as …?" is a GET, which link scanners fetch too).
    pub fn web_link_user(&self, hash: &str) -> Result<Option<UserRecord>> {
        Ok(self
            .db
            .query_row(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id = (SELECT user_id FROM web_links
                     WHERE token_hash = ?1 AND expires_at > ?2)"
                ),
                params![hash, now_ms()],
                user_from_row,
            )
            .optional()?)
    }

    /// Takes the link `link_hash` (it works once, so it is deleted whatever happens) and, if
    /// it is still good, starts the session `session_hash` for its user, good until
    /// `session_expires_at`, with the audit event `audit` makes. The browser's previous
    /// session (`replaced`), if any, ends in the same transaction.
    pub fn take_web_link(
        &mut self,
        link_hash: &str,
        session_hash: &str,
        session_expires_at: i64,
        replaced: Option<&str>,
        audit: impl FnOnce(&UserRecord) -> AuditEvent,
    ) -> Result<LinkTaken> {
        let now = now_ms();
        let tx = self.write()?;
        let link: Option<(i64, i64)> = tx
            .query_row(
                "DELETE FROM web_links WHERE token_hash = ?1 RETURNING user_id, expires_at",
                params![link_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let taken = match link {
            None => LinkTaken::Unknown,
            Some((_, expires_at)) if expires_at <= now => LinkTaken::Expired,
            Some((user_id, _)) => {
                if let Some(old) = replaced {
                    tx.execute(
                        "DELETE FROM web_sessions WHERE token_hash = ?1",
                        params![old],
                    )?;
                }
                let user = tx.query_row(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                    params![user_id],
                    user_from_row,
                )?;
                tx.execute(
                    "INSERT INTO web_sessions (token_hash, user_id, created_at, last_seen_at, expires_at)
                     VALUES (?1, ?2, ?3, ?3, ?4)",
                    params![session_hash, user_id, now, session_expires_at],
                )?;
                insert_audit(&tx, &audit(&user))?;
                LinkTaken::SignedIn(user)
            }
        };
        tx.commit()?;
        Ok(taken)
    }

    /// The user of the signed-in browser `hash`, if its session has neither run out nor been
    /// idle for `idle_ms`; a request counts as activity (written at most once a minute, and
    /// at least twice per idle time).
    pub fn web_session(&mut self, hash: &str, idle_ms: i64) -> Result<Option<UserRecord>> {
        let now = now_ms();
        let found: Option<(i64, i64)> = self
            .db
            .query_row(
                "SELECT user_id, last_seen_at FROM web_sessions
                 WHERE token_hash = ?1 AND expires_at > ?2 AND last_seen_at > ?3",
                params![hash, now, now - idle_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((user_id, last_seen)) = found else {
            return Ok(None);
        };
        if now - last_seen > (idle_ms / 2).min(60_000) {
            self.db.execute(
                "UPDATE web_sessions SET last_seen_at = ?2 WHERE token_hash = ?1",
                params![hash, now],
            )?;
        }
        Ok(self
            .db
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                params![user_id],
                user_from_row,
            )
            .optional()?)
    }

    /// Ends the signed-in browser `hash` (sign-out), with `audit` when it was signed in.
    pub fn end_web_session(&mut self, hash: &str, audit: &AuditEvent) -> Result<bool> {
        let tx = self.write()?;
        let ended = tx.execute(
            "DELETE FROM web_sessions WHERE token_hash = ?1",
            params![hash],
        )? > 0;
        if ended {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(ended)
    }
}
