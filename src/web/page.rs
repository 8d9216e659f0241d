//! What every page is made of: the frame (head, navigation, sign-out), form fields with the
//! errors that name them, times, and the one place an error becomes a page.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::de::DeserializeOwned;

use super::signin::Signed;
use crate::secrets::{Violation, safe_serde_message};
use crate::shared::SharedError;
use crate::store::StoreError;
use crate::vault::VaultError;

/// Which entry of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Secrets,
    Key,
    LoginKeys,
    Tokens,
    Audit,
    Users,
    Workspaces,
    None,
}

/// A whole page: `title`, the navigation for `who` (none before signing in), an optional
/// one-line message, and `body`.
pub fn frame(
    title: &str,
    who: Option<&Signed>,
    nav: Nav,
    flash: Option<&str>,
    body: Markup,
) -> Markup {
    let mut entries = vec![
        (Nav::Secrets, "/secrets", "Secrets"),
        (Nav::Key, "/key", "Key"),
        (Nav::LoginKeys, "/login-keys", "Login keys"),
        (Nav::Tokens, "/tokens", "Tokens"),
        (Nav::Audit, "/audit", "Audit"),
    ];
    if who.is_some_and(|w| w.is_admin) {
        entries.push((Nav::Users, "/users", "Users"));
        entries.push((Nav::Workspaces, "/workspaces", "Workspaces"));
    }
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keyport" }
                link rel="stylesheet" href="/static/keyport.css";
                script src="/static/keyport.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "keyport" }
                    @if let Some(who) = who {
                        nav aria-label="Main" {
                            ul {
                                @for (entry, href, label) in &entries {
                                    li {
                                        @if *entry == nav {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                            form.signout method="post" action="/logout" {
                                span { "Signed in as " strong { (who.name) } }
                                " "
                                button type="submit" id="sign-out" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(flash) = flash {
                        p id="flash" role="status" { (flash) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The rules a form broke, shown next to the fields they name.
#[derive(Default)]
pub struct Errors(pub Vec<Violation>);

impl Errors {
    /// From a failed vault call: its violations, or `Err` for anything that is not about the
    /// input.
    pub fn from_call(e: SharedError) -> Result<(StatusCode, Self), PageError> {
        match e {
            SharedError::Vault(VaultError::Invalid(v)) => Ok((StatusCode::BAD_REQUEST, Self(v))),
            SharedError::Vault(VaultError::Conflict(v)) => Ok((StatusCode::CONFLICT, Self(v))),
            other => Err(PageError::from(other)),
        }
    }

    /// One violation.
    pub fn one(field: &'static str, detail: impl Into<String>) -> Self {
        Self(vec![Violation::new(field, detail)])
    }

    fn on(&self, field: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|v| v.field == field)
            .map(|v| v.detail.as_str())
            .collect()
    }

    /// The violations of fields not on the form (`fields`), listed above it.
    pub fn others(&self, fields: &[&str]) -> Markup {
        let rest: Vec<&Violation> = self
            .0
            .iter()
            .filter(|v| !fields.contains(&v.field.as_ref()))
            .collect();
        html! {
            @if !rest.is_empty() {
                div.errors role="alert" {
                    p { "Nothing was changed:" }
                    ul { @for v in rest { li { code { (v.field) } ": " (v.detail) } } }
                }
            } @else if !self.0.is_empty() {
                div.errors role="alert" { p { "Nothing was changed: see the fields marked below." } }
            }
        }
    }

    /// A labelled field: `input` is the control (with `id = name`), `help` a hint under it,
    /// then each rule it broke.
    pub fn field(&self, name: &str, label: &str, help: &str, input: Markup) -> Markup {
        let broken = self.on(name);
        html! {
            div.field.invalid[!broken.is_empty()] {
                label for=(name) { (label) }
                (input)
                @if !help.is_empty() { p.help id={(name) "-help"} { (help) } }
                @if !broken.is_empty() {
                    p.error id={(name) "-error"} { (broken.join("; ")) }
                }
            }
        }
    }
}

/// A text input named and labelled `name` with its current `value`.
pub fn text(name: &str, value: &str) -> Markup {
    html! {
        input type="text" id=(name) name=(name) value=(value)
            aria-describedby={(name) "-help " (name) "-error"} autocomplete="off" spellcheck="false";
    }
}

/// A write-only value field: always empty, never filled from what is stored or was sent.
pub fn value_area(name: &str, placeholder: &str) -> Markup {
    html! {
        textarea id=(name) name=(name) rows="3" placeholder=(placeholder)
            aria-describedby={(name) "-help " (name) "-error"}
            autocomplete="off" spellcheck="false" {}
    }
}

/// A POST form of one button (a toggle, a removal), with hidden fields.
pub fn button_form(action: &str, hidden: &[(&str, &str)], class: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            @for (name, value) in hidden { input type="hidden" name=(name) value=(value); }
            button type="submit" class=(class) { (label) }
        }
    }
}

pub use crate::when::rfc3339 as when;

/// How long ago `ms` was (see [`crate::when::age`]).
pub fn age(ms: i64) -> String {
    crate::when::age(crate::store::now_ms() - ms)
}

/// Why a page could not be shown; the one mapping of errors to pages.
#[derive(Debug)]
pub enum PageError {
    /// 404.
    NotFound(String),
    /// 403.
    Forbidden(String),
    /// 410: a sign-in link that is used up or ran out.
    Gone(String),
    /// 400 outside a form.
    Invalid(String),
    /// 409 outside a form.
    Conflict(String),
    /// 503: the master key was rotated under this daemon.
    Unavailable(String),
    /// 500: logged, never shown.
    Internal,
}

impl From<SharedError> for PageError {
    fn from(e: SharedError) -> Self {
        match e {
            SharedError::Vault(VaultError::NotFound { kind, name }) => {
                PageError::NotFound(format!("{kind} {name} not found"))
            }
            SharedError::Vault(e @ VaultError::Invalid(_)) => PageError::Invalid(e.to_string()),
            SharedError::Vault(e @ VaultError::Conflict(_)) => PageError::Conflict(e.to_string()),
            SharedError::Vault(e @ VaultError::Store(StoreError::KeyRotated { .. })) => {
                PageError::Unavailable(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "web page failed");
                PageError::Internal
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m),
            PageError::Gone(m) => (StatusCode::GONE, "Link no longer valid", m),
            PageError::Invalid(m) => (StatusCode::BAD_REQUEST, "Not done", m),
            PageError::Conflict(m) => (StatusCode::CONFLICT, "Not done", m),
            PageError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Not available", m),
            PageError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "internal error; see the keyport log".to_string(),
            ),
        };
        let body = html! { p.error { (message) } p { a href="/" { "Back to keyport" } } };
        (status, frame(title, None, Nav::None, None, body)).into_response()
    }
}

/// `axum::Form` whose rejections are pages (400, 413 or 415, with what was wrong and never
/// the input).
pub struct WebForm<T>(pub T);

impl<T, S> FromRequest<S> for WebForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| Self(f.0))
            .map_err(|e| {
                PageError::Invalid(format!("bad form: {}", safe_serde_message(&e.body_text())))
            })
    }
}

/// `axum::extract::Query` whose rejections are pages.
pub struct WebQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for WebQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| {
                PageError::Invalid(format!("bad query: {}", safe_serde_message(&e.body_text())))
            })
    }
}

