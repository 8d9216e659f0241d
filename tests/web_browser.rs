//! The web pages in a real browser: Debian's Chromium, headless, driven over W3C WebDriver by
//! its `chromedriver` (tests/common/webdriver.rs), against the real binary, with what the pages
//! set checked in real OpenSSH sessions.
//!
//! - `with_javascript`: sign in with a `keyport web-login` link; create a secret on
//!   `/secrets/new` and a new `ssh` session gets its value; its edit page never shows the value
//!   (the field is empty), a new value typed there reaches the next session; `/key` shows the
//!   key the API gives and its copy button copies it; deleted, the sessions no longer get the
//!   secret; signed out, `/secrets` sends the browser back to the sign-in help.
//! - `without_javascript`: the same create, edit and delete with JavaScript switched off, plus
//!   a field error, an edit that keeps the value, disable and enable, `/secrets` 320 px wide,
//!   and `/key` whose copy button is hidden or does nothing.
//!
//! Values are canaries: no page source or text the browser read, no daemon log line and no
//! byte of the database ever holds one. Screenshots go to `target/tmp/web/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};

use common::{Daemon, Sandbox};
use webdriver::Browser;

/// The secret the pages create, and the variable the sessions get it in.
const NAME: &str = "web-token";
const ENV: &str = "WEB_TOKEN";
const ROW: &str = "tr#secret-web-token";

#[test]
fn with_javascript() {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    let user = common::me().name;
    let first = format!("web-canary-{}-first", std::process::id());
    let second = format!("web-canary-{}-second", std::process::id());
    let canaries = [first.as_str(), second.as_str()];
    let b = Browser::start();

    sign_in(&sb, &daemon, &b, &user, &canaries);
    // The browser holds its sign-in in a cookie scripts cannot read.
    let cookies = b.cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("__Host-")),
        "a __Host- session cookie: {cookies:?}"
    );
    assert!(
        cookies.iter().all(|c| c["httpOnly"] == true),
        "every cookie HttpOnly: {cookies:?}"
    );

    create(&b, &first, "token", &canaries);
    assert_eq!(session_value(&daemon, &user, &key), first);
    b.screenshot(&screenshot("secrets.png"));

    edit_value(&b, &second, &canaries);
    assert_eq!(session_value(&daemon, &user, &key), second);

    // The key page shows the key the API gives, and its copy button (JavaScript's) copies it.
    let expected = api.get("users/me/key").json();
    b.goto(&format!("{}/key", daemon.url));
    scan(&b, &canaries);
    b.screenshot(&screenshot("key.png"));
    assert_eq!(
        b.text("pre#public-key").trim(),
        expected["public_key"].as_str().unwrap().trim()
    );
    let fingerprint = b.text("code#fingerprint");
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    assert_eq!(
        fingerprint.trim(),
        expected["fingerprint"].as_str().unwrap()
    );
    assert!(b.exists("a#regenerate"), "{}", b.source());
    assert!(
        b.displayed("button#copy"),
        "with JavaScript the copy button shows"
    );
    b.grant("clipboard-read");
    b.grant("clipboard-write");
    b.click("button#copy");
    let copied = b.execute_async(
        "const done = arguments[arguments.length - 1];
         navigator.clipboard.readText().then(done, e => done('refused: ' + e));",
    );
    assert_eq!(
        copied.as_str().unwrap().trim(),
        expected["public_key"].as_str().unwrap().trim(),
        "the clipboard holds the public key"
    );

    b.goto(&format!("{}/secrets", daemon.url));
    delete(&b, &canaries);
    assert_eq!(session_value(&daemon, &user, &key), "");

    b.click("button#sign-out");
    // The sign-out answer (a redirect to the sign-in help) lands before the next navigation,
    // which would otherwise cancel the form's POST.
    b.wait_path("/");
    b.goto(&format!("{}/secrets", daemon.url));
    b.wait_path("/");
    assert!(!b.exists("table#secrets"), "signed out: {}", b.source());
    scan(&b, &canaries);

    assert_nowhere(&sb, &daemon, &b, &canaries);
}

