//! The key page (the generated key pair's public half: copy it, see its fingerprint,
//! regenerate it, and where to register it) and the login keys page (the keys this user logs
//! in to keyport with).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyport_keys::KeyType;
use maud::html;
use serde::Deserialize;

use super::WebState;
use super::page::{Done, Errors, Nav, PageError, WebForm, WebQuery, button_form, frame, when};
use super::signin::Signed;

/// `GET /key`.
pub async fn show(
    State(state): State<WebState>,
    who: Signed,
    WebQuery(done): WebQuery<Done>,
) -> Result<Response, PageError> {
    let user = who.name.clone();
    let key = state.vault(move |v| v.user_key(&user)).await?;
    let flash = (done.done.as_deref() == Some("regenerated")).then_some(
        "A new key pair was made: register its public key again wherever the old one was.",
    );
    let body = html! {
        p { "keyport made this key pair for you and serves its private half from memory to your sessions (the agent, " code { "GIT_SSH_COMMAND" } ", " code { "ssh -A" } "). The private key never leaves keyport." }
        h2 { "Public key" }
        pre id="public-key" { (key.public_key) }
        p.actions { button type="button" id="copy" data-copy="public-key" hidden { "Copy" } }
        dl {
            dt { "Fingerprint" } dd { code id="fingerprint" { (key.fingerprint) } }
            dt { "Type" } dd { code id="key-type" { (key.algorithm) } }
            dt { "Created" } dd { (when(key.created_at)) }
        }
        h2 { "Register it" }
        ul {
            li { strong { "GitHub" } ": Settings → SSH and GPG keys → New SSH key (Authentication key); paste the public key." }
            li { strong { "GitLab" } ": Preferences → SSH Keys → Add new key; paste it." }
            li { strong { "A server" } ": append it as one line to " code { "~/.ssh/authorized_keys" } " of the account you log in to." }
        }
        p { a.button.danger id="regenerate" href="/key/regenerate" { "Regenerate…" } }
    };
    Ok(frame("Your key", Some(&who), Nav::Key, flash, body).into_response())
}

/// `GET /key/regenerate`: are you sure?
pub async fn confirm_regenerate(who: Signed) -> Response {
    let body = html! {
        p { "A new key pair replaces the current one at once: every place the current public key is registered (GitHub, GitLab, servers) stops accepting it. Register the new one after." }
        form method="post" action="/key/regenerate" {
            div.field {
                label for="algorithm" { "Type" }
                select id="algorithm" name="algorithm" {
                    option value="ed25519" selected { "ed25519" }
                    option value="ecdsa-p256" { "ecdsa-p256" }
                }
            }
            button.danger type="submit" id="regenerate-confirm" { "Regenerate" }
            " "
            a href="/key" { "Cancel" }
        }
    };
    frame("Regenerate your key?", Some(&who), Nav::Key, None, body).into_response()
}

/// The regenerate form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Regenerate {
    algorithm: String,
}

/// `POST /key/regenerate`.
pub async fn regenerate(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<Regenerate>,
) -> Result<Response, PageError> {
    let kind =
        match form.algorithm.as_str() {
            "" => None,
            name => Some(name.parse::<KeyType>().map_err(|_| {
                PageError::Invalid("algorithm: must be ed25519 or ecdsa-p256".into())
            })?),
        };
    let (actor, user) = (who.actor(), who.name.clone());
    state
        .vault(move |v| v.regenerate_user_key(&actor, &user, kind))
        .await?;
    Ok(Redirect::to("/key?done=regenerated").into_response())
}

/// The add form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddKeys {
    public_key: String,
}

/// `GET /login-keys`.
pub async fn login_keys(
    State(state): State<WebState>,
    who: Signed,
    WebQuery(done): WebQuery<Done>,
) -> Result<Response, PageError> {
    login_keys_page(&state, &who, &done, &Errors::default(), StatusCode::OK).await
}

async fn login_keys_page(
    state: &WebState,
    who: &Signed,
    done: &Done,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let user = who.name.clone();
    let keys = state.vault(move |v| v.login_keys(&user)).await?;
    let flash = match done.done.as_deref() {
        Some("added") => Some("Added: you can log in with it now."),
        Some("removed") => Some("Removed: it no longer logs you in."),
        _ => None,
    };
    let body = html! {
        p { "The SSH keys you log in to keyport with." }
        div.scroll { table id="login-keys" {
            thead { tr { th scope="col" { "Type" } th scope="col" { "Fingerprint" } th scope="col" { "Comment" } th scope="col" { "Added" } th scope="col" { "Actions" } } }
            tbody { @for k in &keys {
                tr {
                    td data-label="Type" { (k.algorithm) }
                    td data-label="Fingerprint" { code { (k.fingerprint) } }
                    td data-label="Comment" { (k.comment) }
                    td data-label="Added" { (when(k.created_at)) }
                    td data-label="Actions" {
                        (button_form("/login-keys/remove", &[("fingerprint", &k.fingerprint)], "remove", "Remove"))
                    }
                }
            } }
        } }
        h2 { "Add login keys" }
        (errors.others(&["login-key"]))
        form method="post" action="/login-keys" {
            (errors.field("login-key", "Public keys", "One per line, as in authorized_keys (ssh-ed25519 AAAA… comment).", html! {
                textarea id="login-key" name="public_key" rows="4" spellcheck="false" aria-describedby="login-key-help login-key-error" {}
            }))
            button type="submit" id="add-login-keys" { "Add" }
        }
    };
    Ok((
        status,
        frame("Login keys", Some(who), Nav::LoginKeys, flash, body),
    )
        .into_response())
}

/// `POST /login-keys`.
pub async fn add_login_keys(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<AddKeys>,
) -> Result<Response, PageError> {
    let (actor, user) = (who.actor(), who.name.clone());
    let lines = vec![form.public_key.replace("\r\n", "\n")];
    match state
        .vault(move |v| v.add_login_keys(&actor, &user, &lines))
        .await
    {
        Ok(_) => Ok(Redirect::to("/login-keys?done=added").into_response()),
        Err(e) => {
            let (status, errors) = Errors::from_call(e)?;
            login_keys_page(&state, &who, &Done::default(), &errors, status).await
        }
    }
}

/// The remove form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RemoveKey {
    fingerprint: String,
}

/// `POST /login-keys/remove`.
pub async fn remove_login_key(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<RemoveKey>,
) -> Result<Response, PageError> {
    let (actor, user) = (who.actor(), who.name.clone());
    state
        .vault(move |v| v.remove_login_key(&actor, &user, &form.fingerprint))
        .await?;
    Ok(Redirect::to("/login-keys?done=removed").into_response())
}
