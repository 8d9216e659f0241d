//! The HTTP API of the real daemon over real HTTP: every route and the status codes it
//! answers with, PATCH semantics, all-or-nothing import, and who may touch what (another
//! user's secrets, key and tokens are 403 even for admins).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Http, Sandbox, me};
use serde_json::json;

/// A daemon, the admin's client, and bob (a plain user) with his own token.
fn setup() -> (Sandbox, common::Daemon, Http, Http) {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let created = admin.send(
        "POST",
        "users",
        &json!({ "name": "bob", "os_user": me().name }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let token = sb
        .ok(&["token", "create", "t", "--user", "bob"])
        .trim()
        .to_string();
    let bob = Http::new(&daemon.url, Some(&token));
    (sb, daemon, admin, bob)
}

fn fields(reply: &common::Reply) -> Vec<String> {
    reply.json()["validations"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|v| v["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn secrets_routes_answer_with_the_contracts_status_codes() {
    let (_sb, daemon, admin, _bob) = setup();
    let anon = Http::new(&daemon.url, None);
    let garbage = Http::new(&daemon.url, Some("kpt_not-a-real-token"));
    assert_eq!(anon.get("users/me/secrets").status, 401);
    assert_eq!(garbage.get("users/me/secrets").status, 401);
    let h = &admin;

    let created = h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "gh", "value": "ghp_1", "env": "GH_TOKEN"}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["enabled"], true);
    let binary = h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "blob", "value_base64": "AAEC/w==", "file": "~/.blob"}),
    );
    assert_eq!(binary.status, 201, "{}", binary.body);
    let listed = h.get(&format!("users/{}/secrets", me().name));
    assert_eq!(listed.status, 200);
    let names: Vec<_> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["blob", "gh"],
        "sorted by name; own name works like me"
    );
    assert_eq!(h.get("users/me/secrets/gh").status, 200);
    assert_eq!(h.get("users/me/secrets/nope").status, 404);

    // 400: each rule, named.
    for (body, field) in [
        (json!({"name": "-x", "value": "v"}), "name"),
        (json!({"name": "x", "value": "v", "env": "PATH"}), "env"),
        (
            json!({"name": "x", "value": "v", "file": "rel/path"}),
            "file",
        ),
        (json!({"name": "x", "value": ""}), "value"),
        (json!({"name": "x"}), "value"),
        (
            json!({"name": "x", "value": "v", "value_base64": "dg=="}),
            "value",
        ),
        (json!({"name": "x", "value_base64": "***"}), "value_base64"),
        (
            json!({"name": "x", "value": "v", "enabled": true}),
            "enabled",
        ),
        (
            json!({"name": "x", "value": "a\u{0}b", "env": "NUL_ENV"}),
            "value",
        ),
    ] {
        let r = h.send("POST", "users/me/secrets", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(fields(&r), [field], "{body}: {}", r.body);
    }
    // 400 without validations: unknown field, wrong type, bad JSON.
    for body in [
        r#"{"name":"x","value":"v","valeu":1}"#,
        r#"{"name":"x","value":"v","enabled":"yes"}"#,
        "{",
    ] {
        let r = h.raw("POST", "users/me/secrets", Some(body.as_bytes()), None);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    assert_eq!(
        h.raw("POST", "users/me/secrets", Some(b"{}"), Some("text/plain"))
            .status,
        415
    );
    assert_eq!(h.oversized_post("users/me/secrets", 3 * 1024 * 1024), 413);
    assert_eq!(
        h.oversized_post("users/me/secrets:import", 64 * 1024 * 1024),
        413
    );

    // 409: each uniqueness rule, named.
    h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "npm", "value": "v", "file": "~/.npmrc"}),
    );
    for (body, field) in [
        (json!({"name": "gh", "value": "v"}), "name"),
        (json!({"name": "x", "value": "v", "env": "gh_token"}), "env"),
        (
            json!({"name": "x", "value": "v", "file": format!("{}/.npmrc", me().home)}),
            "file",
        ),
    ] {
        let r = h.send("POST", "users/me/secrets", &body);
        assert_eq!(r.status, 409, "{body}: {}", r.body);
        assert_eq!(fields(&r), [field]);
    }

    // PATCH: absent = unchanged, "" = clears, at least one field, checked after the update.
    let r = h.send(
        "PATCH",
        "users/me/secrets/gh",
        &json!({"description": "GitHub"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["env"], "GH_TOKEN");
    assert_eq!(r.json()["description"], "GitHub");
    // Clearing the last target keeps the secret, disabled (Coder's "stored, but not
    // injected"); asking for it enabled without a target is still refused.
    let r = h.send(
        "PATCH",
        "users/me/secrets/gh",
        &json!({"env": "", "enabled": true}),
    );
    assert_eq!(
        (r.status, fields(&r)),
        (400, vec!["enabled".to_string()]),
        "{}",
        r.body
    );
    let r = h.send("PATCH", "users/me/secrets/gh", &json!({"env": ""}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["enabled"], false, "{}", r.body);
    let r = h.send(
        "PATCH",
        "users/me/secrets/gh",
        &json!({"env": "GH_TOKEN", "enabled": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h.send(
        "PATCH",
        "users/me/secrets/gh",
        &json!({"env": "", "enabled": false, "description": ""}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["env"], serde_json::Value::Null);
    assert_eq!(r.json()["description"], "");
    let r = h.send("PATCH", "users/me/secrets/gh", &json!({}));
    assert_eq!((r.status, fields(&r)), (400, vec!["body".to_string()]));
    let r = h.send("PATCH", "users/me/secrets/blob", &json!({"env": "BLOB"}));
    assert_eq!(
        (r.status, fields(&r)),
        (400, vec!["value".to_string()]),
        "binary value into env"
    );
    assert_eq!(
        h.send("PATCH", "users/me/secrets/nope", &json!({"enabled": false}))
            .status,
        404
    );
    let r = h.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"env": "GH_TOKEN2", "value": "v2"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // PATCH conflicts are 409 and named; "" clears a file; absent fields stay as they are.
    h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "other", "value": "v", "env": "OTHER", "file": "~/.other"}),
    );
    let r = h.send("PATCH", "users/me/secrets/npm", &json!({"env": "other"}));
    assert_eq!(
        (r.status, fields(&r)),
        (409, vec!["env".to_string()]),
        "{}",
        r.body
    );
    let r = h.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"file": "~/.other"}),
    );
    assert_eq!(
        (r.status, fields(&r)),
        (409, vec!["file".to_string()]),
        "{}",
        r.body
    );
    let r = h.send("PATCH", "users/me/secrets/npm", &json!({"file": ""}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["file"], serde_json::Value::Null);
    assert_eq!(r.json()["env"], "GH_TOKEN2", "absent env unchanged");
    assert_eq!(r.json()["enabled"], true, "absent enabled unchanged");
    let r = h.send("PATCH", "users/me/secrets/npm", &json!({"value": "v3"}));
    assert_eq!(r.json()["env"], "GH_TOKEN2");
    assert_eq!(r.json()["description"], "");

    // Values given with the wrong type are not echoed either, numbers included.
    let r = h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "pin", "value": 8675309}),
    );
    assert_eq!(r.status, 400);
    let r = h.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"value": 4096.5125, "enabled": "canary-as-bool"}),
    );
    assert_eq!(r.status, 400);
    for value in [
        "ghp_1",
        "AAEC/w==",
        "v2",
        "v3",
        "8675309",
        "4096.5125",
        "canary-as-bool",
    ] {
        h.assert_never_returned(value);
    }

    assert_eq!(h.delete("users/me/secrets/gh").status, 204);
    assert_eq!(h.delete("users/me/secrets/gh").status, 404);
    assert_eq!(h.get("users/me/secrets/..%2f..%2fetc").status, 404);
}

