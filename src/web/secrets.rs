//! The secrets page: the table (name, kind, targets, enabled, age with overdue marked,
//! description), enable/disable, delete with confirmation, and import. Creating and editing
//! are in `secret_form.rs`. Values are never shown: the types rendered carry none.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::WebState;
use super::page::{
    self, Done, Errors, Nav, PageError, WebForm, WebPath, WebQuery, age, button_form, frame, when,
};
use super::signin::Signed;
use crate::secrets::SecretMeta;
use crate::secrets::import::{self, Format};

pub use super::secret_form::{create, edit, new, update};

/// The message after a change (`/secrets?done=created&name=x`).
fn message(done: &Done) -> Option<String> {
    let name = done.name_or("the secret");
    Some(match done.done.as_deref()? {
        "created" => format!("Created {name}."),
        "updated" => format!("Saved {name}."),
        "unchanged" => format!("Nothing to change in {name}."),
        "enabled" => format!("Enabled {name}: new sessions get it."),
        "disabled" => format!("Disabled {name}: new sessions no longer get it."),
        "deleted" => format!("Deleted {name}."),
        "imported" => format!("Imported {} secrets.", done.count.unwrap_or(0)),
        _ => return None,
    })
}

/// The redirect after a change to `name`.
pub fn done(what: &str, name: &str) -> Response {
    page::done("/secrets", what, Some(name))
}

/// `GET /secrets`.
pub async fn list(
    State(state): State<WebState>,
    who: Signed,
    WebQuery(done): WebQuery<Done>,
) -> Result<Response, PageError> {
    let user = who.name.clone();
    let secrets = state.vault(move |v| v.secrets(&user)).await?;
    let body = html! {
        p.actions {
            a.button id="new-secret" href="/secrets/new" { "New secret" }
            " "
            a.button id="import" href="/secrets/import" { "Import .env or JSON" }
        }
        @if secrets.is_empty() {
            p { "No secrets yet. Each secret you add is injected into your next SSH session, as an environment variable, a file, or both." }
        }
        (table(&secrets))
    };
    let flash = message(&done);
    Ok(frame("Secrets", Some(&who), Nav::Secrets, flash.as_deref(), body).into_response())
}

