//! `/api/v1/workspaces`: relay-mode workspaces. Admins register, read, remove and grant them,
//! and re-pin their host keys; a user reads only the ones granted to them — without their
//! addresses or anyone else's grant — and a workspace not granted to them is answered exactly
//! as one that does not exist.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiPath, AppState, Caller, ErrorBody};
use crate::vault::{GrantSpec, HostKeySource, WorkspaceAuth, WorkspaceInfo, WorkspaceSpec};

/// Body of `POST /workspaces`. Host keys are given, never scanned: the API does not reach out
/// to an address it is handed (use `keyport workspace add --scan` on the gateway for that).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Workspace name: what users type in `ssh USER:NAME@gateway`.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    name: String,
    /// Its sshd, `HOST:PORT` (an IPv6 address in brackets), port 1 to 65535.
    #[schema(
        pattern = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]{0,252}):[0-9]{1,5}$",
        max_length = 261
    )]
    address: String,
    /// The login on the workspace: 1 to 32 of letters, digits, `.`, `_`, `-`, not starting with
    /// `-`, not all digits.
    #[schema(pattern = r"^(?![0-9]+$)[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$")]
    os_user: String,
    /// keyport users who own it (and so may use it).
    #[schema(min_items = 1)]
    owners: Vec<String>,
    /// Its host keys, OpenSSH public key lines (`ssh-ed25519 AAAA…`).
    #[schema(min_items = 1)]
    host_keys: Vec<String>,
    /// How keyport logs in there: `key` (default; each user's keyport key in the login's
    /// authorized_keys) or `ca` (certificates from keyport's user CA, made if none exists).
    #[serde(default)]
    auth: WorkspaceAuth,
}

/// Body of `PUT /workspaces/{name}/host-keys`: the keys to pin instead of the ones pinned now.
/// Given, never scanned, for the same reason as at `POST /workspaces`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinHostKeys {
    /// The workspace's host keys now, OpenSSH public key lines (`ssh-ed25519 AAAA…`); they
    /// replace every key pinned before.
    #[schema(min_items = 1)]
    host_keys: Vec<String>,
}

/// Body of `PUT /workspaces/{name}/grants/{user}` (optional: no body grants with the
/// workspace's login).
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantWorkspace {
    /// The user's own login on the workspace (absent or `null`: the workspace's).
    #[schema(pattern = r"^(?![0-9]+$)[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$")]
    os_user: Option<String>,
    /// Make them an owner (an owner stays one until revoked).
    #[serde(default)]
    owner: bool,
}

/// A JSON body that may be left out: no bytes at all mean `T::default()`; anything else is
/// read as [`ApiJson`] reads it (so 400, 413 and 415 are the same).
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(e.status(), "request body is too large")
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "cannot read the request body")
                }
            })?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// Workspaces: every one for admins; for a user, the ones granted to them.
#[utoipa::path(
    get,
    operation_id = "workspaces_list",
    path = "/api/v1/workspaces",
    tag = "workspaces",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = [WorkspaceInfo]),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<WorkspaceInfo>>, ApiError> {
    let workspaces = if caller.is_admin {
        state.vault(|v| v.workspaces()).await?
    } else {
        let me = caller.name.clone();
        state.vault(move |v| v.user_workspaces(&me)).await?
    };
    Ok(Json(workspaces))
}

/// Register a workspace with its pinned host keys and owners (admins only).
#[utoipa::path(
    post,
    operation_id = "workspaces_create",
    path = "/api/v1/workspaces",
    tag = "workspaces",
    request_body = CreateWorkspace,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = WorkspaceInfo),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    caller.admin()?;
    let spec = WorkspaceSpec {
        name: body.name,
        address: body.address,
        os_user: body.os_user,
        owners: body.owners,
        host_keys: body.host_keys,
        host_key_source: HostKeySource::Pinned,
        auth: body.auth,
    };
    let actor = caller.actor();
    let info = state.vault(move |v| v.add_workspace(&actor, &spec)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// One workspace: for admins in full; for a user only if granted to them (else 404, exactly as
/// for a workspace that does not exist).
#[utoipa::path(
    get,
    operation_id = "workspaces_get",
    path = "/api/v1/workspaces/{name}",
    tag = "workspaces",
    params(("name" = String, Path, description = "workspace name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = WorkspaceInfo),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    let info = if caller.is_admin {
        state.vault(move |v| v.workspace(&name)).await?
    } else {
        let me = caller.name.clone();
        state.vault(move |v| v.user_workspace(&me, &name)).await?
    };
    Ok(Json(info))
}

/// Remove a workspace with its host keys and grants (admins only).
#[utoipa::path(
    delete,
    operation_id = "workspaces_remove",
    path = "/api/v1/workspaces/{name}",
    tag = "workspaces",
    params(("name" = String, Path, description = "workspace name")),
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
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let actor = caller.actor();
    state
        .vault(move |v| v.remove_workspace(&actor, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a workspace's pinned host keys, after its sshd was rebuilt (admins only). The relay
/// trusts only the new keys from then on.
#[utoipa::path(
    put,
    operation_id = "workspaces_pin_host_keys",
    path = "/api/v1/workspaces/{name}/host-keys",
    tag = "workspaces",
    params(("name" = String, Path, description = "workspace name")),
    request_body = PinHostKeys,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = WorkspaceInfo),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn pin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PinHostKeys>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    caller.admin()?;
    let actor = caller.actor();
    let change = state
        .vault(move |v| {
            v.pin_workspace_host_keys(&actor, &name, &body.host_keys, HostKeySource::Pinned)
        })
        .await?;
    Ok(Json(change.workspace))
}

/// Let a user use a workspace, or change their grant; without `os_user` they use the
/// workspace's login (admins only).
#[utoipa::path(
    put,
    operation_id = "workspaces_grant",
    path = "/api/v1/workspaces/{name}/grants/{user}",
    tag = "workspaces",
    params(("name" = String, Path, description = "workspace name"),
           ("user" = String, Path, description = "user name or `me`")),
    request_body = Option<GrantWorkspace>,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "OK", body = WorkspaceInfo),
        (status = 400, description = "Invalid input; each broken rule is named", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, user)): ApiPath<(String, String)>,
    OptionalJson(body): OptionalJson<GrantWorkspace>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    caller.admin()?;
    let user = caller.own_or_admin(&user)?;
    let grant = GrantSpec {
        os_user: body.os_user,
        owner: body.owner,
    };
    let actor = caller.actor();
    let info = state
        .vault(move |v| v.grant_workspace(&actor, &name, &user, &grant))
        .await?;
    Ok(Json(info))
}

/// End a user's grant; the last owner's stays (409) (admins only).
#[utoipa::path(
    delete,
    operation_id = "workspaces_revoke",
    path = "/api/v1/workspaces/{name}/grants/{user}",
    tag = "workspaces",
    params(("name" = String, Path, description = "workspace name"),
           ("user" = String, Path, description = "user name or `me`")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Conflicts with what exists; each named", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, user)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.admin()?;
    let user = caller.own_or_admin(&user)?;
    let actor = caller.actor();
    state
        .vault(move |v| v.revoke_workspace(&actor, &name, &user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
