//! JWT auth: keyport signs a short-lived JWT per user with its own key (`keyport admin
//! jwt-key`), so OpenBao's policies and its audit log see the user, not keyport.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::common::openbao::OpenBao;
use super::common::{Http, Sandbox};
use super::{Gateway, await_events, exec_as, gateway, ok, stdout_of};

const ALICE_VALUE: &str = "alice-gh-canary-2b9e61";
const BOB_VALUE: &str = "bob-gh-canary-c4d018";
const ALICE_REF: &str = "vault://secret/users/alice/gh#token";

/// Keyport user `name` (sessions as the OS user the tests run as), with a login key and an API
/// client of their own.
fn user(sb: &Sandbox, g: &Gateway, name: &str) -> (PathBuf, Http) {
    let key = sb.client_key(&format!("{name}_login"));
    let line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let r = g.api.send(
        "POST",
        "users",
        &json!({"name": name, "os_user": super::admin(), "login_keys": [line.trim()]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = sb.ok(&["token", "create", "t", "--user", name]);
    (key, Http::new(&g.daemon.url, Some(token.trim())))
}

fn create(api: &Http, name: &str, source: &str, env: &str) {
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": name, "source": source, "env": env}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn jwt_reads_are_the_users_in_openbao_and_bob_cannot_read_alices_path() {
    let sb = Sandbox::new();
    let mut bao = OpenBao::start(&sb);
    let audit = sb.dir.path().join("openbao-audit.log");
    bao.enable_audit_file(&audit);
    let config = format!(
        "[sources.vault]\naddress = \"{}\"\nauth = \"jwt\"\njwt_role = \"keyport\"\n\
         jwt_audience = \"vault\"\njwt_ttl = \"60s\"\nkv_ttl = \"0s\"\n",
        bao.addr()
    );
    let g = gateway(&sb, "keyport", &config, &[]);

    // keyport's signing key: made on first use, the same ever after, a P-256 SPKI PEM.
    let pem = ok(&sb, &["admin", "jwt-key"]);
    assert!(
        pem.starts_with("-----BEGIN PUBLIC KEY-----\n")
            && pem.trim_end().ends_with("-----END PUBLIC KEY-----"),
        "{pem}"
    );
    assert_eq!(ok(&sb, &["admin", "jwt-key"]), pem, "one key");
    assert!(
        !super::common::dump(&sb.db()).contains("PRIVATE KEY"),
        "the private key is sealed"
    );
    let auth = bao.enable_jwt(&pem, "keyport", "vault");
    // Only tokens keyport issued: `iss` bound to keyport's default issuer.
    bao.root(
        "POST",
        "auth/jwt/config",
        Some(json!({"jwt_validation_pubkeys": [pem], "bound_issuer": "keyport"})),
    );
    bao.kv_put("users/alice/gh", &[("token", ALICE_VALUE)]);
    bao.kv_put("users/bob/gh", &[("token", BOB_VALUE)]);

    let (alice_key, alice) = user(&sb, &g, "alice");
    let (bob_key, bob) = user(&sb, &g, "bob");
    create(&alice, "gh", ALICE_REF, "GH_TOKEN");
    create(&bob, "own", "vault://secret/users/bob/gh#token", "OWN");
    create(&bob, "stolen", ALICE_REF, "STOLEN");

    let out = exec_as(&g.daemon, "alice", &alice_key, "printf %s \"$GH_TOKEN\"");
    assert_eq!(stdout_of(&out), ALICE_VALUE);
    let out = exec_as(
        &g.daemon,
        "bob",
        &bob_key,
        "printf '%s|%s' \"$OWN\" \"${STOLEN-unset}\"",
    );
    assert_eq!(
        stdout_of(&out),
        format!("{BOB_VALUE}|unset"),
        "bob reads his own, not alice's"
    );

    // keyport's audit: bob's try failed, with OpenBao's refusal.
    let failed = await_events(&g.api, "source.failed", "stolen", 1, Duration::from_secs(5));
    let detail = &failed[0]["detail"];
    assert_eq!(failed[0]["user_name"], "bob", "{detail}");
    assert_eq!(detail["reference"], ALICE_REF, "{detail}");
    assert_eq!(detail["outcome"], "failure", "{detail}");
    let error = detail["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        error.contains("403") || error.contains("permission denied"),
        "{detail}"
    );
    let resolved = await_events(&g.api, "source.resolved", "gh", 1, Duration::from_secs(5));
    assert_eq!(resolved[0]["user_name"], "alice");

    // OpenBao's audit log: every read of alice's path is by a JWT user — alice's allowed,
    // bob's denied — and none by keyport itself.
    let lines = bao.audit_lines();
    let on_alices: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["request"]["path"] == "secret/data/users/alice/gh"
                && l["request"]["operation"] == "read"
        })
        .collect();
    assert!(
        !on_alices.is_empty(),
        "no audited read of alice's path: {lines:#?}"
    );
    for l in &on_alices {
        let who = l["auth"]["metadata"]["user"].as_str().unwrap_or_default();
        assert!(who == "alice" || who == "bob", "a read not by a user: {l}");
        assert_eq!(l["auth"]["display_name"], format!("jwt-{who}"), "{l}");
    }
    let by = |who: &str, allowed: bool| {
        on_alices.iter().any(|l| {
            l["auth"]["metadata"]["user"] == who
                && l["auth"]["policy_results"]["allowed"] == allowed
        })
    };
    assert!(by("alice", true), "alice's read, allowed: {on_alices:#?}");
    assert!(by("bob", false), "bob's read, denied: {on_alices:#?}");
    assert!(!by("bob", true), "bob was let in: {on_alices:#?}");
    let logins: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "response" && l["request"]["path"] == "auth/jwt/login")
        .collect();
    assert!(
        logins
            .iter()
            .any(|l| l["auth"]["metadata"]["user"] == "alice"
                && l["auth"]["metadata"]["role"] == "keyport"),
        "{logins:#?}"
    );
    // Alice's entity alias on the JWT mount is named after her.
    let alice_login = logins
        .iter()
        .find(|l| l["auth"]["metadata"]["user"] == "alice")
        .unwrap();
    let entity_id = alice_login["auth"]["entity_id"].as_str().unwrap();
    let entity = bao.root("GET", &format!("identity/entity/id/{entity_id}"), None);
    assert!(
        entity["data"]["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "alice" && a["mount_accessor"] == auth.accessor.as_str()),
        "{entity}"
    );
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains(ALICE_VALUE) && !raw.contains(BOB_VALUE));
}