/// `axum::extract::Path` whose rejections are pages.
pub struct WebPath<T>(pub T);

impl<T, S> FromRequestParts<S> for WebPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| {
                PageError::Invalid(format!("bad path: {}", safe_serde_message(&e.body_text())))
            })
    }
}

/// What the page after a change says (`?done=created&name=x&count=2`): a code that picks
/// fixed words, so a crafted link cannot put its own text on a page. `name` is shown only
/// when it is a valid name.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Done {
    /// What was done.
    pub done: Option<String>,
    /// To what.
    pub name: Option<String>,
    /// How many.
    pub count: Option<usize>,
}

impl Done {
    /// `name`, if it is a valid name, else `fallback`.
    pub fn name_or<'a>(&'a self, fallback: &'a str) -> &'a str {
        self.name
            .as_deref()
            .filter(|n| crate::secrets::validate::check_name(n).is_ok())
            .unwrap_or(fallback)
    }
}

/// The redirect after a change: `to?done=what` and the name, if it is a valid one.
pub fn done(to: &str, what: &str, name: Option<&str>) -> Response {
    let name = name
        .filter(|n| crate::secrets::validate::check_name(n).is_ok())
        .map(|n| format!("&name={n}"))
        .unwrap_or_default();
    axum::response::Redirect::to(&format!("{to}?done={what}{name}")).into_response()
}
