//! The HTTP API: JSON under `/api/v1`, bearer-token auth, an OpenAPI document generated from
//! the handlers themselves (so it lists exactly the routes the router serves), Prometheus
//! metrics. Handlers are thin: they check who may do what and call the [`Vault`] on a blocking
//! thread. No response carries a secret value or a private key — the types that go out have
//! no field that could hold one.
//!
//! # Layout
//! - `error.rs`: errors → status and body (the one place), extractors that use it.
//! - `auth.rs`: the bearer token's caller and the access rules.
//! - `secrets.rs`, `keys.rs`, `tokens.rs`, `users.rs`, `workspaces.rs`, `audit.rs`: one file
//!   per resource.
//! - `web_login.rs`: one-time sign-in links for the web pages.
//! - `meta.rs`: healthz, metrics, the OpenAPI document.
//! - `listen.rs`: the TCP listener: header and idle timeouts, the connection cap.

mod audit;
mod auth;
mod error;
mod keys;
mod listen;
mod meta;
mod secrets;
pub mod tokens;
mod users;
mod web_login;
mod workspaces;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Caller;
pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
pub use meta::{Metrics, not_found};
pub use tokens::TokenCreated;
pub use web_login::{WebLinkCreated, WebLinks};

use crate::metrics::DaemonMetrics;
use crate::shared::{SharedError, VaultHandle};
use crate::ssh::sessiondir::SessionSocket;
use crate::vault::{SessionUser, Vault, VaultError};

/// Largest request body: an import of a user's whole 1 MiB of values, base64'd, fits.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    vault: VaultHandle,
    metrics: Arc<Metrics>,
    daemon: Arc<DaemonMetrics>,
    openapi: Arc<OnceLock<String>>,
    /// Where `web-login` links point; `None`: the web pages are off.
    web_links: Option<WebLinks>,
}

impl AppState {
    /// Serves the shared vault.
    pub fn new(vault: VaultHandle, daemon: Arc<DaemonMetrics>) -> Self {
        Self {
            vault,
            metrics: Arc::new(Metrics::default()),
            daemon,
            openapi: Arc::new(OnceLock::new()),
            web_links: None,
        }
    }

    /// Makes `web-login` links to the web pages (`links.base`).
    pub fn with_web_links(mut self, links: WebLinks) -> Self {
        self.web_links = Some(links);
        self
    }

    /// Runs `f` on the vault (see [`VaultHandle::call`]).
    pub async fn vault<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Fn(&mut Vault) -> Result<T, VaultError> + Send + 'static,
    {
        self.vault.call(f).await.map_err(|e| match e {
            SharedError::Vault(e) => ApiError::from(e),
            SharedError::Task(e) => ApiError::internal(&e),
        })
    }
}

/// The router and the OpenAPI document describing it.
pub fn router(state: AppState) -> Router {
    let (router, mut api) = OpenApiRouter::new()
        .routes(routes!(secrets::list, secrets::create))
        .routes(routes!(secrets::get, secrets::update, secrets::delete))
        .routes(routes!(secrets::import))
        .routes(routes!(secrets::required))
        .routes(routes!(secrets::test))
        .routes(routes!(keys::show, keys::regenerate))
        .routes(routes!(keys::list_login_keys, keys::add_login_keys))
        .routes(routes!(keys::remove_login_key))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(web_login::create))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::remove))
        .routes(routes!(workspaces::list, workspaces::create))
        .routes(routes!(workspaces::get, workspaces::remove))
        .routes(routes!(workspaces::pin))
        .routes(routes!(workspaces::grant, workspaces::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::metrics))
        .routes(routes!(meta::openapi))
        .split_for_parts();
    describe(&mut api);
    let _ = state
        .openapi
        .set(api.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    router
        .fallback(meta::not_found)
        // The last layer is the outermost: every answer, a refused body included, is counted.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(meta::limit_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            meta::track,
        ))
        .with_state(state)
}

fn describe(api: &mut OpenApi) {
    api.info.title = "keyport".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "Per-user secrets injected into SSH sessions, and per-user SSH keys served from memory. \
         No response ever contains a secret value or a private key."
            .into(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    declare_common_statuses(api);
}

/// The answers every operation can give from the layers and extractors in front of its
/// handler, declared once here rather than on every handler: 400 (a path segment, query or
/// body that does not parse), 413 (a body over the limit, refused from its Content-Length),
/// and, where a body is taken, 415 (not JSON). The fuzz test (tests/api_fuzz) fails on any
/// status an operation answers that the document does not declare.
fn declare_common_statuses(api: &mut OpenApi) {
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build()
    };
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let mut common = vec![
                ("400", "Invalid input; each broken rule is named"),
                ("413", "Body over 2 MiB, refused from its Content-Length"),
            ];
            if operation.request_body.is_some() {
                common.push(("415", "The body is not application/json"));
            }
            for (status, description) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description).into());
            }
        }
    }
}

/// Serves the API (`router`) on `listener` until `shutdown` resolves, then finishes in-flight
/// requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: &crate::config::HttpSettings,
) -> std::io::Result<()> {
    listen::serve(listener, router, shutdown, settings).await
}

/// Serves the API to one SSH session on its private socket, authenticated as the session's
/// user (no token), until the session ends.
pub async fn serve_session(socket: SessionSocket, router: Router, user: SessionUser) {
    // Layered around the shared router as one fallback, not route by route: a session's
    // socket then costs one route's worth of memory, not a copy of every route.
    let app = Router::new()
        .fallback_service(router)
        .layer(axum::Extension(user));
    let ended = socket.ended();
    // When the session ends, this stops accepting, and every connection reads end-of-file.
    tokio::select! {
        _ = ended => {}
        served = axum::serve(SessionListener(socket), app).into_future() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "session api socket failed");
            }
        }
    }
}

/// A session's API socket, as axum takes listeners.
struct SessionListener(SessionSocket);

impl axum::serve::Listener for SessionListener {
    type Io = crate::ssh::sessiondir::SessionStream;
    type Addr = ();

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.accept().await {
            Some((stream, _)) => (stream, ()),
            // The session is over: `serve_session` drops this listener right away.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(())
    }
}
