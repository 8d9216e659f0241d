//! `/api/v1/users`: accounts (admins only, except reading your own).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyport_keys::KeyType;
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiPath, AppState, Caller, ErrorBody};
use crate::store::UserRecord;
use crate::vault::NewUserSpec;

/// Body of `POST /users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// User name (not `me`).
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
    /// Admin flag.
    #[serde(default)]
    admin: bool,
    /// OS account their sessions run as (see `keyport user add`).
    os_user: Option<String>,
    /// Login public key lines.
    #[serde(default)]
    login_keys: Vec<String>,
    /// `ed25519` (default) or `ecdsa-p256`.
    key_type: Option<String>,
}

/// Every user (admins only).
#[utoipa::path(
    get,
    operation_id = "users_list",
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [UserRecord]),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserRecord>>, ApiError> {
    caller.admin()?;
    Ok(Json(state.vault(|v| v.users()).await?))
}

/// Create a user with a fresh key pair (admins only).
#[utoipa::path(
    post,
    operation_id = "users_create",
    path = "/api/v1/users",
    tag = "users",
    request_body = CreateUser,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = UserRecord),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserRecord>), ApiError> {
    caller.admin()?;
    let key_type = match body.key_type.as_deref() {
        None => KeyType::default(),
        Some(name) => name
            .parse()
            .map_err(|_| ApiError::invalid("key_type", "must be ed25519 or ecdsa-p256"))?,
    };
    let spec = NewUserSpec {
        name: body.name,
        admin: body.admin,
        os_user: body.os_user,
        login_keys: body.login_keys,
        key_type,
    };
    let actor = caller.actor();
    let user = state.vault(move |v| v.add_user(&actor, &spec)).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user (yourself, or anyone for admins).
#[utoipa::path(
    get,
    operation_id = "users_get",
    path = "/api/v1/users/{user}",
    tag = "users",
    params(("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = UserRecord),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserRecord>, ApiError> {
    let user = caller.own_or_admin(&user)?;
    Ok(Json(state.vault(move |v| v.user(&user)).await?))
}

/// Remove a user with their secrets, key pair, login keys and tokens (admins only).
#[utoipa::path(
    delete,
    operation_id = "users_remove",
    path = "/api/v1/users/{user}",
    tag = "users",
    params(("user" = String, Path, description = "user name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let actor = caller.actor();
    state.vault(move |v| v.remove_user(&actor, &user)).await?;
    Ok(StatusCode::NO_CONTENT)
}
