//! Health, Prometheus metrics, the OpenAPI document, the JSON 404, and the middleware that
//! counts requests by route and status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Request counters, by (route template, method, status).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    fn count(&self, route: &str, method: &Method, status: StatusCode) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route.to_string(), method.to_string(), status.as_u16()))
                .or_default() += 1;
        }
    }
}

/// Counts every request under its route template (not its path: no names leak into labels).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    tracing::debug!(%route, %method, status = response.status().as_u16(), "api request");
    state.metrics.count(&route, &method, response.status());
    response
}

/// Refuses a body whose Content-Length is over [`super::MAX_BODY_BYTES`] before reading any
/// of it (bodies without a length are cut off at the same limit while they are read).
pub async fn limit_body(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
            .into_response();
    }
    next.run(request).await
}

/// Liveness.
#[utoipa::path(
    get,
    operation_id = "healthz",
    path = "/api/v1/healthz",
    tag = "meta",
    responses((status = 200, description = "`ok`", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics (text format).
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/api/v1/metrics",
    tag = "meta",
    responses((status = 200, description = "Prometheus text exposition", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let secrets = state.vault(|v| v.secret_count()).await?;
    let mut out = String::new();
    out.push_str("# HELP keyport_api_requests_total API requests by route, method and status.\n");
    out.push_str("# TYPE keyport_api_requests_total counter\n");
    if let Ok(map) = state.metrics.requests.lock() {
        for ((route, method, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "keyport_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP keyport_secrets Secrets stored, over all users.\n");
    out.push_str("# TYPE keyport_secrets gauge\n");
    let _ = writeln!(out, "keyport_secrets {secrets}");
    out.push_str(&state.daemon.render());
    out.push_str(&state.vault.source_metrics());
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// This document.
#[utoipa::path(
    get,
    operation_id = "openapi",
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
    ))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    let doc = state.openapi.get().cloned().unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], doc).into_response()
}

/// Anything no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route (see /api/v1/openapi.json)",
    )
}
