//! Creating and editing a secret. The value field is write-only: it is always empty, on the
//! edit page and after an error alike, and an empty value on the edit page keeps the stored
//! one. The input goes through the API's own conversions (`SecretInput::into_spec`,
//! `own_rotate_after`, `parse_source`), so the rules and the field names are the same.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::WebState;
use super::page::{Errors, Nav, PageError, WebForm, WebPath, frame, text, value_area};
use super::secrets::done;
use super::signin::Signed;
use crate::secrets::lifecycle::{KINDS, SecretKind};
use crate::secrets::{SecretInput, SecretMeta, SecretPatch, own_rotate_after, parse_source};
use keyport_keys::SecretBytes;

/// The fields of both forms (a checkbox is present only when ticked).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SecretForm {
    name: String,
    value: zeroize::Zeroizing<String>,
    description: String,
    env: String,
    file: String,
    kind: String,
    rotate_after: String,
    source: String,
    required: Option<String>,
}

/// The fields the forms have, for errors that name another one.
const FIELDS: &[&str] = &[
    "name",
    "value",
    "description",
    "env",
    "file",
    "kind",
    "rotate_after",
    "source",
    "required",
];

fn some(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A browser sends a textarea's line breaks as CRLF; values keep the LF the user typed.
fn typed_value(form: &SecretForm) -> Option<String> {
    (!form.value.is_empty()).then(|| form.value.replace("\r\n", "\n"))
}

fn kind(text: &str) -> Result<Option<SecretKind>, Errors> {
    match text {
        "" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|rule: String| Errors::one("kind", rule)),
    }
}

/// The form's fields; `meta` is the secret edited (`None`: a new one).
fn fields(form: &SecretForm, meta: Option<&SecretMeta>, errors: &Errors) -> Markup {
    let value_help = if meta.is_some_and(|m| m.source.is_none()) {
        "Write-only: the stored value is never shown. Leave empty to keep it."
    } else {
        "Write-only: never shown again, not even here. 1 byte to 64 KiB."
    };
    html! {
        @if meta.is_none() {
            (errors.field("name", "Name", "Letters, digits, . _ - ; up to 64; unique.", text("name", &form.name)))
        }
        (errors.field("value", "Value", value_help, value_area("value", "")))
        (errors.field("env", "Environment variable", "Injected as this variable into every new session; empty for none.", text("env", &form.env)))
        (errors.field("file", "File", "Written to this path (~/… or absolute) for every new session; empty for none.", text("file", &form.file)))
        (errors.field("description", "Description", "", text("description", &form.description)))
        (errors.field("kind", "Kind", "Decides when it is due for rotation and whether pty output masks it.", html! {
            select id="kind" name="kind" aria-describedby="kind-help kind-error" {
                @for k in KINDS {
                    option value=(k.as_str()) selected[form.kind == k.as_str()] { (k.as_str()) }
                }
            }
        }))
        (errors.field("rotate_after", "Rotate after", "Its own rotation age (90d, 12h, never); empty for its kind's.", text("rotate_after", &form.rotate_after)))
        (errors.field("source", "Source", "Instead of a value: a reference resolved at each session start (vault://…, vault-dyn://…, exec://…).", text("source", &form.source)))
        (errors.field("required", "Required", "Refuse sessions when its source cannot give a value.", html! {
            input type="checkbox" id="required" name="required" value="on" checked[form.required.is_some()];
        }))
    }
}

fn form_page(
    who: &Signed,
    form: &SecretForm,
    meta: Option<&SecretMeta>,
    errors: &Errors,
    status: StatusCode,
) -> Response {
    let (title, action, button, id) = match meta {
        None => (
            "New secret".to_string(),
            "/secrets".to_string(),
            "Create secret",
            "create",
        ),
        Some(m) => (
            format!("Edit {}", m.name),
            format!("/secrets/{}/edit", m.name),
            "Save",
            "save",
        ),
    };
    let body = html! {
        (errors.others(FIELDS))
        form method="post" action=(action) {
            (fields(form, meta, errors))
            button type="submit" id=(id) { (button) }
            " "
            a href="/secrets" { "Cancel" }
        }
    };
    (status, frame(&title, Some(who), Nav::Secrets, None, body)).into_response()
}

/// `GET /secrets/new`.
pub async fn new(who: Signed) -> Response {
    let form = SecretForm {
        kind: SecretKind::default().as_str().into(),
        ..Default::default()
    };
    form_page(&who, &form, None, &Errors::default(), StatusCode::OK)
}

