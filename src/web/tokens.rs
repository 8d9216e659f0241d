//! The tokens page: the user's API tokens (names and times), creating one — its text is on
//! the page that answers the POST, once, and stored only hashed — and revoking one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::WebState;
use super::page::{
    Done, Errors, Nav, PageError, WebForm, WebPath, WebQuery, button_form, frame, text, when,
};
use super::signin::Signed;

/// `GET /tokens`.
pub async fn list(
    State(state): State<WebState>,
    who: Signed,
    WebQuery(done): WebQuery<Done>,
) -> Result<Response, PageError> {
    let flash = (done.done.as_deref() == Some("revoked")).then_some("Revoked: it no longer works.");
    page(
        &state,
        &who,
        flash,
        None,
        "",
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn page(
    state: &WebState,
    who: &Signed,
    flash: Option<&str>,
    created: Option<Markup>,
    name: &str,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let user = who.name.clone();
    let tokens = state.vault(move |v| v.tokens(&user)).await?;
    let body = html! {
        @if let Some(created) = created { (created) }
        p { "Tokens let the keyport CLI and scripts use the API as you (" code { "Authorization: Bearer …" } ")." }
        div.scroll { table id="tokens" {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Actions" } } }
            tbody { @for t in &tokens {
                tr id={"token-" (t.name)} {
                    td data-label="Name" { (t.name) }
                    td data-label="Created" { (when(t.created_at)) }
                    td data-label="Last used" { @if let Some(at) = t.last_used_at { (when(at)) } @else { "never" } }
                    td data-label="Actions" { (button_form(&format!("/tokens/{}/revoke", t.name), &[], "revoke", "Revoke")) }
                }
            } }
        } }
        h2 { "Create a token" }
        (errors.others(&["token"]))
        form method="post" action="/tokens" {
            (errors.field("token", "Name", "What it is for, e.g. laptop or ci.", text("token", name)))
            button type="submit" id="create-token" { "Create" }
        }
    };
    Ok((status, frame("Tokens", Some(who), Nav::Tokens, flash, body)).into_response())
}

/// `POST /tokens`: the new token is on this answer only (not cached: every page is
/// `no-store`).
pub async fn create(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<CreateField>,
) -> Result<Response, PageError> {
    let name = form.token.trim().to_string();
    let (actor, user, token_name) = (who.actor(), who.name.clone(), name.clone());
    match state
        .vault(move |v| v.create_token(&actor, &user, &token_name))
        .await
    {
        Ok(issued) => {
            let shown = html! {
                div.created role="status" {
                    p { "Created token " strong { (name) } ". Copy it now: it is not shown again." }
                    pre id="new-token" { (issued.token.as_str()) }
                    p.actions { button type="button" id="copy" data-copy="new-token" hidden { "Copy" } }
                }
            };
            let status = StatusCode::CREATED;
            page(
                &state,
                &who,
                None,
                Some(shown),
                "",
                &Errors::default(),
                status,
            )
            .await
        }
        Err(e) => {
            let (status, errors) = Errors::from_call(e)?;
            page(&state, &who, None, None, &name, &errors, status).await
        }
    }
}

/// The create form's one field (named as the API's validation names it).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateField {
    token: String,
}

/// `POST /tokens/{name}/revoke`.
pub async fn revoke(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
) -> Result<Response, PageError> {
    let (actor, user) = (who.actor(), who.name.clone());
    state
        .vault(move |v| v.revoke_token(&actor, &user, &name))
        .await?;
    Ok(Redirect::to("/tokens?done=revoked").into_response())
}
