//! A self-test of the OpenBao harness (tests/common/openbao.rs) against the real `bao server
//! -dev`: KV v2 put and get (also through the `bao` CLI); a PKI certificate whose lease has a
//! duration, is not renewable, can be looked up and is gone once revoked; an AppRole login
//! reading what its policy allows and nothing else; JWT auth with a hand-signed ES256 token
//! for `sub=alice` whose templated policy lets her read `secret/users/alice/*` but not bob's,
//! and whose reads the file audit log attributes to her; a stopped server answers nothing and
//! a restarted one answers on the same port, empty. With a real PostgreSQL
//! (tests/common/postgres.rs, unprivileged even when the tests run as root, passwords required):
//! the database engine's credentials log in, carry a renewable lease whose renewal moves its
//! expiry, and stop logging in once the lease is revoked (the role is dropped). No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Sandbox;
use common::jwt::{Es256Key, jwt_claims};
use common::openbao::{JWT_USER_POLICY, OpenBao, PKI_ROLE};
use common::openbao_engines::{DB_ROLE, db_login, generated_roles, role_of_password};
use common::postgres::Postgres;

/// Starts a server, saying how long that took.
fn start(sb: &Sandbox) -> OpenBao {
    let began = Instant::now();
    let bao = OpenBao::start(sb);
    eprintln!(
        "openbao on {} answered after {:?}",
        bao.addr(),
        began.elapsed()
    );
    bao
}

