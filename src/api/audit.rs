//! `/api/v1/audit`: your own events; every user's for admins. Events name things and fields,
//! never values.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::{ApiError, ApiQuery, AppState, Caller, ErrorBody};
use crate::store::AuditRecord;
use crate::when::parse_since;

/// Query of `GET /audit`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events at or after this time: RFC 3339 (`2026-11-22T10:00:00Z`) or an age
    /// (`15m`, `2h`, `7d`).
    since: Option<String>,
    /// Only this user's events (admins; others always see only their own).
    user: Option<String>,
    /// Most events in the page: 1 to 1000 (default 1000).
    limit: Option<i64>,
    /// Only events after this one (the last `id` of the previous page); a page shorter than
    /// `limit` is the last.
    after: Option<i64>,
}

/// The most events one page holds.
pub const MAX_PAGE: i64 = 1000;

/// Audit events, oldest first, a page at a time.
#[utoipa::path(
    get,
    operation_id = "audit_list",
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [AuditRecord]),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let since = match query.since.as_deref() {
        None => 0,
        Some(text) => parse_since(text).ok_or_else(|| {
            ApiError::invalid("since", "must be RFC 3339 or an age like 15m, 2h, 7d")
        })?,
    };
    let limit = query.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid(
            "after",
            "must be an event id (0 or more)",
        ));
    }
    let user = match (query.user, caller.is_admin) {
        (None, true) => None,
        (None, false) => Some(caller.name.clone()),
        (Some(user), _) => Some(caller.own_or_admin(&user)?),
    };
    Ok(Json(
        state
            .vault(move |v| v.audit_page(user.as_deref(), since, after, limit))
            .await?,
    ))
}
