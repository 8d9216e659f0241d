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
use crate::store::AuditRecord;
use crate::vault::parse_since;

/// Most events one page shows.
const SHOWN: usize = 200;

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
    let user = match (filter.user.trim(), who.is_admin) {
        ("", _) | (_, false) => Some(who.name.clone()),
        ("*", true) => None,
        (name, true) => Some(name.to_string()),
    };
    let kind = filter.kind.trim().to_string();
    let events = if errors.is_empty() {
        let kind = kind.clone();
        state
            .vault(move |v| {
                newest(v, user.as_deref(), since, |e| {
                    until.is_none_or(|u| e.at <= u)
                        && (kind.is_empty()
                            || e.action == kind
                            || e.action.starts_with(&format!("{kind}.")))
                })
            })
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
        @if events.len() == SHOWN { p.help { "The newest " (SHOWN) " matching events; narrow the filter to see older ones." } }
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

/// The newest [`SHOWN`] events of `user` (everyone's: `None`) from `since` on that `keep`
/// keeps, newest first; read a page at a time, so memory stays bounded.
fn newest(
    v: &mut crate::vault::Vault,
    user: Option<&str>,
    since: i64,
    keep: impl Fn(&AuditRecord) -> bool,
) -> Result<Vec<AuditRecord>, crate::vault::VaultError> {
    let mut shown = std::collections::VecDeque::with_capacity(SHOWN + 1);
    let mut after = 0;
    loop {
        let page = v.audit_page(user, since, after, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let full = page.len() == 1000;
        for event in page.into_iter().filter(|e| keep(e)) {
            shown.push_back(event);
            if shown.len() > SHOWN {
                shown.pop_front();
            }
        }
        if !full {
            break;
        }
    }
    Ok(shown.into_iter().rev().collect())
}
