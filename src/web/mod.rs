//! The web pages: another face of the vault, like the API. Server-rendered HTML (maud) on the
//! API listener under `/`, plain forms with POST-redirect-GET, no JavaScript needed (one small
//! script of keyport's own adds a copy button). Handlers call vault operations — the same ones,
//! with the same validation and audit, as the API — and never the store.
//!
//! Signing in takes a one-time link from `keyport web-login`; the browser then holds a random
//! session token in a `__Host-` cookie (stored hashed). Every state change is a POST that must
//! come from a page of this origin (`Sec-Fetch-Site: same-origin`, else an exact `Origin`).
//! No page ever contains a secret value or a private key: the types rendered have no field
//! that could hold one, and value fields are write-only.
//!
//! # Layout
//! - `mod.rs`: the router, security headers, the same-origin check, static files.
//! - `page.rs`: the page frame, form fields with their errors, and the one error→page mapping.
//! - `signin.rs`: the cookie, the signed-in user extractor, sign-in and sign-out.
//! - `secrets.rs`, `keys.rs` (key and login keys), `tokens.rs`, `audit.rs`, `admin.rs` (users
//!   and workspaces): one file per page family.

mod admin;
mod audit;
mod keys;
mod page;
mod secret_form;
mod secrets;
mod signin;
mod tokens;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::WebOptions;
use crate::shared::{SharedError, VaultHandle};
use crate::vault::{Vault, VaultError};
use page::PageError;

/// What every page handler shares.
#[derive(Clone)]
pub struct WebState {
    vault: VaultHandle,
    options: std::sync::Arc<WebOptions>,
    /// The origin the pages are served at (`https://host`), for the `Origin` check.
    origin: std::sync::Arc<str>,
}

impl WebState {
    /// Pages over `vault`, at `origin`, with `options`.
    pub fn new(vault: VaultHandle, options: WebOptions, origin: &str) -> Self {
        Self {
            vault,
            options: std::sync::Arc::new(options),
            origin: origin.into(),
        }
    }

    /// Runs `f` on the vault (see [`VaultHandle::call`]).
    async fn vault<T, F>(&self, f: F) -> Result<T, SharedError>
    where
        T: Send + 'static,
        F: Fn(&mut Vault) -> Result<T, VaultError> + Send + 'static,
    {
        self.vault.call(f).await
    }
}

const CSS: &str = include_str!("static/keyport.css");
const JS: &str = include_str!("static/keyport.js");

/// The pages' routes (merged with the API's on its listener).
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(signin::home))
        .route("/login/{token}", get(signin::confirm).post(signin::sign_in))
        .route("/logout", post(signin::sign_out))
        .route("/secrets", get(secrets::list).post(secrets::create))
        .route("/secrets/new", get(secrets::new))
        .route(
            "/secrets/import",
            get(secrets::import_form).post(secrets::import),
        )
        // Under the name, never beside it: a secret may be called `new` or `import`.
        .route(
            "/secrets/{name}/edit",
            get(secrets::edit).post(secrets::update),
        )
        .route("/secrets/{name}/enabled", post(secrets::toggle))
        .route(
            "/secrets/{name}/delete",
            get(secrets::confirm_delete).post(secrets::delete),
        )
        .route("/key", get(keys::show))
        .route(
            "/key/regenerate",
            get(keys::confirm_regenerate).post(keys::regenerate),
        )
        .route(
            "/login-keys",
            get(keys::login_keys).post(keys::add_login_keys),
        )
        .route("/login-keys/remove", post(keys::remove_login_key))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}/revoke", post(tokens::revoke))
        .route("/audit", get(audit::list))
        .route("/users", get(admin::users).post(admin::add_user))
        .route(
            "/users/{name}/remove",
            get(admin::confirm_remove).post(admin::remove_user),
        )
        .route("/workspaces", get(admin::workspaces))
        .route("/static/keyport.css", get(|| asset("text/css", CSS)))
        .route("/static/keyport.js", get(|| asset("text/javascript", JS)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin,
        ))
        .layer(axum::middleware::from_fn(headers))
        .with_state(state)
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// What the listener answers for a path nobody serves: the API's JSON 404 under `/api/`, a
/// page (with the pages' headers) elsewhere. Set on the listener's router, after the API's and
/// the pages' routes are merged.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return crate::api::not_found().await.into_response();
    }
    secure(PageError::NotFound("no such page".into()).into_response())
}

/// The headers every page gets (see [`secure`]).
async fn headers(request: Request, next: Next) -> Response {
    secure(next.run(request).await)
}

/// `response` with the pages' headers: no inline script or style, no framing, no referrer (a
/// sign-in link's path never leaves), no sniffing, no caching of pages that name secrets.
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Refuses a state change (any method but GET and HEAD) that a page of another site could
/// have sent: the browser's `Sec-Fetch-Site` must say `same-origin`; a browser that sends no
/// such header must send an `Origin` that is exactly this one.
async fn same_origin(State(state): State<WebState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let h = request.headers();
    let allowed = match h.get("sec-fetch-site") {
        Some(site) => site.as_bytes() == b"same-origin",
        None => h
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == state.origin.as_bytes()),
    };
    if allowed {
        next.run(request).await
    } else {
        PageError::Forbidden(
            "refused: this change did not come from a keyport page (cross-site request)".into(),
        )
        .into_response()
    }
}