#[test]
fn import_is_all_or_nothing_and_reports_every_problem() {
    let (_sb, _daemon, h, _bob) = setup();
    h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "A", "value": "1", "env": "A"}),
    );
    h.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "b", "value": "1", "env": "B"}),
    );
    let conflicts = h.send(
        "POST",
        "users/me/secrets:import",
        &json!({"format": "dotenv", "content": "A=2\nNEW=3\nb=4\n"}),
    );
    assert_eq!(conflicts.status, 409, "{}", conflicts.body);
    let details: Vec<String> = conflicts.json()["validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("secret A:")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("secret b:")),
        "{details:?}"
    );
    assert_eq!(
        h.get("users/me/secrets/NEW").status,
        404,
        "nothing was created"
    );

    let bad = h.send(
        "POST",
        "users/me/secrets:import",
        &json!({"format": "dotenv", "content": "X=1\nPATH=2\nnot a line\nA=dup-of-existing\n"}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let all = bad.json()["validations"].to_string();
    assert_eq!(
        bad.json()["validations"].as_array().unwrap().len(),
        4,
        "{}",
        bad.body
    );
    assert!(
        all.contains("line 3: expected NAME=VALUE") && all.contains("secret PATH"),
        "{all}"
    );
    assert!(
        all.contains("secret A: a secret named A already exists"),
        "conflicts reported too: {all}"
    );
    assert_eq!(h.get("users/me/secrets/X").status, 404);

    // A name that is not a valid name (it may be a value's fragment) is never echoed.
    let r = h.send(
        "POST",
        "users/me/secrets:import",
        &json!({"format": "dotenv", "content": "MIIEvQ+frag/ment==tail=x\n"}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("name: line 1: must be") && !r.body.contains("MIIEvQ"),
        "{}",
        r.body
    );
    // A key repeated in a JSON object is reported, not silently dropped.
    let r = h.send(
        "POST",
        "users/me/secrets:import",
        &json!({"format": "json", "content": r#"{"K": "1", "K": "2"}"#}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("secret K: appears twice"), "{}", r.body);

    let ok = h.send(
        "POST",
        "users/me/secrets:import",
        &json!({"format": "json", "content": r#"{"C": "3", "D": "4"}"#}),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(ok.json().as_array().unwrap().len(), 2);
    let ok = h.send(
        "POST",
        "users/me/secrets:import",
        &json!({"format": "dotenv", "content": "export E=\"five\"\n"}),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(
        h.send(
            "POST",
            "users/me/secrets:import",
            &json!({"format": "yaml", "content": ""})
        )
        .status,
        400
    );
    assert_eq!(
        h.send(
            "POST",
            "users/me/secrets:import",
            &json!({"format": "dotenv", "content": "# empty\n"})
        )
        .status,
        400
    );
}

#[test]
fn another_users_secrets_key_and_tokens_are_forbidden_even_for_admins() {
    let (sb, _daemon, admin, bob) = setup();
    assert_eq!(
        bob.send(
            "POST",
            "users/me/secrets",
            &json!({"name": "b", "value": "bobs", "env": "B"})
        )
        .status,
        201
    );
    let root = me().name;
    let before = common::state::requests_leave(&sb);
    for (who, path) in [
        (&admin, "users/bob/secrets".to_string()),
        (&admin, "users/bob/secrets/b".to_string()),
        (&admin, "users/bob/key".to_string()),
        (&admin, "users/bob/tokens".to_string()),
        (&admin, "users/nobody/secrets".to_string()),
        (&bob, format!("users/{root}/secrets")),
        (&bob, format!("users/{root}/key")),
        (&bob, format!("users/{root}/login-keys")),
        (&bob, format!("users/{root}")),
        (&bob, "users".to_string()),
        (&bob, format!("audit?user={root}")),
    ] {
        let r = who.get(&path);
        assert_eq!(r.status, 403, "GET {path}: {}", r.body);
    }
    for (who, method, path, body) in [
        (
            &admin,
            "PATCH",
            "users/bob/secrets/b",
            json!({"enabled": false}),
        ),
        (
            &admin,
            "POST",
            "users/bob/secrets",
            json!({"name": "x", "value": "v"}),
        ),
        (&admin, "PUT", "users/bob/key", json!({})),
        (&admin, "POST", "users/bob/tokens", json!({"name": "mine"})),
        (&bob, "POST", "users", json!({"name": "eve"})),
    ] {
        let r = who.send(method, path, &body);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    assert_eq!(admin.delete("users/bob/secrets/b").status, 403);
    assert_eq!(bob.delete(&format!("users/{root}")).status, 403);
    // Login keys too: one added to bob's account would let its adder log in as bob.
    assert_eq!(admin.get("users/bob/login-keys").status, 403);
    let line = keyport_keys::KeyPair::generate(keyport_keys::KeyType::Ed25519, "x").unwrap();
    let r = admin.send(
        "POST",
        "users/bob/login-keys",
        &json!({"public_key": line.public_line().unwrap()}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Refused means refused: not a row of anyone's secrets, keys, tokens or login keys moved.
    let after = common::state::requests_leave(&sb);
    assert!(before == after, "a refused request changed the store");
    // What admins may do: manage accounts, and read everyone's audit log.
    assert_eq!(admin.get("users/bob").status, 200);
    let audit = admin.get("audit?user=bob").json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_name"] == "bob")
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "secret.create")
    );
    let own = bob.get("audit").json();
    let own = own.as_array().unwrap();
    // Not empty (an empty list is "all bob's" too): bob's own secret.create is there.
    assert!(
        own.iter().any(|e| e["action"] == "secret.create"),
        "{own:?}"
    );
    assert!(own.iter().all(|e| e["user_name"] == "bob"), "{own:?}");
    assert!(
        !audit.to_string().contains("bobs"),
        "no value in the audit log"
    );
}

#[test]
fn keys_login_keys_tokens_users_audit_and_meta_routes() {
    let (sb, daemon, h, bob) = setup();
    let key = h.get("users/me/key");
    assert_eq!(key.status, 200);
    let old = key.json()["fingerprint"].as_str().unwrap().to_string();
    let new = h.send("PUT", "users/me/key", &json!({"algorithm": "ecdsa-p256"}));
    assert_eq!(new.status, 200, "{}", new.body);
    assert_ne!(new.json()["fingerprint"], old.as_str());
    assert_eq!(new.json()["algorithm"], "ecdsa-p256");
    // Not the word "PRIVATE": the key itself, in any form, is in neither answer.
    let pair = sb.vault().open_user_key(&common::me().name).unwrap();
    let custody = common::custody::Custody::of(&pair);
    assert_eq!(custody.found_in(new.body.as_bytes()), None, "{}", new.body);
    assert_eq!(
        custody.found_in(h.get("users/me/key").body.as_bytes()),
        None
    );
    assert_eq!(
        h.send("PUT", "users/me/key", &json!({"algorithm": "rsa"}))
            .status,
        400
    );

    // Login keys, with a fingerprint (holding '/' and '+') percent-encoded in the path.
    let line = keyport_keys::KeyPair::generate(keyport_keys::KeyType::Ed25519, "laptop")
        .unwrap()
        .public_line()
        .unwrap();
    let added = bob.send("POST", "users/me/login-keys", &json!({"public_key": line}));
    assert_eq!(added.status, 201, "{}", added.body);
    let fp = added.json()[0]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(
        bob.send("POST", "users/me/login-keys", &json!({"public_key": line}))
            .status,
        409
    );
    assert_eq!(
        bob.send(
            "POST",
            "users/me/login-keys",
            &json!({"public_key": "ssh-ed25519 AAAA"})
        )
        .status,
        400
    );
    let enc = keyport::client::segment(&fp);
    assert_eq!(h.delete(&format!("users/bob/login-keys/{enc}")).status, 403);
    assert_eq!(
        bob.delete(&format!("users/me/login-keys/{enc}")).status,
        204
    );
    assert_eq!(
        bob.delete(&format!("users/me/login-keys/{enc}")).status,
        404
    );
    let r = bob.send(
        "POST",
        "users/me/login-keys",
        &json!({"public_key": "# only a comment"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(bob.delete("users/me/login-keys/nonsense").status, 400);

    // Tokens: shown once, stored hashed, revocable.
    let created = bob.send("POST", "users/me/tokens", &json!({"name": "ci"}));
    assert_eq!(created.status, 201);
    let token = created.json()["token"].as_str().unwrap().to_string();
    let ci = Http::new(&daemon.url, Some(&token));
    assert_eq!(ci.get("users/me").json()["name"], "bob");
    let listed = bob.get("users/me/tokens");
    assert!(
        !listed.body.contains(&token) && listed.body.contains("\"ci\""),
        "{}",
        listed.body
    );
    assert_eq!(
        bob.send("POST", "users/me/tokens", &json!({"name": "ci"}))
            .status,
        409
    );
    assert_eq!(
        bob.send("POST", "users/me/tokens", &json!({"name": "bad name"}))
            .status,
        400
    );
    assert_eq!(bob.delete("users/me/tokens/ci").status, 204);
    assert_eq!(bob.delete("users/me/tokens/ci").status, 404);
    assert_eq!(
        ci.get("users/me").status,
        401,
        "a revoked token stops working"
    );

    // Users (admins).
    assert_eq!(h.get("users").status, 200);
    let os = me().name;
    assert_eq!(
        h.send("POST", "users", &json!({"name": "bob", "os_user": os}))
            .status,
        409
    );
    assert_eq!(
        h.send("POST", "users", &json!({"name": "me", "os_user": os}))
            .status,
        400
    );
    assert_eq!(
        h.send(
            "POST",
            "users",
            &json!({"name": "carol", "os_user": os, "key_type": "ecdsa-p256"})
        )
        .status,
        201
    );
    assert_eq!(h.get("users/carol").status, 200);
    assert_eq!(h.delete("users/carol").status, 204);
    assert_eq!(h.delete("users/carol").status, 404);
    assert_eq!(h.get("users/carol").status, 404);

    // Audit: own events; since filters; bad since is 400.
    assert_eq!(h.get("audit?since=1h").status, 200);
    assert_eq!(h.get("audit?since=2000-01-01T00:00:00Z").status, 200);
    assert_eq!(h.get("audit?since=soon").status, 400);
    assert_eq!(h.get("audit?bogus=1").status, 400);
    let future = h.get("audit?since=2999-01-01T00:00:00Z").json();
    assert_eq!(future.as_array().unwrap().len(), 0);

    // Meta routes need no token.
    let anon = Http::new(&daemon.url, None);
    assert_eq!(anon.get("healthz").status, 200);
    let metrics = anon.get("metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains(r#"keyport_api_requests_total{route="/api/v1/users/{user}/tokens",method="POST",status="409"} 1"#), "{}", metrics.body);
    assert!(
        metrics.body.contains("keyport_secrets 0"),
        "{}",
        metrics.body
    );
    assert_eq!(anon.get("openapi.json").status, 200);
    let missing = anon.get("no/such/route");
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("no such route")
    );
    assert_eq!(h.raw("PUT", "healthz", None, None).status, 405);
    drop(sb);
}