fn table(secrets: &[SecretMeta]) -> Markup {
    html! {
        div.scroll {
            table id="secrets" {
                caption.visually-hidden { "Your secrets" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Env" }
                    th scope="col" { "File" } th scope="col" { "Enabled" } th scope="col" { "Age" }
                    th scope="col" { "Description" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for s in secrets {
                        tr id={"secret-" (s.name)} {
                            td.name data-label="Name" {
                                (s.name)
                                @if let Some(source) = &s.source { br; small { "from " code { (source) } } }
                                @if s.required { br; small { "required" } }
                            }
                            td.kind data-label="Kind" { (s.kind.as_str()) }
                            td.env data-label="Env" { @if let Some(env) = &s.env { code { (env) } } }
                            td.file data-label="File" { @if let Some(file) = &s.file { code { (file) } } }
                            td.enabled data-label="Enabled" { @if s.enabled { "yes" } @else { "no" } }
                            td.age data-label="Age" {
                                time datetime=(when(s.value_updated_at)) { (age(s.value_updated_at)) }
                                @if s.stale {
                                    " " strong.overdue title={"older than " (s.rotate_after_effective)} { "overdue" }
                                }
                            }
                            td.description data-label="Description" { (s.description) }
                            td.actions data-label="Actions" {
                                a.edit href={"/secrets/" (s.name) "/edit"} { "Edit" span.visually-hidden { " " (s.name) } }
                                " "
                                @let (to, label) = if s.enabled { ("false", "Disable") } else { ("true", "Enable") };
                                (button_form(&format!("/secrets/{}/enabled", s.name), &[("enabled", to)], "toggle", label))
                                " "
                                a.delete href={"/secrets/" (s.name) "/delete"} { "Delete" span.visually-hidden { " " (s.name) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The toggle's form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Toggle {
    enabled: String,
}

/// `POST /secrets/{name}/enabled`.
pub async fn toggle(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
    WebForm(form): WebForm<Toggle>,
) -> Result<Response, PageError> {
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(PageError::Invalid("enabled: must be true or false".into())),
    };
    let patch = crate::secrets::SecretPatch {
        enabled: Some(enabled),
        ..Default::default()
    };
    let (actor, user, secret) = (who.actor(), who.name.clone(), name.clone());
    state
        .vault(move |v| v.update_secret(&actor, &user, &secret, &patch))
        .await?;
    Ok(done(if enabled { "enabled" } else { "disabled" }, &name))
}

/// `GET /secrets/{name}/delete`: are you sure?
pub async fn confirm_delete(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
) -> Result<Response, PageError> {
    let (user, secret) = (who.name.clone(), name.clone());
    let meta = state.vault(move |v| v.secret(&user, &secret)).await?;
    let body = html! {
        p { "Delete " strong { (meta.name) } "? New sessions no longer get it"
            @if meta.file.is_some() { ", and its file is removed from where keyport wrote it" }
            ". This cannot be undone." }
        form method="post" {
            button.danger type="submit" id="delete" { "Delete " (meta.name) }
            " "
            a href="/secrets" { "Cancel" }
        }
    };
    let title = format!("Delete {}?", meta.name);
    Ok(frame(&title, Some(&who), Nav::Secrets, None, body).into_response())
}

/// `POST /secrets/{name}/delete`.
pub async fn delete(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
) -> Result<Response, PageError> {
    let (actor, user, secret) = (who.actor(), who.name.clone(), name.clone());
    state
        .vault(move |v| v.delete_secret(&actor, &user, &secret))
        .await?;
    Ok(done("deleted", &name))
}

/// The import form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ImportForm {
    format: String,
    content: zeroize::Zeroizing<String>,
}

/// `GET /secrets/import`.
pub async fn import_form(who: Signed) -> Response {
    import_page(&who, "dotenv", &Errors::default(), StatusCode::OK)
}

fn import_page(who: &Signed, format: &str, errors: &Errors, status: StatusCode) -> Response {
    let body = html! {
        p { "Paste a " code { ".env" } " file (" code { "NAME=value" } " lines) or JSON (an object of names to values, or an array of secrets as " code { "keyport secret list -o json" } " prints them). Every secret is created, or none; every problem is listed at once." }
        (errors.others(&["format", "content"]))
        form method="post" action="/secrets/import" {
            (errors.field("format", "Format", "", html! {
                select id="format" name="format" {
                    option value="dotenv" selected[format != "json"] { ".env (dotenv)" }
                    option value="json" selected[format == "json"] { "JSON" }
                }
            }))
            (errors.field("content", "Content", "Values are never shown again, here or anywhere; after an error, paste the file again.", html! {
                textarea id="content" name="content" rows="10" autocomplete="off" spellcheck="false" {}
            }))
            button type="submit" id="import-submit" { "Import" }
        }
    };
    (
        status,
        frame("Import secrets", Some(who), Nav::Secrets, None, body),
    )
        .into_response()
}

/// `POST /secrets/import`: all or nothing, every problem at once.
pub async fn import(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<ImportForm>,
) -> Result<Response, PageError> {
    let format = match form.format.as_str() {
        "json" => Format::Json,
        "dotenv" | "" => Format::Dotenv,
        _ => {
            let errors = Errors::one("format", "must be dotenv or json");
            return Ok(import_page(
                &who,
                "dotenv",
                &errors,
                StatusCode::BAD_REQUEST,
            ));
        }
    };
    let content = zeroize::Zeroizing::new(form.content.replace("\r\n", "\n"));
    let (specs, problems) = import::check(format, &content);
    let (actor, user) = (who.actor(), who.name.clone());
    match state
        .vault(move |v| v.import_secrets(&actor, &user, &specs, problems.clone()))
        .await
    {
        Ok(created) => Ok(axum::response::Redirect::to(&format!(
            "/secrets?done=imported&count={}",
            created.len()
        ))
        .into_response()),
        Err(e) => {
            let (status, errors) = Errors::from_call(e)?;
            Ok(import_page(&who, &form.format, &errors, status))
        }
    }
}
