//! Every page, who may see it, its headers and labels; and the same-origin rule for changes.

use crate::client::{Browser, link};
use crate::common::{Http, Sandbox, me};
use serde_json::json;

/// A daemon, the admin's API client and bob's (a plain user).
pub fn setup() -> (Sandbox, crate::common::Daemon, Http, Http) {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let r = admin.send(
        "POST",
        "users",
        &json!({ "name": "bob", "os_user": me().name }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = sb.ok(&["token", "create", "t", "--user", "bob"]);
    let bob = Http::new(&daemon.url, Some(token.trim()));
    (sb, daemon, admin, bob)
}

const USER_PAGES: &[&str] = &[
    "/secrets",
    "/secrets/new",
    "/secrets/import",
    "/key",
    "/key/regenerate",
    "/login-keys",
    "/tokens",
    "/audit",
    "/audit?kind=secret&since=1h",
];
const ADMIN_PAGES: &[&str] = &["/users", "/workspaces", "/users/bob/remove"];

/// Every visible form control has an id that a `<label for>` names.
#[track_caller]
fn labelled(body: &str, page: &str) {
    for tag in ["<input ", "<textarea ", "<select "] {
        for control in body.split(tag).skip(1) {
            let control = &control[..control.find('>').unwrap()];
            if control.contains("type=\"hidden\"") {
                continue;
            }
            let id = control
                .split("id=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("{page}: a control without an id: {control}"));
            assert!(
                body.contains(&format!("<label for=\"{id}\">")),
                "{page}: no label for #{id}"
            );
        }
    }
}

#[test]
fn every_page_for_a_user_and_an_admin() {
    let (_sb, daemon, admin_api, bob_api) = setup();
    let out = Browser::new(&daemon.url);
    let home = out.get("/");
    assert_eq!(home.status, 200);
    assert!(home.body.contains("keyport web-login"), "{}", home.body);
    for page in USER_PAGES.iter().chain(ADMIN_PAGES) {
        out.get(page).redirects_to("/");
    }
    // A link is for the caller's own account: not even an admin gets one for bob.
    let r = admin_api.send("POST", "users/bob/web-login", &json!({}));
    assert_eq!(r.status, 403, "{}", r.body);
    let mut admin = Browser::new(&daemon.url);
    admin.sign_in(&link(&admin_api));
    admin.get("/").redirects_to("/secrets");
    for page in USER_PAGES.iter().chain(ADMIN_PAGES) {
        let p = admin.get(page);
        assert_eq!(p.status, 200, "{page}: {}", p.body);
        assert!(p.body.contains("<h1>"), "{page}");
        assert!(
            p.body.contains("href=\"/users\""),
            "{page}: admins see Users"
        );
        labelled(&p.body, page);
        let csp = p.header("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(p.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(p.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(p.header("cache-control"), Some("no-store"));
        assert!(!p.body.contains("<script>"), "{page}: inline script");
        assert!(!p.body.contains("style="), "{page}: inline style");
    }
    let mut bob = Browser::new(&daemon.url);
    bob.sign_in(&link(&bob_api));
    for page in USER_PAGES {
        let p = bob.get(page);
        assert_eq!(p.status, 200, "{page}: {}", p.body);
        assert!(
            p.body.contains("Signed in as <strong>bob</strong>"),
            "{page}"
        );
        assert!(
            !p.body.contains("href=\"/users\""),
            "{page}: Users is for admins"
        );
    }
    for page in ADMIN_PAGES {
        assert_eq!(bob.get(page).status, 403, "{page}");
    }
    // bob cannot add a user either, even by posting the form.
    let p = bob.post("/users", &[("user", "mallory")]);
    assert_eq!(p.status, 403);
    assert_eq!(admin_api.get("users/mallory").status, 404);
    // The static files, and an unknown page.
    let css = out.get("/static/keyport.css");
    assert_eq!(
        (css.status, css.header("content-type")),
        (200, Some("text/css"))
    );
    assert_eq!(out.get("/static/keyport.js").status, 200);
    assert_eq!(admin.get("/secrets/no-such/delete").status, 404);
}

#[test]
fn changes_only_from_this_origin() {
    let (_sb, daemon, _admin_api, bob_api) = setup();
    let mut bob = Browser::new(&daemon.url);
    // The sign-in POST itself is a change: from another site it is refused, and the link
    // stays good.
    let url = link(&bob_api);
    let p = bob.post_with(&url, &[], &[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(p.status, 403);
    assert!(p.set_cookie.is_empty());
    bob.sign_in(&url);
    let create = [
        ("name", "tok"),
        ("value", "origin-canary-1"),
        ("env", "TOK"),
    ];
    let origin = daemon.url.clone();
    let refused: &[&[(&str, &str)]] = &[
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site")],
        &[("Sec-Fetch-Site", "none")],
        // Both headers: Sec-Fetch-Site decides.
        &[("Sec-Fetch-Site", "cross-site"), ("Origin", &origin)],
        &[("Origin", "http://evil.example")],
        &[("Origin", "null")],
        &[],
    ];
    for headers in refused {
        let p = bob.post_with("/secrets", &create, headers);
        assert_eq!(p.status, 403, "{headers:?}: {}", p.body);
        assert!(p.body.contains("cross-site"), "{}", p.body);
        assert_eq!(
            bob_api.get("users/me/secrets/tok").status,
            404,
            "{headers:?}"
        );
    }
    // Sign-out is a change too.
    let p = bob.post_with("/logout", &[], &[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(p.status, 403);
    assert_eq!(bob.get("/secrets").status, 200, "still signed in");
    // A client without Fetch Metadata that sends the exact Origin (browsers that lack the
    // header send `Origin: null` from these no-referrer pages, refused above).
    let p = bob.post_with("/secrets", &create, &[("Origin", &origin)]);
    p.redirects_to("/secrets?done=created&name=tok");
    assert_eq!(bob_api.get("users/me/secrets/tok").status, 200);
    bob.assert_never_returned("origin-canary-1");
}
