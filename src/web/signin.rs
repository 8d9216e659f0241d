//! Signing in and out, and who is signed in. A one-time link (`keyport web-login`) shows
//! "Sign in as alice?" on GET — link scanners fetch GETs — and is used up only by the POST of
//! that page, which sets the session cookie: `__Host-keyport`, `Secure`, `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, holding a random token the database knows only hashed.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use zeroize::Zeroizing;

use super::WebState;
use super::page::{Nav, PageError, WebPath, frame};
use crate::vault::WebSignIn;

/// The session cookie's name: `__Host-` makes browsers insist on Secure, `Path=/` and no
/// Domain, so no other host or path can set or read it.
pub const COOKIE: &str = "__Host-keyport";

/// The cookie's attributes: sent over TLS (or loopback) only, never to scripts, never with a
/// request another site starts.
const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Strict";

/// The signed-in user of a request.
pub struct Signed {
    /// Their user name.
    pub name: String,
    /// Whether they are an admin.
    pub is_admin: bool,
    /// The session token from the cookie (to sign out).
    session: Zeroizing<String>,
}

impl Signed {
    /// The actor the audit log names.
    pub fn actor(&self) -> crate::vault::Actor {
        crate::vault::Actor::User(self.name.clone())
    }
}

/// The session token in the request's cookies, if any.
fn session_token(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| Zeroizing::new(value.to_string()))
        })
}

/// Not signed in: to the page that says how to.
pub struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/").into_response()
    }
}

/// The user signed in with the request's cookie, if it holds a session still good.
async fn signed(state: &WebState, headers: &HeaderMap) -> Result<Option<Signed>, PageError> {
    let Some(session) = session_token(headers) else {
        return Ok(None);
    };
    let idle = state.options.idle_timeout;
    let token = session.clone();
    let user = state.vault(move |v| v.web_user(&token, idle)).await?;
    Ok(user.map(|user| Signed {
        name: user.name,
        is_admin: user.is_admin,
        session,
    }))
}

impl FromRequestParts<WebState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        match signed(state, &parts.headers).await {
            Ok(Some(who)) => Ok(who),
            Ok(None) => Err(SignIn.into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// `/`: the secrets when signed in; otherwise how to sign in.
pub async fn home(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if signed(&state, &headers).await?.is_some() {
        return Ok(Redirect::to("/secrets").into_response());
    }
    let body = html! {
        p { "Sign in with a one-time link. In a keyport session (or anywhere the keyport CLI is logged in), run:" }
        pre { code { "keyport web-login" } }
        p { "and open the link it prints within " (humantime::format_duration(state.options.link_ttl)) ". Each link works once." }
    };
    Ok(frame("Sign in", None, Nav::None, None, body).into_response())
}

/// `GET /login/{token}`: whose link this is, and a button that signs in; uses nothing up.
pub async fn confirm(
    State(state): State<WebState>,
    WebPath(token): WebPath<String>,
) -> Result<Response, PageError> {
    let token = Zeroizing::new(token);
    let user = state
        .vault(move |v| v.web_link_user(&token))
        .await?
        .ok_or_else(gone)?;
    let body = html! {
        p { "This link signs this browser in to keyport as " strong { (user.name) } "." }
        form method="post" {
            button type="submit" id="sign-in" { "Sign in as " (user.name) }
        }
        p.help { "Not you, or not expecting this? Close the page: the link stops working on its own." }
    };
    let title = format!("Sign in as {}?", user.name);
    Ok(frame(&title, None, Nav::None, None, body).into_response())
}

fn gone() -> PageError {
    PageError::Gone(
        "This sign-in link was used already or ran out. Run keyport web-login for a new one."
            .into(),
    )
}

/// `POST /login/{token}`: uses the link up and signs the browser in, ending the session its
/// cookie held before, if any.
pub async fn sign_in(
    State(state): State<WebState>,
    headers: HeaderMap,
    WebPath(token): WebPath<String>,
) -> Result<Response, PageError> {
    let token = Zeroizing::new(token);
    let max_age = state.options.max_age;
    let replaced = session_token(&headers);
    let WebSignIn::SignedIn { session, .. } = state
        .vault(move |v| v.sign_in_web(&token, max_age, replaced.as_ref().map(|r| r.as_str())))
        .await?
    else {
        return Err(gone());
    };
    let cookie = format!(
        "{COOKIE}={}; {ATTRIBUTES}; Max-Age={}",
        session.as_str(),
        max_age.as_secs()
    );
    let mut response = Redirect::to("/secrets").into_response();
    let value = HeaderValue::from_str(&cookie).map_err(|_| PageError::Internal)?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// `POST /logout`: ends the session (it no longer works, whoever holds the cookie) and
/// clears the cookie.
pub async fn sign_out(State(state): State<WebState>, who: Signed) -> Result<Response, PageError> {
    let (name, session) = (who.name.clone(), who.session.clone());
    state
        .vault(move |v| v.sign_out_web(&name, &session))
        .await?;
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("{COOKIE}=; {ATTRIBUTES}; Max-Age=0"))
            .map_err(|_| PageError::Internal)?,
    );
    Ok(response)
}
