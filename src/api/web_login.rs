//! `/api/v1/users/{user}/web-login`: a one-time link that signs a browser in to the web pages
//! as the caller (`keyport web-login`). The link is in this response only; keyport keeps its
//! hash, and it works once, within `web.link_ttl`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiJson, ApiPath, AppState, Caller, ErrorBody};

/// Where sign-in links point and how long they work; `base` is the reason there are none
/// when the pages are off or have no address a browser could keep the cookie at.
#[derive(Clone, Debug)]
pub struct WebLinks {
    /// The pages' origin (`https://keyport.example.com`), or why links cannot be made.
    pub base: Result<String, String>,
    /// How long a link works.
    pub ttl: Duration,
}

/// Body of `POST …/web-login`: `{}` (a JSON body, as every change this API takes).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebLoginRequest {}

/// A sign-in link: shown once.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebLinkCreated {
    /// Open it in a browser; it works once.
    pub url: String,
    /// When it stops working, ms since the epoch.
    pub expires_at: i64,
    /// How long it works from now, in seconds (`web.link_ttl`).
    pub expires_in_secs: u64,
}

/// Make a one-time sign-in link for the web pages (the caller's own account only).
#[utoipa::path(
    post,
    operation_id = "web_login",
    path = "/api/v1/users/{user}/web-login",
    tag = "web",
    params(("user" = String, Path, description = "user name or `me`")),
    request_body = WebLoginRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = WebLinkCreated),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "Not the caller's to touch", body = ErrorBody),
        (status = 404, description = "The web pages are off, or have no address (web.url)", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user): ApiPath<String>,
    ApiJson(WebLoginRequest {}): ApiJson<WebLoginRequest>,
) -> Result<(StatusCode, Json<WebLinkCreated>), ApiError> {
    let user = caller.own(&user, "web sign-in links")?;
    let links = state.web_links.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "the web pages are off ([web] enabled = false)",
        )
    })?;
    let base = links
        .base
        .map_err(|why| ApiError::new(StatusCode::NOT_FOUND, why))?;
    let actor = caller.actor();
    let ttl = links.ttl;
    let link = state
        .vault(move |v| v.create_web_link(&actor, &user, ttl))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebLinkCreated {
            url: format!("{base}/login/{}", link.token.as_str()),
            expires_at: link.expires_at,
            expires_in_secs: ttl.as_secs(),
        }),
    ))
}
