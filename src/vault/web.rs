//! Signing in to the web pages: one-time links (`keyport web-login`) and the browser
//! sessions they start. Both tokens are random, stored only as hashes, and audited when used.

use std::time::Duration;

use serde_json::json;
use zeroize::Zeroizing;

use super::users::{random_token, token_hash};
use super::{Actor, Vault, VaultError};
use crate::store::{LinkTaken, UserRecord, now_ms};

/// A sign-in link's token, shown once (in the link), and when it runs out.
pub struct WebLink {
    /// The token for the link's path.
    pub token: Zeroizing<String>,
    /// When it stops working, ms since the epoch.
    pub expires_at: i64,
}

/// What following a sign-in link gave.
pub enum WebSignIn {
    /// Signed in: the session's token for the cookie, and whose it is.
    SignedIn {
        /// The session token (the cookie's value).
        session: Zeroizing<String>,
        /// The user signed in.
        user: UserRecord,
    },
    /// The link ran out before it was used.
    Expired,
    /// No such link, or it was used already.
    Unknown,
}

/// `d` in milliseconds, as the store's timestamps count.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Vault {
    /// A one-time sign-in link for `user`, good for `ttl`.
    pub fn create_web_link(
        &mut self,
        actor: &Actor,
        user: &str,
        ttl: Duration,
    ) -> Result<WebLink, VaultError> {
        let owner = self.store.user(user)?;
        let token = random_token("kpl_")?;
        let expires_at = now_ms().saturating_add(millis(ttl));
        let audit = Self::audit(
            actor,
            user,
            "web.link",
            None,
            json!({ "expires_at": expires_at }),
        );
        self.store
            .create_web_link(owner.id, &token_hash(&token), expires_at, &audit)?;
        Ok(WebLink { token, expires_at })
    }

    /// Whose the sign-in link `link` is, while it is good; it stays unused.
    pub fn web_link_user(&self, link: &str) -> Result<Option<UserRecord>, VaultError> {
        Ok(self.store.web_link_user(&token_hash(link))?)
    }

    /// Uses the sign-in link `link` (once: it is gone after this, whatever the outcome) and
    /// starts a browser session good for `max_age` at most, ending the browser's previous
    /// session `replaced` (so signing in again leaves no second session behind).
    pub fn sign_in_web(
        &mut self,
        link: &str,
        max_age: Duration,
        replaced: Option<&str>,
    ) -> Result<WebSignIn, VaultError> {
        let session = random_token("kps_")?;
        let expires_at = now_ms().saturating_add(millis(max_age));
        let replaced = replaced.map(token_hash);
        let taken = self.store.take_web_link(
            &token_hash(link),
            &token_hash(&session),
            expires_at,
            replaced.as_deref(),
            |user| {
                Self::audit(
                    &Actor::User(user.name.clone()),
                    &user.name,
                    "web.sign_in",
                    None,
                    json!({ "expires_at": expires_at }),
                )
            },
        )?;
        Ok(match taken {
            LinkTaken::SignedIn(user) => WebSignIn::SignedIn { session, user },
            LinkTaken::Expired => WebSignIn::Expired,
            LinkTaken::Unknown => WebSignIn::Unknown,
        })
    }

    /// The user a browser session belongs to, if it is still good (not past its absolute
    /// expiry, not idle for `idle`).
    pub fn web_user(
        &mut self,
        session: &str,
        idle: Duration,
    ) -> Result<Option<UserRecord>, VaultError> {
        Ok(self.store.web_session(&token_hash(session), millis(idle))?)
    }

    /// Ends `user`'s browser session `session` (sign-out).
    pub fn sign_out_web(&mut self, user: &str, session: &str) -> Result<(), VaultError> {
        let actor = Actor::User(user.to_string());
        let audit = Self::audit(&actor, user, "web.sign_out", None, json!({}));
        self.store.end_web_session(&token_hash(session), &audit)?;
        Ok(())
    }
}