/// `POST /secrets`: create, through the API's own conversion of its input.
pub async fn create(
    State(state): State<WebState>,
    who: Signed,
    WebForm(form): WebForm<SecretForm>,
) -> Result<Response, PageError> {
    let input = kind(&form.kind).map(|kind| SecretInput {
        name: form.name.trim().to_string(),
        value: typed_value(&form),
        value_base64: None,
        description: form.description.trim().to_string(),
        env: some(&form.env),
        file: some(&form.file),
        enabled: None,
        kind,
        rotate_after: some(&form.rotate_after),
        mask: None,
        source: some(&form.source),
        required: Some(form.required.is_some()),
    });
    let spec = match input.and_then(|i| i.into_spec().map_err(|v| Errors(vec![v]))) {
        Ok(spec) => spec,
        Err(errors) => {
            return Ok(form_page(
                &who,
                &form,
                None,
                &errors,
                StatusCode::BAD_REQUEST,
            ));
        }
    };
    let (actor, user) = (who.actor(), who.name.clone());
    match state
        .vault(move |v| v.create_secret(&actor, &user, &spec))
        .await
    {
        Ok(meta) => Ok(done("created", &meta.name)),
        Err(e) => {
            let (status, errors) = Errors::from_call(e)?;
            Ok(form_page(&who, &form, None, &errors, status))
        }
    }
}

/// The form as the stored secret fills it (never its value).
fn filled(meta: &SecretMeta) -> SecretForm {
    SecretForm {
        name: meta.name.clone(),
        value: Default::default(),
        description: meta.description.clone(),
        env: meta.env.clone().unwrap_or_default(),
        file: meta.file.clone().unwrap_or_default(),
        kind: meta.kind.as_str().into(),
        rotate_after: meta.rotate_after.clone().unwrap_or_default(),
        source: meta.source.clone().unwrap_or_default(),
        required: meta.required.then(|| "on".into()),
    }
}

/// `GET /secrets/{name}`.
pub async fn edit(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
) -> Result<Response, PageError> {
    let user = who.name.clone();
    let meta = state.vault(move |v| v.secret(&user, &name)).await?;
    Ok(form_page(
        &who,
        &filled(&meta),
        Some(&meta),
        &Errors::default(),
        StatusCode::OK,
    ))
}

/// What the edit form changes: only the fields that differ from the stored secret, so the
/// audit event names what was changed, as a PATCH through the API would.
fn patch(form: &SecretForm, meta: &SecretMeta) -> Result<SecretPatch, Errors> {
    let stored = filled(meta);
    let changed = |new: &str, old: &str| (new.trim() != old.trim()).then(|| new.trim().to_string());
    let value = typed_value(form).map(|v| SecretBytes::new(v.into_bytes()));
    let source = match (some(&form.source), &meta.source) {
        (Some(new), old) if old.as_deref() != Some(new.as_str()) => {
            Some(parse_source(&new).map_err(|v| Errors(vec![v]))?)
        }
        (None, Some(_)) if value.is_none() => {
            return Err(Errors::one(
                "value",
                "give a value to store instead of the source (or keep the source)",
            ));
        }
        _ => None,
    };
    let rotate_after = match changed(&form.rotate_after, &stored.rotate_after) {
        None => None,
        Some(text) => Some(own_rotate_after(Some(&text)).map_err(|v| Errors(vec![v]))?),
    };
    let kind = kind(&form.kind)?.filter(|k| *k != meta.kind);
    let required = Some(form.required.is_some()).filter(|r| *r != meta.required);
    Ok(SecretPatch {
        value,
        description: changed(&form.description, &stored.description),
        env: changed(&form.env, &stored.env),
        file: changed(&form.file, &stored.file),
        enabled: None,
        kind,
        rotate_after,
        mask: None,
        source,
        required,
    })
}

/// `POST /secrets/{name}`: save what the form changed.
pub async fn update(
    State(state): State<WebState>,
    who: Signed,
    WebPath(name): WebPath<String>,
    WebForm(form): WebForm<SecretForm>,
) -> Result<Response, PageError> {
    let (user, secret) = (who.name.clone(), name.clone());
    let meta = state.vault(move |v| v.secret(&user, &secret)).await?;
    let patch = match patch(&form, &meta) {
        Ok(patch) => patch,
        Err(errors) => {
            return Ok(form_page(
                &who,
                &form,
                Some(&meta),
                &errors,
                StatusCode::BAD_REQUEST,
            ));
        }
    };
    if patch.is_empty() {
        return Ok(done("unchanged", &name));
    }
    let (actor, user) = (who.actor(), who.name.clone());
    match state
        .vault(move |v| v.update_secret(&actor, &user, &name, &patch))
        .await
    {
        Ok(meta) => Ok(done("updated", &meta.name)),
        Err(e) => {
            let (status, errors) = Errors::from_call(e)?;
            Ok(form_page(&who, &form, Some(&meta), &errors, status))
        }
    }
}
