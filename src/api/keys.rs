//! `/api/v1/users/{user}/key` (the generated key pair: public half only) and
//! `/api/v1/users/{user}/login-keys` (the keys a user logs in with).
//!
//! Both are their owner's alone over the API, admins included: a login key added to someone
//! else's account would let its adder log in as them and receive their secrets. Admins manage
//! other users' login keys on the keyport host (`keyport login-key … --user`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyport_keys::KeyType;
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiPath, AppState, Caller, ErrorBody};
use crate::store::LoginKeyRecord;
use crate::vault::UserKeyInfo;

/// Body of `PUT …/key`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateKey {
    /// `ed25519` or `ecdsa-p256`; default: the current key's algorithm.
    algorithm: Option<String>,
}

/// Body of `POST …/login-keys`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLoginKeys {
    /// One or more OpenSSH public key lines (authorized_keys style).
    public_key: String,
}

/// The user's public key: algorithm, OpenSSH line, SHA256 fingerprint.
#[utoipa::path(
    get,
    operation_id = "keys_show",
    path = "/api/v1/users/{user}/key",
    tag = "keys",
    params(("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = UserKeyInfo),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<UserKeyInfo>, ApiError> {
    let user = caller.own(&user, "keys")?;
    Ok(Json(state.vault(move |v| v.user_key(&user)).await?))
}

/// Replace the user's key pair; the old one stops working at once.
#[utoipa::path(
    put,
    operation_id = "keys_regenerate",
    path = "/api/v1/users/{user}/key",
    tag = "keys",
    params(("user" = String, Path, description = "user name or `me`")),
    request_body = RegenerateKey, security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = UserKeyInfo),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
    ))]
pub async fn regenerate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<RegenerateKey>,
) -> Result<Json<UserKeyInfo>, ApiError> {
    let user = caller.own(&user, "keys")?;
    let kind = match body.algorithm.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<KeyType>()
                .map_err(|_| ApiError::invalid("algorithm", "must be ed25519 or ecdsa-p256"))?,
        ),
    };
    let actor = caller.actor();
    Ok(Json(
        state
            .vault(move |v| v.regenerate_user_key(&actor, &user, kind))
            .await?,
    ))
}

/// The user's login keys.
#[utoipa::path(
    get,
    operation_id = "keys_list_login_keys",
    path = "/api/v1/users/{user}/login-keys",
    tag = "keys",
    params(("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [LoginKeyRecord]),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list_login_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Vec<LoginKeyRecord>>, ApiError> {
    let user = caller.own(&user, "login keys")?;
    Ok(Json(state.vault(move |v| v.login_keys(&user)).await?))
}

/// Add login keys (all or none).
#[utoipa::path(
    post,
    operation_id = "keys_add_login_keys",
    path = "/api/v1/users/{user}/login-keys",
    tag = "keys",
    params(("user" = String, Path, description = "user name or `me`")),
    request_body = AddLoginKeys, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = [LoginKeyRecord]),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
    ))]
pub async fn add_login_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<AddLoginKeys>,
) -> Result<(StatusCode, Json<Vec<LoginKeyRecord>>), ApiError> {
    let user = caller.own(&user, "login keys")?;
    let actor = caller.actor();
    let lines = vec![body.public_key];
    let added = state
        .vault(move |v| v.add_login_keys(&actor, &user, &lines))
        .await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// Remove a login key by its SHA256 fingerprint.
#[utoipa::path(
    delete,
    operation_id = "keys_remove_login_key",
    path = "/api/v1/users/{user}/login-keys/{fingerprint}",
    tag = "keys",
    params(("user" = String, Path, description = "user name or `me`"),
           ("fingerprint" = String, Path, description = "`SHA256:…`, percent-encoded")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn remove_login_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, fingerprint)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = caller.own(&user, "login keys")?;
    if !fingerprint.starts_with("SHA256:") {
        return Err(ApiError::invalid(
            "fingerprint",
            "must be a SHA256:… fingerprint",
        ));
    }
    let actor = caller.actor();
    state
        .vault(move |v| v.remove_login_key(&actor, &user, &fingerprint))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
