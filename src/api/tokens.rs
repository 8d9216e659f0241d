//! `/api/v1/users/{user}/tokens`: API tokens. A new token's text is in the create response and
//! nowhere else; keyport keeps only its hash.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiJson, ApiPath, AppState, Caller, ErrorBody};
use crate::store::TokenRecord;

/// Body of `POST …/tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Token name, unique per user (e.g. the machine it is for).
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
}

/// A created token: shown once.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenCreated {
    /// Token name.
    pub name: String,
    /// The bearer token. keyport stores only its hash; it cannot be shown again.
    pub token: String,
}

/// The user's tokens (names and times, never the tokens).
#[utoipa::path(
    get,
    operation_id = "tokens_list",
    path = "/api/v1/users/{user}/tokens",
    tag = "tokens",
    params(("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [TokenRecord]),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    let user = caller.own(&user, "tokens")?;
    Ok(Json(state.vault(move |v| v.tokens(&user)).await?))
}

/// Create a token.
#[utoipa::path(
    post,
    operation_id = "tokens_create",
    path = "/api/v1/users/{user}/tokens",
    tag = "tokens",
    params(("user" = String, Path, description = "user name or `me`")),
    request_body = CreateToken, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = TokenCreated),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let user = caller.own(&user, "tokens")?;
    let actor = caller.actor();
    let name = body.name.clone();
    let issued = state
        .vault(move |v| v.create_token(&actor, &user, &name))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            name: body.name,
            token: issued.token.to_string(),
        }),
    ))
}

/// Revoke a token.
#[utoipa::path(
    delete,
    operation_id = "tokens_revoke",
    path = "/api/v1/users/{user}/tokens/{name}",
    tag = "tokens",
    params(("user" = String, Path, description = "user name or `me`"),
           ("name" = String, Path, description = "token name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = caller.own(&user, "tokens")?;
    let actor = caller.actor();
    state
        .vault(move |v| v.revoke_token(&actor, &user, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