#[test]
fn kv_put_and_get() {
    let sb = Sandbox::new();
    let bao = start(&sb);
    assert_eq!(bao.kv_put("app/github", &[("token", "ghp_one")]), 1);
    assert_eq!(
        bao.kv_put("app/github", &[("token", "ghp_two"), ("user", "ci")]),
        2
    );
    let got = bao.kv_get("app/github").unwrap();
    assert_eq!(got.get("token").map(String::as_str), Some("ghp_two"));
    assert_eq!(got.get("user").map(String::as_str), Some("ci"));
    assert_eq!(bao.kv_get("app/nothing"), None);
    // KV v2 hands out no lease.
    let reply = bao.kv_read_as(OpenBao::ROOT_TOKEN, "app/github");
    assert_eq!(reply.body["lease_duration"], 0, "{reply:?}");
    assert_eq!(reply.body["data"]["metadata"]["version"], 2);
    // The CLI, with the environment the harness gives it.
    let out = bao.cli(&["kv", "get", "-field=token", "secret/app/github"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ghp_two");
}

#[test]
fn pki_lease_lookup_and_revoke() {
    let sb = Sandbox::new();
    let bao = start(&sb);
    assert_eq!(bao.enable_pki_with_leases(), PKI_ROLE);
    let lease = bao.issue_cert(PKI_ROLE);
    assert!(
        lease
            .lease_id
            .starts_with(&format!("pki/issue/{PKI_ROLE}/")),
        "{lease:?}"
    );
    assert!(
        lease.duration > Duration::ZERO && lease.duration <= Duration::from_secs(60),
        "{lease:?}"
    );
    assert!(!lease.renewable, "a certificate's lease is not renewable");
    assert!(
        lease.data["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let info = bao.lease_lookup(&lease.lease_id).expect("a live lease");
    assert!(
        info.ttl > Duration::ZERO && info.ttl <= Duration::from_secs(60),
        "{info:?}"
    );
    assert!(
        info.expire_time.len() >= 20 && info.expire_time > info.issue_time,
        "{info:?}"
    );
    assert!(!info.renewable);
    let renew = bao.renew_lease(&lease.lease_id);
    assert_eq!(renew.status, 400, "{renew:?}");
    assert!(renew.errors().contains("not renewable"), "{renew:?}");
    bao.revoke_lease(&lease.lease_id);
    assert!(bao.lease_lookup(&lease.lease_id).is_none());
    // Another certificate's lease is untouched.
    let other = bao.issue_cert(PKI_ROLE);
    assert!(bao.lease_lookup(&other.lease_id).is_some());
}

#[test]
fn approle_login_reads_what_its_policy_allows() {
    let sb = Sandbox::new();
    let bao = start(&sb);
    bao.write_policy(
        "keyport-shared",
        r#"path "secret/data/shared/*" { capabilities = ["read"] }"#,
    );
    bao.kv_put("shared/db", &[("password", "s3cret-db")]);
    bao.kv_put("private/x", &[("v", "no")]);
    let (role_id, secret_id) = bao.enable_approle("keyport-shared");
    let login = bao.approle_login(&role_id, &secret_id);
    assert!(login.ok(), "{login:?}");
    let token = login.client_token();
    let read = bao.kv_read_as(&token, "shared/db");
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["data"]["data"]["password"], "s3cret-db");
    let denied = bao.kv_read_as(&token, "private/x");
    assert_eq!(denied.status, 403, "{denied:?}");
    let wrong = bao.approle_login(&role_id, "00000000-0000-0000-0000-000000000000");
    assert!(!wrong.ok(), "{wrong:?}");
}

#[test]
fn jwt_user_reads_only_own_secrets_and_the_audit_log_names_them() {
    let sb = Sandbox::new();
    let mut bao = start(&sb);
    let audit = sb.dir.path().join("audit.log");
    bao.enable_audit_file(&audit);
    let key = Es256Key::generate(&sb.dir.path().join("jwt_key"));
    let jwt = bao.enable_jwt(&key.public_pem, "keyport-user", "vault");
    assert!(jwt.accessor.starts_with("auth_jwt_"), "{jwt:?}");
    assert!(
        jwt.policy.contains(&format!(
            "secret/data/users/{{{{identity.entity.aliases.{}.name}}}}/*",
            jwt.accessor
        )),
        "{}",
        jwt.policy
    );
    bao.kv_put("users/alice/x", &[("v", "alice-value-1234")]);
    bao.kv_put("users/bob/x", &[("v", "bob-value-5678")]);

    let login = bao.jwt_login(
        &jwt.role,
        &key.sign(&jwt_claims("alice", "vault", Duration::from_secs(120))),
    );
    assert!(login.ok(), "{login:?}");
    assert_eq!(login.body["auth"]["metadata"]["user"], "alice", "{login:?}");
    let policies = login.body["auth"]["token_policies"].to_string();
    assert!(policies.contains(JWT_USER_POLICY), "{policies}");
    let token = login.client_token();
    let own = bao.kv_read_as(&token, "users/alice/x");
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.body["data"]["data"]["v"], "alice-value-1234");
    let other = bao.kv_read_as(&token, "users/bob/x");
    assert_eq!(other.status, 403, "{other:?}");

    // The entity alias is named after the `sub` claim, on this mount.
    let entity_id = login.body["auth"]["entity_id"].as_str().unwrap();
    let entity = bao.root("GET", &format!("identity/entity/id/{entity_id}"), None);
    let aliases = entity["data"]["aliases"].as_array().unwrap();
    assert!(
        aliases
            .iter()
            .any(|a| a["name"] == "alice" && a["mount_accessor"] == jwt.accessor.as_str()),
        "{entity}"
    );

    // Refused: another audience, another key, an expired token.
    let wrong_aud = bao.jwt_login(
        &jwt.role,
        &key.sign(&jwt_claims("alice", "elsewhere", Duration::from_secs(120))),
    );
    assert_eq!(wrong_aud.status, 400, "{wrong_aud:?}");
    let stranger = Es256Key::generate(&sb.dir.path().join("other_key"));
    let forged = bao.jwt_login(
        &jwt.role,
        &stranger.sign(&jwt_claims("alice", "vault", Duration::from_secs(120))),
    );
    assert_eq!(forged.status, 400, "{forged:?}");
    let mut stale = jwt_claims("alice", "vault", Duration::ZERO);
    for claim in ["iat", "nbf", "exp"] {
        stale[claim] = (stale[claim].as_u64().unwrap() - 3600).into();
    }
    let expired = bao.jwt_login(&jwt.role, &key.sign(&stale));
    assert_eq!(expired.status, 400, "{expired:?}");

    // The audit log: alice's read, by her, allowed; her try at bob's, by her, denied; values
    // only as HMACs.
    let lines = bao.audit_lines();
    let by_alice = |path: &str| {
        lines
            .iter()
            .filter(|l| l["request"]["path"] == path && l["auth"]["display_name"] == "jwt-alice")
            .cloned()
            .collect::<Vec<_>>()
    };
    let read = by_alice("secret/data/users/alice/x");
    let response = read
        .iter()
        .find(|l| l["type"] == "response")
        .unwrap_or_else(|| panic!("no audited response for alice's read: {lines:#?}"));
    assert_eq!(response["auth"]["metadata"]["user"], "alice", "{response}");
    assert_eq!(response["auth"]["entity_id"], entity_id, "{response}");
    assert_eq!(response["auth"]["policy_results"]["allowed"], true);
    assert_eq!(response["request"]["operation"], "read");
    let denied = by_alice("secret/data/users/bob/x");
    assert!(
        denied
            .iter()
            .any(|l| l["auth"]["policy_results"]["allowed"] == false),
        "{denied:#?}"
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains("alice-value-1234"),
        "a value in the audit log"
    );
    assert!(
        response["response"]["data"]["data"]["v"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
}

#[test]
fn stop_fails_health_and_restart_answers_empty_on_the_same_port() {
    let sb = Sandbox::new();
    let mut bao = start(&sb);
    let port = bao.port;
    bao.kv_put("app/x", &[("v", "1")]);
    assert_eq!(bao.health(), Some(200));
    bao.stop();
    assert!(!bao.running());
    assert_eq!(bao.health(), None, "a stopped server answers nothing");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let began = Instant::now();
    bao.restart();
    eprintln!("restart took {:?}", began.elapsed());
    assert_eq!(bao.port, port);
    assert_eq!(bao.health(), Some(200));
    // A dev server keeps nothing: the secret is gone, the default KV mount is back.
    assert_eq!(bao.kv_get("app/x"), None);
    assert_eq!(bao.kv_put("app/x", &[("v", "2")]), 1);
    assert_eq!(bao.kv_get("app/x").unwrap()["v"], "2");
}

#[test]
fn postgres_runs_unprivileged_and_wants_a_password() {
    let sb = Sandbox::new();
    let began = Instant::now();
    let mut pg = Postgres::start(&sb);
    eprintln!(
        "postgres on {} answered after {:?}",
        pg.port(),
        began.elapsed()
    );
    assert!(pg.running());
    let status = std::fs::read_to_string(format!("/proc/{}/status", pg.pid().unwrap())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let expected = if nix::unistd::Uid::effective().is_root() {
        keyport::osuser::lookup("nobody").unwrap().uid
    } else {
        nix::unistd::Uid::effective().as_raw()
    };
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(expected.to_string().as_str()),
        "{uid_line}"
    );
    assert_eq!(
        pg.login(Postgres::SUPERUSER, Postgres::SUPERUSER_PASSWORD),
        Ok(Postgres::SUPERUSER.to_string())
    );
    let wrong = pg
        .login(Postgres::SUPERUSER, "not-the-password")
        .unwrap_err();
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-pw'");
    pg.psql("CREATE DATABASE appdb OWNER app");
    assert!(pg.role_exists("app"));
    assert!(!pg.role_exists("nobody-here"));
    let rows = pg
        .run_sql(
            "app",
            "app-pw",
            "appdb",
            "CREATE TABLE t (n int); INSERT INTO t VALUES (7); SELECT n FROM t",
        )
        .unwrap();
    assert_eq!(rows, "7");
    let url = pg.url("app", "app-pw", "appdb");
    assert_eq!(
        url,
        format!(
            "postgres://app:app-pw@127.0.0.1:{}/appdb?sslmode=disable",
            pg.port()
        )
    );
    let port = pg.port();
    pg.stop();
    assert!(!pg.running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn database_creds_are_renewable_and_revoking_drops_the_role() {
    let sb = Sandbox::new();
    let bao = start(&sb);
    let pg = Postgres::start(&sb);
    let role =
        bao.enable_database_with_leases(&pg, Duration::from_secs(6), Duration::from_secs(60));
    assert_eq!(role, DB_ROLE);
    let creds = bao.db_creds(role);
    assert!(
        creds
            .lease
            .lease_id
            .starts_with(&format!("database/creds/{DB_ROLE}/")),
        "{creds:?}"
    );
    assert!(creds.lease.renewable, "{creds:?}");
    assert_eq!(creds.lease.duration, Duration::from_secs(6), "{creds:?}");
    assert_eq!(creds.lease.data["username"], creds.username.as_str());
    assert!(pg.role_exists(&creds.username), "{creds:?}");
    creds.login(&pg).unwrap();
    assert!(db_login(&pg, &creds.username, "wrong-password").is_err());
    // Two reads, two logins.
    let other = bao.db_creds(role);
    assert_ne!(other.username, creds.username);
    let prefix = format!("database/creds/{DB_ROLE}/");
    let mut live = bao.leases_under(&prefix);
    live.sort();
    let mut expected = vec![creds.lease.lease_id.clone(), other.lease.lease_id.clone()];
    expected.sort();
    assert_eq!(live, expected);
    let mut roles = vec![creds.username.clone(), other.username.clone()];
    roles.sort();
    assert_eq!(generated_roles(&pg), roles);
    assert_eq!(
        role_of_password(&pg, &creds.password),
        Some(creds.username.clone())
    );
    assert_eq!(role_of_password(&pg, "not-a-password"), None);

    // Renewing moves the expiry: time passes, the lease's time left shrinks, a renewal gives
    // it its whole duration again from now.
    let before = bao
        .lease_lookup(&creds.lease.lease_id)
        .expect("a live lease");
    assert!(before.renewable, "{before:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let aged = bao.lease_lookup(&creds.lease.lease_id).unwrap();
    assert!(aged.ttl <= Duration::from_secs(4), "{aged:?}");
    let renew = bao.renew_lease(&creds.lease.lease_id);
    assert!(renew.ok(), "{renew:?}");
    assert_eq!(renew.body["lease_id"], creds.lease.lease_id.as_str());
    assert!(
        renew.body["lease_duration"].as_u64().unwrap() >= 5,
        "{renew:?}"
    );
    let renewed = bao.lease_lookup(&creds.lease.lease_id).unwrap();
    assert!(renewed.ttl >= Duration::from_secs(5), "{renewed:?}");
    assert!(renewed.ttl > aged.ttl, "{aged:?} then {renewed:?}");
    assert_ne!(renewed.expire_time, before.expire_time);
    assert_eq!(renewed.issue_time, before.issue_time);
    creds.login(&pg).unwrap();

    // Revoked: the lease is gone, and so is the role.
    bao.revoke_lease(&creds.lease.lease_id);
    assert!(bao.lease_lookup(&creds.lease.lease_id).is_none());
    assert!(!pg.role_exists(&creds.username));
    let refused = creds.login(&pg).unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    // The other lease, and its login, are untouched.
    assert!(bao.lease_lookup(&other.lease.lease_id).is_some());
    assert_eq!(
        bao.leases_under(&prefix),
        vec![other.lease.lease_id.clone()]
    );
    assert_eq!(generated_roles(&pg), vec![other.username.clone()]);
    assert!(bao.leases_under("database/creds/nothing/").is_empty());
    other.login(&pg).unwrap();
}
