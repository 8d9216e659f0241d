//! Admins' pages: users (list, add, remove with confirmation) and workspaces (list, with
//! their grants). Nobody else sees them; nothing on them leads to anyone's values.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyport_keys::KeyType;
use maud::html;
use serde::Deserialize;

use super::WebState;
use super::page::{Done, Errors, Nav, PageError, WebForm, WebPath, WebQuery, frame, text, when};
use super::signin::Signed;
use crate::vault::NewUserSpec;

fn admin(who: &Signed) -> Result<(), PageError> {
    if who.is_admin {
        Ok(())
    } else {
        Err(PageError::Forbidden("only admins can see this page".into()))
    }
}

/// The add form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddUser {
    /// Named as the vault's rule names it.
    user: String,
    os_user: String,
    admin: Option<String>,
    login_keys: String,
}

/// `GET /users`.
pub async fn users(
    State(state): State<WebState>,
    who: Signed,
    WebQuery(done): WebQuery<Done>,
) -> Result<Response, PageError> {
    admin(&who)?;
    let flash = match done.done.as_deref() {
        Some("added") => Some("Added the user."),
        Some("removed") => Some("Removed the user, with their secrets, keys and sessions."),
        _ => None,
    };
    users_page(
        &state,
        &who,
        flash,
        &AddUser::default(),
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

async fn users_page(
    state: &WebState,
    who: &Signed,
    flash: Option<&str>,
    form: &AddUser,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let users = state.vault(|v| v.users()).await?;
    let body = html! {
        div.scroll { table id="users" {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Admin" } th scope="col" { "OS account" } th scope="col" { "Created" } th scope="col" { "Actions" } } }
            tbody { @for u in &users {
                tr id={"user-" (u.name)} {
                    td data-label="Name" { (u.name) }
                    td data-label="Admin" { @if u.is_admin { "yes" } @else { "no" } }
                    td data-label="OS account" { code { (u.os_user) } }
                    td data-label="Created" { (when(u.created_at)) }
                    td data-label="Actions" {
                        @if u.name != who.name { a.delete href={"/users/" (u.name) "/remove"} { "Remove" } }
                    }
                }
            } }
        } }
        h2 { "Add a user" }
        (errors.others(&["user", "os-user", "login-key"]))
        form method="post" action="/users" {
            (errors.field("user", "Name", "Letters, digits, . _ - ; up to 64.", text("user", &form.user)))
            (errors.field("os-user", "OS account", "The account their sessions run as (when keyport runs as root); empty for the default.", html! {
                input type="text" id="os-user" name="os_user" value=(form.os_user) aria-describedby="os-user-help os-user-error" autocomplete="off";
            }))
            (errors.field("admin", "Admin", "", html! {
                input type="checkbox" id="admin" name="admin" value="on" checked[form.admin.is_some()];
            }))
            (errors.field("login-key", "Login keys", "Public keys they log in with, one per line.", html! {
                textarea id="login-key" name="login_keys" rows="3" spellcheck="false" aria-describedby="login-key-help login-key-error" { (form.login_keys) }
            }))
            button type="submit" id="add-user" { "Add user" }
        }
    };
    Ok((status, frame("Users", Some(who), Nav::Users, flash, body)).into_response())
}

/// `POST /users`.
pub async fn add_user(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<AddUser>,
) -> Result<Response, PageError> {
    admin(&who)?;
    let spec = NewUserSpec {
        name: form.user.trim().to_string(),
        admin: form.admin.is_some(),
        os_user: Some(form.os_user.trim().to_string()).filter(|s| !s.is_empty()),
        login_keys: vec![form.login_keys.replace("\r\n", "\n")],
        key_type: KeyType::default(),
    };
    let actor = who.actor();
    match state.vault(move |v| v.add_user(&actor, &spec)).await {
        Ok(_) => Ok(Redirect::to("/users?done=added").into_response()),
        Err(e) => {
            let (status, errors) = Errors::from_call(e)?;
            users_page(&state, &who, None, &form, &errors, status).await
        }
    }
}

/// `GET /users/{name}/remove`: are you sure?
pub async fn confirm_remove(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
) -> Result<Response, PageError> {
    admin(&who)?;
    let user = state.vault(move |v| v.user(&name)).await?;
    let body = html! {
        p { "Remove " strong { (user.name) } "? Their secrets, key pair, login keys and tokens are deleted, and their sessions end. This cannot be undone." }
        form method="post" {
            button.danger type="submit" id="remove" { "Remove " (user.name) }
            " "
            a href="/users" { "Cancel" }
        }
    };
    let title = format!("Remove {}?", user.name);
    Ok(frame(&title, Some(&who), Nav::Users, None, body).into_response())
}

/// `POST /users/{name}/remove`.
pub async fn remove_user(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
) -> Result<Response, PageError> {
    admin(&who)?;
    if name == who.name {
        return Err(PageError::Invalid("you cannot remove yourself here".into()));
    }
    let actor = who.actor();
    state.vault(move |v| v.remove_user(&actor, &name)).await?;
    Ok(Redirect::to("/users?done=removed").into_response())
}

/// `GET /workspaces`.
pub async fn workspaces(State(state): State<WebState>, who: Signed) -> Result<Response, PageError> {
    admin(&who)?;
    let workspaces = state.vault(|v| v.workspaces()).await?;
    let body = html! {
        p { "Workspaces are added and granted with " code { "keyport workspace" } " (see keyport workspace --help)." }
        div.scroll { table id="workspaces" {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "Login" } th scope="col" { "Auth" } th scope="col" { "Host keys" } th scope="col" { "Users" } } }
            tbody { @for w in &workspaces {
                tr id={"workspace-" (w.name)} {
                    td data-label="Name" { (w.name) }
                    td data-label="Address" { @if let Some(a) = &w.address { code { (a) } } }
                    td data-label="Login" { code { (w.os_user) } }
                    td data-label="Auth" { (w.auth.as_str()) }
                    td data-label="Host keys" { (w.host_keys.len()) }
                    td data-label="Users" {
                        @for g in &w.grants {
                            (g.user) @if g.owner { " (owner)" } " as " code { (g.login) } br;
                        }
                    }
                }
            } }
        } }
    };
    Ok(frame("Workspaces", Some(&who), Nav::Workspaces, None, body).into_response())
}