#[test]
fn without_javascript() {
    let (sb, daemon, key, _api) = common::ssh_daemon(&[]);
    let user = common::me().name;
    let first = format!("web-canary-{}-nojs-first", std::process::id());
    let second = format!("web-canary-{}-nojs-second", std::process::id());
    let canaries = [first.as_str(), second.as_str()];
    let b = Browser::without_javascript();

    sign_in(&sb, &daemon, &b, &user, &canaries);

    // A field error comes back on the form, without the value typed.
    b.click("a#new-secret");
    b.wait_path("/secrets/new");
    b.type_into("#name", "not a name");
    b.type_into("#value", &first);
    b.click("button#create");
    b.find("p.error#name-error");
    scan(&b, &canaries);
    b.goto(&format!("{}/secrets", daemon.url));

    create(&b, &first, "password", &canaries);
    assert_eq!(session_value(&daemon, &user, &key), first);

    // An empty value field keeps the value; the description changes.
    b.click(&format!("{ROW} a.edit"));
    b.wait_path(&format!("/secrets/{NAME}/edit"));
    b.type_into("#description", "changed without javascript");
    b.click("button#save");
    b.wait_path("/secrets");
    scan(&b, &canaries);
    assert_eq!(
        b.text(&format!("{ROW} td.description")),
        "changed without javascript"
    );
    assert_eq!(session_value(&daemon, &user, &key), first);

    edit_value(&b, &second, &canaries);
    assert_eq!(session_value(&daemon, &user, &key), second);

    // Disabled, the sessions do not get it; enabled again, they do.
    let toggle = format!("{ROW} button.toggle");
    assert_eq!(b.text(&toggle), "Disable");
    b.click(&toggle);
    b.wait_path("/secrets");
    assert_eq!(b.text(&toggle), "Enable");
    assert_eq!(session_value(&daemon, &user, &key), "");
    b.click(&toggle);
    b.wait_path("/secrets");
    assert_eq!(b.text(&toggle), "Disable");
    assert_eq!(session_value(&daemon, &user, &key), second);

    // A phone-wide window still gets the list.
    let (width, _) = b.set_window_size(320, 800);
    assert_eq!(width, 320);
    b.goto(&format!("{}/secrets", daemon.url));
    b.find("table#secrets");
    assert!(b.displayed(&format!("{ROW} td.name")), "{}", b.source());
    // Nothing sticks out past the window's right edge: no sideways scrolling to read a row.
    for css in ["table#secrets", ROW, "header nav", "p.actions"] {
        let (x, width) = b.rect(css);
        assert!(x + width <= 320.0, "{css} is {width} px wide at x = {x}");
    }
    scan(&b, &canaries);
    b.screenshot(&screenshot("secrets-320.png"));
    b.set_window_size(1024, 900);

    // The key page works from its HTML alone; the copy button needs JavaScript.
    b.goto(&format!("{}/key", daemon.url));
    scan(&b, &canaries);
    assert!(b.text("pre#public-key").starts_with("ssh-ed25519 "));
    // Without JavaScript the copy button stays hidden (the key is selectable text).
    assert!(b.exists("button#copy") && !b.displayed("button#copy"));

    b.goto(&format!("{}/secrets", daemon.url));
    delete(&b, &canaries);
    assert_eq!(session_value(&daemon, &user, &key), "");

    b.click("button#sign-out");
    // The sign-out answer (a redirect to the sign-in help) lands before the next navigation,
    // which would otherwise cancel the form's POST.
    b.wait_path("/");
    b.goto(&format!("{}/secrets", daemon.url));
    b.wait_path("/");
    assert!(!b.exists("table#secrets"), "signed out: {}", b.source());

    assert_nowhere(&sb, &daemon, &b, &canaries);
}

