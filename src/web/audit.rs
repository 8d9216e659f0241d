//! The audit page: your events (an admin may pick any user's, or everyone's), newest first,
//! filtered by kind (`secret`, `secret.update`, …) and time. Events name things and fields,
//! never values.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::WebState;
use super::page::{Errors, Nav, PageError, frame, text, when};
use super::signin::Signed;
use crate::when::parse_since;

/// Most events one page shows.
const SHOWN: i64 = 200;

/// The filter form (a GET: filtering changes nothing).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Filter {
    kind: String,
    since: String,
    until: String,
    user: String,
}

/// `GET /audit`.
pub async fn list(
    State(state): State<WebState>,
    who: Signed,
    Query(filter): Query<Filter>,
) -> Result<Response, PageError> {
    let mut errors = Vec::new();
    let mut time = |field: &'static str, text: &str, default: Option<i64>| match text.trim() {
        "" => default,
        text => parse_since(text).or_else(|| {
            errors.push(crate::secrets::Violation::new(
                field,
                "must be RFC 3339 (2026-12-01T10:00:00Z) or an age like 15m, 2h, 7d",
            ));
            default
        }),
    };
    let since = time("since", &filter.since, parse_since("7d")).unwrap_or(0);
    let until = time("until", &filter.until, None);
    // As the API: your own events; anyone's (`*`: everyone's) for an admin.
    let user = match filter.user.trim() {
        "" => Some(who.name.clone()),
        name if name == who.name => Some(who.name.clone()),
        _ if !who.is_admin => {
            return Err(PageError::Forbidden(
                "only admins can read other users' events".into(),
            ));
        }
        "*" => None,
        name => Some(name.to_string()),
    };
    let kind = Some(filter.kind.trim().to_string()).filter(|k| !k.is_empty());
    let window = (since, until.unwrap_or(i64::MAX));
    let events = if errors.is_empty() {
        state
            .vault(move |v| v.recent_audit_events(user.as_deref(), kind.as_deref(), window, SHOWN))
            .await?
    } else {
        Vec::new()
    };
    let errors = Errors(errors);
    let status = if errors.0.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = html! {
        form.filter method="get" action="/audit" {
            (errors.field("kind", "Kind", "secret, secret.update, session, web, token, …", text("kind", &filter.kind)))
            (errors.field("since", "Since", "Default 7d.", text("since", &filter.since)))
            (errors.field("until", "Until", "Default now.", text("until", &filter.until)))
            @if who.is_admin {
                (errors.field("user", "User", "Default you; * for everyone.", text("user", &filter.user)))
            }
            button type="submit" id="filter" { "Filter" }
        }
        @if i64::try_from(events.len()) == Ok(SHOWN) { p.help { "The newest " (SHOWN) " matching events; narrow the filter to see older ones." } }
        div.scroll { table id="audit" {
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "User" }
                th scope="col" { "By" } th scope="col" { "Secret" } th scope="col" { "Detail" }
            } }
            tbody { @for e in &events {
                tr {
                    td data-label="When" { (when(e.at)) }
                    td.action data-label="Action" { code { (e.action) } }
                    td data-label="User" { (e.user_name) }
                    td data-label="By" { (e.actor) }
                    td data-label="Secret" { @if let Some(s) = &e.secret_name { (s) } }
                    td data-label="Detail" { @if !e.detail.as_object().is_some_and(|o| o.is_empty()) { code { (e.detail.to_string()) } } }
                }
            } }
        } }
    };
    Ok((status, frame("Audit", Some(&who), Nav::Audit, None, body)).into_response())
}
