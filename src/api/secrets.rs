//! `/api/v1/users/{user}/secrets`: list, create, get, update, delete, import, test a source.
//! Metadata only ever goes out; values come in as UTF-8 `value` or `value_base64` (binary file
//! secrets), or are resolved from a `source`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keyport_keys::SecretBytes;
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiPath, AppState, Caller, ErrorBody};
use crate::secrets::import::{self, Format};
use crate::secrets::lifecycle::SecretKind;
use crate::secrets::{SecretInput, SecretMeta, SecretPatch, own_rotate_after, wire_value};
use crate::shared::SharedError;
use crate::sources::Tested;
use crate::vault::{RequiredStatus, VaultError};

const WHAT: &str = "secrets";

/// Body of `PATCH …/secrets/{name}`: absent = unchanged, `""` clears description/env/file.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    /// New value as UTF-8 text: 1 byte to 64 KiB.
    #[schema(min_length = 1, max_length = 65536)]
    value: Option<String>,
    /// New value as base64.
    #[schema(min_length = 1)]
    value_base64: Option<String>,
    /// New description (`""` clears): at most 1024 bytes.
    #[schema(max_length = 1024)]
    description: Option<String>,
    /// New env target (`""` clears).
    #[schema(pattern = r"^([A-Za-z_][A-Za-z0-9_]{0,255})?$")]
    env: Option<String>,
    /// New file target (`""` clears): `~/…` or absolute, at most 4096 bytes.
    #[schema(pattern = r"^((~/|/).*)?$", max_length = 4096)]
    file: Option<String>,
    /// Enable or disable.
    enabled: Option<bool>,
    /// New kind: `token`, `password`, `key`, `certificate`, `config` or `other`.
    kind: Option<SecretKind>,
    /// Its own rotation age (`90d`, `12h`, `never`), or `default` for its kind's.
    rotate_after: Option<String>,
    /// Mask its value in pty output (its own choice, kept until changed).
    mask: Option<bool>,
    /// Resolve the value from this reference from now on (`vault://…`, `vault-dyn://…`,
    /// `exec://…`) instead of a stored one; a new `value` goes back to a stored one.
    #[schema(max_length = 2048)]
    source: Option<String>,
    /// Refuse sessions when the value cannot be had?
    required: Option<bool>,
}

/// Body of `POST …/secrets:import`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportSecrets {
    /// `dotenv` or `json`.
    format: Format,
    /// The file's content.
    content: String,
}

fn invalid(v: crate::secrets::Violation) -> ApiError {
    ApiError::from(VaultError::Invalid(vec![v]))
}

fn value(text: Option<String>, b64: Option<String>) -> Result<Option<SecretBytes>, ApiError> {
    wire_value(text, b64).map_err(|v| ApiError::from(VaultError::Invalid(vec![v])))
}

/// List the user's secrets (metadata only), sorted by name.
#[utoipa::path(
    get,
    operation_id = "secrets_list",
    path = "/api/v1/users/{user}/secrets",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [SecretMeta]),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Vec<SecretMeta>>, ApiError> {
    let user = caller.own(&user, WHAT)?;
    Ok(Json(state.vault(move |v| v.secrets(&user)).await?))
}

/// Create a secret.
#[utoipa::path(
    post,
    operation_id = "secrets_create",
    path = "/api/v1/users/{user}/secrets",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`")),
    request_body = SecretInput, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = SecretMeta),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<SecretInput>,
) -> Result<(StatusCode, Json<SecretMeta>), ApiError> {
    let user = caller.own(&user, WHAT)?;
    let spec = body
        .into_spec()
        .map_err(|v| ApiError::from(VaultError::Invalid(vec![v])))?;
    let actor = caller.actor();
    let meta = state
        .vault(move |v| v.create_secret(&actor, &user, &spec))
        .await?;
    Ok((StatusCode::CREATED, Json(meta)))
}

/// One secret's metadata.
#[utoipa::path(
    get,
    operation_id = "secrets_get",
    path = "/api/v1/users/{user}/secrets/{name}",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`"),
           ("name" = String, Path, description = "secret name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = SecretMeta),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> Result<Json<SecretMeta>, ApiError> {
    let user = caller.own(&user, WHAT)?;
    Ok(Json(state.vault(move |v| v.secret(&user, &name)).await?))
}

