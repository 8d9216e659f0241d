//! One-time sign-in links, the session cookie, and how a signed-in browser stops being one.

use crate::client::{Browser, link, session_cookie};
use crate::common::{self, Http, Sandbox};

#[test]
fn a_link_signs_in_once_and_only_by_post() {
    let sb = Sandbox::new();
    let config = sb.home().join("keyport.toml");
    std::fs::write(&config, "[web]\nlink_ttl = \"90s\"\n").unwrap();
    let config = config.display().to_string();
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", &config)]);
    let api = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let me = common::me().name;

    // `keyport web-login` with the CLI's saved credentials: the link alone on stdout.
    let out = sb.keyport().args(["web-login"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let url = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        url.starts_with(&format!("{}/login/kpl_", daemon.url)),
        "{url}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("within 1m 30s"),
        "{out:?}"
    );

    // GETs (a link scanner, a preview, the person) use nothing up.
    let mut browser = Browser::new(&daemon.url);
    for _ in 0..3 {
        let p = browser.get(url);
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(p.body.contains(&format!("Sign in as {me}?")), "{}", p.body);
        assert!(p.set_cookie.is_empty());
    }
    // The POST signs in, with the cookie's every attribute.
    let signed = browser.post(url, &[]);
    signed.redirects_to("/secrets");
    let cookie = &signed.set_cookie[0];
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("__Host-keyport=kps_"), "{cookie}");
    for want in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=43200",
    ] {
        assert!(attrs.contains(&want), "{cookie} lacks {want}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain"), "{cookie}");
    let token = session_cookie(&signed).unwrap();
    browser.cookie = Some(token.clone());
    assert_eq!(browser.get("/secrets").status, 200);
    // Used: refused, and the refusal signs nobody in.
    let mut again = Browser::new(&daemon.url);
    assert_eq!(again.get(url).status, 410);
    let p = again.post(url, &[]);
    assert_eq!(p.status, 410, "{}", p.body);
    assert!(p.set_cookie.is_empty());
    assert!(p.body.contains("keyport web-login"), "{}", p.body);
    // Expired: refused on GET and POST.
    let late = link(&api);
    let db = rusqlite::Connection::open(sb.db()).unwrap();
    db.execute("UPDATE web_links SET expires_at = expires_at - 90001", [])
        .unwrap();
    assert_eq!(again.get(&late).status, 410);
    assert_eq!(again.post(&late, &[]).status, 410);
    // Unknown.
    assert_eq!(again.post("/login/kpl_nothing", &[]).status, 410);
    again.cookie = Some("kps_forged".into());
    again.get("/secrets").redirects_to("/");

    // The database holds the session's hash, never the token; the link's path is in no log.
    let dump = common::dump(&sb.db());
    assert!(!dump.contains(&token) && !dump.contains(url.rsplit('/').next().unwrap()));
    let log = daemon.log();
    assert!(!log.contains(url.rsplit('/').next().unwrap()), "{log}");
    // Audited: the link and the sign-in.
    assert_eq!(api.audit_rows("web.link").len(), 2);
    assert_eq!(api.audit_rows("web.sign_in").len(), 1);

    // Sign-out ends the session itself: the old cookie no longer works.
    let out = browser.post("/logout", &[]);
    out.redirects_to("/");
    assert!(
        out.set_cookie[0].contains("Max-Age=0"),
        "{:?}",
        out.set_cookie
    );
    browser.get("/secrets").redirects_to("/");
    assert_eq!(api.audit_rows("web.sign_out").len(), 1);
}

#[test]
fn sessions_end_idle_at_their_age_and_with_their_user() {
    let sb = Sandbox::new();
    let config = sb.home().join("keyport.toml");
    std::fs::write(&config, "[web]\nidle_timeout = \"1m\"\n").unwrap();
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", &config.display().to_string())]);
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let r = admin.send(
        "POST",
        "users",
        &serde_json::json!({ "name": "bob", "os_user": common::me().name }),
    );
    assert_eq!(r.status, 201);
    let token = sb.ok(&["token", "create", "t", "--user", "bob"]);
    let bob_api = Http::new(&daemon.url, Some(token.trim()));
    let db = rusqlite::Connection::open(sb.db()).unwrap();
    let age = |column: &str, by_ms: i64| {
        db.execute(
            &format!("UPDATE web_sessions SET {column} = {column} - ?1"),
            [by_ms],
        )
        .unwrap();
    };
    let (second, minute) = (1000, 60_000);

    let mut bob = Browser::new(&daemon.url);
    bob.sign_in(&link(&bob_api));
    // A request counts as activity: 40 s idle, twice, is fine; 61 s is not (idle_timeout =
    // 1m, the shortest allowed).
    age("last_seen_at", 40 * second);
    assert_eq!(bob.get("/secrets").status, 200);
    age("last_seen_at", 40 * second);
    assert_eq!(bob.get("/secrets").status, 200);
    age("last_seen_at", 61 * second);
    bob.get("/secrets").redirects_to("/");

    // Signing in again ends the browser's previous session.
    bob.sign_in(&link(&bob_api));
    let before = bob.cookie.clone().unwrap();
    bob.sign_in(&link(&bob_api));
    assert_ne!(bob.cookie.as_deref(), Some(before.as_str()));
    let mut stale = Browser::new(&daemon.url);
    stale.cookie = Some(before);
    stale.get("/secrets").redirects_to("/");

    // Active all along, but past max_age (12h) since signing in.
    bob.sign_in(&link(&bob_api));
    age("expires_at", 12 * 60 * minute + 1);
    bob.get("/secrets").redirects_to("/");

    // A removed user's browser is signed out with them.
    bob.sign_in(&link(&bob_api));
    assert_eq!(bob.get("/key").status, 200);
    assert_eq!(admin.delete("users/bob").status, 204);
    bob.get("/key").redirects_to("/");
    let left: i64 = db
        .query_row("SELECT count(*) FROM web_sessions s JOIN users u ON u.id = s.user_id WHERE u.name = 'bob'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn web_login_inside_a_session() {
    let (sb, daemon, key, _api) = common::ssh_daemon(&[]);
    let me = common::me().name;
    let out = daemon
        .ssh(&me, &key)
        .arg("keyport web-login")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", daemon.log());
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut browser = Browser::new(&daemon.url);
    browser.sign_in(&url);
    let p = browser.get("/secrets");
    assert!(
        p.body
            .contains(&format!("Signed in as <strong>{me}</strong>"))
    );
    drop(sb);
}
