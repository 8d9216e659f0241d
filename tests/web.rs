//! The web pages of the real daemon over real HTTP (the real-browser test is
//! tests/web_browser.rs):
//!
//! - `pages`: every page for a user and for an admin (admin pages refused to users), the
//!   sign-in page when signed out, security headers, a label for every field; state changes
//!   refused unless they come from this origin (`Sec-Fetch-Site`, else an exact `Origin`).
//! - `signin`: a one-time link: GET shows whose it is and uses nothing up, POST signs in once,
//!   a used or expired link is refused; the cookie's attributes; sign-out, idle and absolute
//!   expiry and a removed user end the session; `keyport web-login` with CLI credentials
//!   and inside an SSH session.
//! - `secrets`: create, edit (write-only value), enable/disable, delete and import through the
//!   pages, with the API's validation shown next to the fields and the same audit events; a
//!   real `ssh` session sees each change; markup in a description is escaped.
//! - `accounts`: tokens (shown once), the key (regenerate), login keys, and users (admin).
//!
//! Every body a test received is scanned for the values it created.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "web/accounts.rs"]
mod accounts;
#[path = "web/client.rs"]
mod client;
mod common;
#[path = "web/pages.rs"]
mod pages;
#[path = "web/secrets.rs"]
mod secrets;
#[path = "web/signin.rs"]
mod signin;