/// Update a secret: absent fields stay, `""` clears description, env or file; at least one
/// field; the result is checked as a whole.
#[utoipa::path(
    patch,
    operation_id = "secrets_update",
    path = "/api/v1/users/{user}/secrets/{name}",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`"),
           ("name" = String, Path, description = "secret name")),
    request_body = UpdateSecret, security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = SecretMeta),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateSecret>,
) -> Result<Json<SecretMeta>, ApiError> {
    let user = caller.own(&user, WHAT)?;
    let patch = SecretPatch {
        value: value(body.value, body.value_base64)?,
        description: body.description,
        env: body.env,
        file: body.file,
        enabled: body.enabled,
        kind: body.kind,
        rotate_after: match body.rotate_after.as_deref() {
            None => None,
            Some(text) => Some(own_rotate_after(Some(text)).map_err(invalid)?),
        },
        mask: body.mask,
        source: body
            .source
            .as_deref()
            .map(crate::secrets::parse_source)
            .transpose()
            .map_err(invalid)?,
        required: body.required,
    };
    let actor = caller.actor();
    Ok(Json(
        state
            .vault(move |v| v.update_secret(&actor, &user, &name, &patch))
            .await?,
    ))
}

/// Delete a secret.
#[utoipa::path(
    delete,
    operation_id = "secrets_delete",
    path = "/api/v1/users/{user}/secrets/{name}",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`"),
           ("name" = String, Path, description = "secret name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = caller.own(&user, WHAT)?;
    let actor = caller.actor();
    state
        .vault(move |v| v.delete_secret(&actor, &user, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Import dotenv or JSON content: all secrets are created or none, and every problem is
/// reported at once.
#[utoipa::path(
    post,
    operation_id = "secrets_import",
    path = "/api/v1/users/{user}/secrets:import",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`")),
    request_body = ImportSecrets, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = [SecretMeta]),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
    ))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<ImportSecrets>,
) -> Result<(StatusCode, Json<Vec<SecretMeta>>), ApiError> {
    let user = caller.own(&user, WHAT)?;
    let (specs, problems) = import::check(body.format, &body.content);
    let actor = caller.actor();
    let created = state
        .vault(move |v| v.import_secrets(&actor, &user, &specs, problems.clone()))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The secrets the operator requires (`[[required]]`) that apply to the user, and whether an
/// enabled secret of theirs meets each.
#[utoipa::path(
    get,
    operation_id = "secrets_required",
    path = "/api/v1/users/{user}/required",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [RequiredStatus]),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn required(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<Vec<RequiredStatus>>, ApiError> {
    let user = caller.own(&user, WHAT)?;
    Ok(Json(state.vault(move |v| v.required_for(&user)).await?))
}

/// Resolve a secret's source now, as a session would but not from the cache, and say how
/// that went (a lease it makes is revoked at once when `lease_end = "revoke"`).
#[utoipa::path(
    post,
    operation_id = "secrets_test",
    path = "/api/v1/users/{user}/secrets/{name}/test",
    tag = "secrets",
    params(("user" = String, Path, description = "user name or `me`"),
           ("name" = String, Path, description = "secret name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Tried; `outcome` says how it went", body = Tested),
        (status = 400, description = "The secret has no source", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((user, name)): ApiPath<(String, String)>,
) -> Result<Json<Tested>, ApiError> {
    let user = caller.own(&user, WHAT)?;
    let tested = state
        .vault
        .test_source(caller.actor(), &user, &name)
        .await
        .map_err(|e| match e {
            SharedError::Vault(e) => ApiError::from(e),
            other => ApiError::internal(&other.to_string()),
        })?;
    Ok(Json(tested))
}
