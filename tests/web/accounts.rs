//! Tokens (shown once), the key page, login keys, and the admins' users page.

use crate::client::{Browser, link};
use crate::common::{self, Http};
use crate::pages::setup;

#[test]
fn tokens_key_login_keys_and_users() {
    let (sb, daemon, admin_api, bob_api) = setup();
    let mut bob = Browser::new(&daemon.url);
    bob.sign_in(&link(&bob_api));

    // A token: on the answer to its POST only; it works; revoked, it does not.
    let p = bob.post("/tokens", &[("token", "laptop")]);
    assert_eq!(p.status, 201, "{}", p.body);
    let token = p
        .body
        .split("<pre id=\"new-token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    assert!(token.starts_with("kpt_"), "{token}");
    let laptop = Http::new(&daemon.url, Some(&token));
    assert_eq!(laptop.get("users/me").json()["name"], "bob");
    let list = bob.get("/tokens");
    assert!(list.body.contains("id=\"token-laptop\"") && !list.body.contains(&token));
    let p = bob.post("/tokens", &[("token", "bad name")]);
    assert_eq!(p.status, 400);
    assert!(p.body.contains("id=\"token-error\""), "{}", p.body);
    let p = bob.post("/tokens", &[("token", "laptop")]);
    assert_eq!(p.status, 409, "{}", p.body);
    bob.post("/tokens/laptop/revoke", &[])
        .redirects_to("/tokens?done=revoked");
    assert_eq!(laptop.get("users/me").status, 401);
    let made = bob_api.audit_rows("token.create");
    assert_eq!(
        made.iter()
            .filter(|e| e["detail"]["token"] == "laptop")
            .count(),
        1
    );

    // The key: the API's public key and fingerprint; regenerated on confirmation only.
    let key = bob_api.get("users/me/key").json();
    let page = bob.get("/key");
    let shown = page
        .body
        .split("<pre id=\"public-key\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert_eq!(shown, key["public_key"].as_str().unwrap());
    assert!(page.body.contains(key["fingerprint"].as_str().unwrap()));
    for help in ["GitHub", "GitLab", "authorized_keys"] {
        assert!(page.body.contains(help), "{help}");
    }
    assert!(!page.body.contains("PRIVATE KEY"));
    assert_eq!(
        bob_api.get("users/me/key").json(),
        key,
        "the confirmation page changed nothing"
    );
    bob.get("/key/regenerate");
    bob.post("/key/regenerate", &[("algorithm", "ecdsa-p256")])
        .redirects_to("/key?done=regenerated");
    let new = bob_api.get("users/me/key").json();
    assert_ne!(new["fingerprint"], key["fingerprint"]);
    assert_eq!(new["algorithm"], "ecdsa-p256");
    assert!(
        bob.get("/key")
            .body
            .contains(new["fingerprint"].as_str().unwrap())
    );

    // Login keys: added and removed, with the API's rule for a bad line.
    let client = sb.client_key("bob_web");
    let line = std::fs::read_to_string(client.with_extension("pub")).unwrap();
    let p = bob.post("/login-keys", &[("public_key", "ssh-ed25519 not-base64")]);
    assert_eq!(p.status, 400);
    assert!(p.body.contains("id=\"login-key-error\""), "{}", p.body);
    bob.post("/login-keys", &[("public_key", &line)])
        .redirects_to("/login-keys?done=added");
    let keys = bob_api.get("users/me/login-keys").json();
    let fingerprint = keys[0]["fingerprint"].as_str().unwrap().to_string();
    assert!(bob.get("/login-keys").body.contains(&fingerprint));
    bob.post("/login-keys/remove", &[("fingerprint", &fingerprint)])
        .redirects_to("/login-keys?done=removed");
    assert_eq!(
        bob_api.get("users/me/login-keys").json(),
        serde_json::json!([])
    );

    // Users (admin): add with the API's rules, remove after confirmation.
    let mut admin = Browser::new(&daemon.url);
    admin.sign_in(&link(&admin_api));
    let p = admin.post(
        "/users",
        &[("user", "-carol"), ("os_user", &common::me().name)],
    );
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("id=\"user-error\""), "{}", p.body);
    admin
        .post(
            "/users",
            &[
                ("user", "carol"),
                ("os_user", &common::me().name),
                ("login_keys", &line),
            ],
        )
        .redirects_to("/users?done=added");
    assert_eq!(admin_api.get("users/carol").status, 200);
    assert!(admin.get("/users").body.contains("id=\"user-carol\""));
    assert_eq!(
        admin
            .post(
                "/users",
                &[("user", "carol"), ("os_user", &common::me().name)]
            )
            .status,
        409
    );
    admin.get("/users/carol/remove");
    assert_eq!(admin_api.get("users/carol").status, 200);
    admin
        .post("/users/carol/remove", &[])
        .redirects_to("/users?done=removed");
    assert_eq!(admin_api.get("users/carol").status, 404);
    // The audit page: bob's own events only; an admin may look at anyone's.
    let audit = bob.get("/audit?kind=token");
    assert!(audit.body.contains("token.create") && audit.body.contains("token.revoke"));
    let rows = audit.body.split("<tbody>").nth(1).unwrap();
    assert!(
        !rows.contains("secret.") && !rows.contains("key.regenerate"),
        "{rows}"
    );
    assert!(
        !bob.get("/audit").body.contains("carol"),
        "bob sees only his own"
    );
    assert_eq!(
        bob.get(&format!("/audit?user={}", common::me().name))
            .status,
        403
    );
    assert_eq!(bob.get("/audit?user=*").status, 403);
    assert_eq!(bob.get("/audit?user=bob").status, 200);
    let p = admin.get("/audit?user=bob&kind=key");
    assert!(p.body.contains("key.regenerate"), "{}", p.body);
    assert_eq!(admin.get("/audit?since=yesterday-ish").status, 400);
    bob.assert_never_returned("PRIVATE KEY");
}
