//! Who is calling: the bearer token's user, and what they may touch.
//!
//! Secrets, keys, login keys and tokens are their owner's alone: another user's, admins
//! included, is 403 (each of them leads to the user's values). Admins manage accounts over the
//! API and read everyone's audit log, which names things, never values.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::vault::SessionUser;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Their user name.
    pub name: String,
    /// Whether they are an admin.
    pub is_admin: bool,
}

impl Caller {
    /// `user` from a path (`me` or a name) when it is the caller; 403 otherwise.
    pub fn own(&self, user: &str, what: &str) -> Result<String, ApiError> {
        if user == "me" || user == self.name {
            Ok(self.name.clone())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} belong to their user alone; nobody else, admins included, can read or change them"
            )))
        }
    }

    /// `user` from a path when it is the caller, or any user for an admin; 403 otherwise.
    pub fn own_or_admin(&self, user: &str) -> Result<String, ApiError> {
        if user == "me" || user == self.name {
            Ok(self.name.clone())
        } else if self.is_admin {
            Ok(user.to_string())
        } else {
            Err(ApiError::forbidden("only admins can manage other users"))
        }
    }

    /// 403 unless the caller is an admin.
    pub fn admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("only admins can do this"))
        }
    }

    /// The actor the audit log names.
    pub fn actor(&self) -> crate::vault::Actor {
        crate::vault::Actor::User(self.name.clone())
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Set only on requests through a session's private socket (`serve_session`): the
        // caller is the session's user, no token needed.
        if let Some(who) = parts.extensions.get::<SessionUser>().cloned() {
            // Checked each time: a removed user's sessions lose the API at once, and never
            // act for a later user of the same name.
            let user = state
                .vault(move |v| v.session_user(&who))
                .await
                .map_err(|_| ApiError::unauthorized())?;
            return Ok(Caller {
                name: user.name,
                is_admin: user.is_admin,
            });
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?
            .to_string();
        let user = state
            .vault(move |v| v.authenticate(&token))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Caller {
            name: user.name,
            is_admin: user.is_admin,
        })
    }
}