/// Signs `b` in as `user` with a fresh `keyport web-login` link; leaves it on `/secrets`.
fn sign_in(sb: &Sandbox, daemon: &Daemon, b: &Browser, user: &str, canaries: &[&str]) {
    let out = sb.ok(&["web-login"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line, the link: {out:?}");
    let link = lines[0].trim();
    assert!(
        link.starts_with(&format!("{}/login/", daemon.url)),
        "{link}"
    );
    b.goto(link);
    scan(b, canaries);
    let heading = b.text("h1");
    assert!(
        heading.contains(&format!("Sign in as {user}?")),
        "{heading}"
    );
    b.click("button#sign-in");
    b.wait_path("/secrets");
    b.find("nav");
    b.find("button#sign-out");
    // The link works once.
    b.goto(link);
    assert!(!b.exists("button#sign-in"), "a used link: {}", b.source());
    b.goto(&format!("{}/secrets", daemon.url));
    b.find("table#secrets");
    scan(b, canaries);
}

/// From `/secrets`, creates the secret with `value` and `kind` through the new-secret form.
fn create(b: &Browser, value: &str, kind: &str, canaries: &[&str]) {
    b.click("a#new-secret");
    b.wait_path("/secrets/new");
    scan(b, canaries);
    b.type_into("#name", NAME);
    b.type_into("#value", value);
    b.type_into("#env", ENV);
    b.type_into("#description", "set from a browser");
    b.select("#kind", kind);
    b.click("button#create");
    b.wait_path("/secrets");
    scan(b, canaries);
    assert!(!b.text("p#flash").is_empty());
    assert_eq!(b.text(&format!("{ROW} td.name")), NAME);
    assert_eq!(b.text(&format!("{ROW} td.env")), ENV);
    assert_eq!(b.text(&format!("{ROW} td.kind")).to_lowercase(), kind);
    assert_eq!(
        b.text(&format!("{ROW} td.description")),
        "set from a browser"
    );
}

/// From `/secrets`, gives the secret `value` on its edit page, whose value field starts empty.
fn edit_value(b: &Browser, value: &str, canaries: &[&str]) {
    b.click(&format!("{ROW} a.edit"));
    b.wait_path(&format!("/secrets/{NAME}/edit"));
    scan(b, canaries);
    assert_eq!(b.property("#value", "value"), "", "a value is never shown");
    assert_eq!(b.property("#env", "value"), ENV);
    b.type_into("#value", value);
    b.click("button#save");
    b.wait_path("/secrets");
    scan(b, canaries);
}

/// From `/secrets`, deletes the secret through its confirmation page.
fn delete(b: &Browser, canaries: &[&str]) {
    b.click(&format!("{ROW} a.delete"));
    b.wait_path(&format!("/secrets/{NAME}/delete"));
    scan(b, canaries);
    b.click("button#delete");
    b.wait_path("/secrets");
    scan(b, canaries);
    assert!(!b.exists(ROW), "deleted: {}", b.source());
}

/// What a new OpenSSH session of `user` has in `$WEB_TOKEN`.
fn session_value(daemon: &Daemon, user: &str, key: &Path) -> String {
    let out = daemon
        .ssh(user, key)
        .arg(format!("printf %s \"${ENV}\""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Reads the current page's source, failing if it holds any of `values`.
fn scan(b: &Browser, values: &[&str]) {
    let source = b.source();
    for value in values {
        assert!(
            !source.contains(value),
            "{} shows {value}:\n{source}",
            b.current_url()
        );
    }
}

/// No page the browser read, no line the daemon logged, no byte of the database (and its
/// write-ahead log) holds `values`.
fn assert_nowhere(sb: &Sandbox, daemon: &Daemon, b: &Browser, values: &[&str]) {
    let log = daemon.log();
    let mut db = std::fs::read(sb.db()).unwrap();
    db.extend(std::fs::read(sb.db().with_extension("db-wal")).unwrap_or_default());
    for value in values {
        b.assert_never_showed(value);
        assert!(!log.contains(value), "the daemon logged {value}");
        assert!(
            !common::contains(&db, value.as_bytes()),
            "the database holds {value}"
        );
    }
}

/// Where screenshot `name` goes (`target/tmp/web/`); prints the path.
fn screenshot(name: &str) -> PathBuf {
    let dir = PathBuf::from(format!("{}/web", env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    println!("screenshot: {}", path.display());
    path
}
