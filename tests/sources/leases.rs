//! Leased values (`vault-dyn://`): database passwords from OpenBao's database engine, backed by
//! a real PostgreSQL, and a PKI certificate issued with parameters (a write). The lease lives
//! as long as the sessions that got it: renewed meanwhile, then revoked or left to expire.

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::Sandbox;
use super::common::openbao::PKI_ROLE;
use super::common::openbao_engines::{db_login, role_of_password};
use super::common::postgres::Postgres;
use super::{
    Bao, Gateway, admin, await_events, cli, events, eventually, exec, gateway, ok, ok_line, text,
};

const DB_REF: &str = "vault-dyn://database/creds/readonly#password";
const DB_LEASES: &str = "database/creds/readonly/";
const DB_TTL: Duration = Duration::from_secs(6);

/// OpenBao with its database engine on a fresh PostgreSQL (leases of [`DB_TTL`], renewable up
/// to 60 s) and PKI, and keyport with `lease_end`.
fn setup(sb: &Sandbox, lease_end: &str) -> (Bao, Postgres, Gateway) {
    let bao = Bao::start(sb);
    let pg = Postgres::start(sb);
    bao.server
        .enable_database_with_leases(&pg, DB_TTL, Duration::from_secs(60));
    bao.server.enable_pki_with_leases();
    let config = bao.vault_table(&format!("lease_end = \"{lease_end}\""));
    let g = gateway(sb, lease_end, &config, &[]);
    ok(
        sb,
        &[
            "secret",
            "create",
            "db",
            "--source",
            DB_REF,
            "--env",
            "DB_PASSWORD",
            "--required",
        ],
    );
    (bao, pg, g)
}

#[test]
fn a_database_lease_is_renewed_while_its_session_lives_and_revoked_after() {
    let sb = Sandbox::new();
    let (bao, pg, g) = setup(&sb, "revoke");
    let pki_ref =
        format!("vault-dyn://pki/issue/{PKI_ROLE}?common_name=session.example.com#certificate");
    let pki_leases = format!("pki/issue/{PKI_ROLE}/");
    ok(
        &sb,
        &[
            "secret", "create", "cert", "--source", &pki_ref, "--env", "CERT_PEM",
        ],
    );

    // `secret test`: the outcome with the lease, never the value; its lease revoked at once.
    let tested = cli(&sb, &["secret", "test", "db"]);
    assert_eq!(tested.status.code(), Some(0), "{}", text(&tested));
    let (bytes, lease) = ok_line(&String::from_utf8_lossy(&tested.stdout), "db", DB_REF);
    assert!(bytes >= 8, "{bytes}");
    assert!(
        [
            ", lease 6s (renewable)",
            ", lease 6s (renewable), revoked after the test"
        ]
        .contains(&lease.as_str()),
        "{lease:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || bao
            .server
            .leases_under(DB_LEASES)
            .is_empty()),
        "the test's lease is revoked: {:?}",
        bao.server.leases_under(DB_LEASES)
    );
    let json: Value =
        serde_json::from_str(&ok(&sb, &["secret", "test", "db", "-o", "json"])).unwrap();
    assert_eq!(
        (
            &json["outcome"],
            &json["lease_ttl_secs"],
            &json["renewable"],
            &json["provider"]
        ),
        (
            &Value::from("ok"),
            &Value::from(6),
            &Value::from(true),
            &Value::from("vault")
        ),
        "{json}"
    );
    assert!(
        eventually(Duration::from_secs(3), || bao
            .server
            .leases_under(DB_LEASES)
            .is_empty()),
        "{:?}",
        bao.server.leases_under(DB_LEASES)
    );

    // A session that lives past the lease's first end.
    let mut session = g
        .daemon
        .ssh(&admin(), &g.key)
        .arg("printf '%s\\n' \"$DB_PASSWORD\"; printf '%s\\n' \"$CERT_PEM\" | head -n 1; sleep 10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut lines = std::io::BufReader::new(session.stdout.take().unwrap()).lines();
    let password = lines.next().unwrap().unwrap();
    let cert_line = lines.next().unwrap().unwrap();
    assert_eq!(cert_line, "-----BEGIN CERTIFICATE-----");
    let live = bao.server.leases_under(DB_LEASES);
    assert_eq!(live.len(), 1, "one lease for the session: {live:?}");
    let lease = live[0].clone();
    let first = bao.server.lease_lookup(&lease).unwrap();
    assert!(first.renewable && first.ttl <= DB_TTL, "{first:?}");
    let role = role_of_password(&pg, &password)
        .unwrap_or_else(|| panic!("the session's password opens no role:\n{}", pg.log()));
    assert_eq!(bao.server.leases_under(&pki_leases).len(), 1);
    let resolved = await_events(&g.api, "source.resolved", "db", 1, Duration::from_secs(5));
    let detail = &resolved.last().unwrap()["detail"];
    assert_eq!(detail["reference"], DB_REF, "{detail}");
    assert_eq!(detail["outcome"], "miss", "{detail}");
    assert!(
        detail["lease_ttl_secs"]
            .as_u64()
            .is_some_and(|t| (1..=6).contains(&t)),
        "{detail}"
    );

    // Past its ttl, and renewed meanwhile: the lease and its login are still good.
    std::thread::sleep(
        (started + Duration::from_millis(8500)).saturating_duration_since(Instant::now()),
    );
    let renewed = bao
        .server
        .lease_lookup(&lease)
        .unwrap_or_else(|| panic!("the lease ran out while its session lives"));
    assert_ne!(renewed.expire_time, first.expire_time, "renewed");
    assert!(renewed.ttl > Duration::ZERO, "{renewed:?}");
    db_login(&pg, &role, &password).unwrap();
    assert!(events(&g.api, "source.lease_revoked", "db").is_empty());

    // The session ends: the lease is revoked, and the login with it.
    let ended = session.wait_with_output().unwrap();
    assert_eq!(ended.status.code(), Some(0), "{}", text(&ended));
    assert!(
        eventually(Duration::from_secs(5), || bao
            .server
            .leases_under(DB_LEASES)
            .is_empty()),
        "revoked when its session ended: {:?}",
        bao.server.leases_under(DB_LEASES)
    );
    assert!(!pg.role_exists(&role), "the role is dropped");
    assert!(db_login(&pg, &role, &password).is_err());
    assert!(
        eventually(Duration::from_secs(5), || bao
            .server
            .leases_under(&pki_leases)
            .is_empty()),
        "the certificate's lease is revoked too"
    );
    let revoked = await_events(
        &g.api,
        "source.lease_revoked",
        "db",
        1,
        Duration::from_secs(5),
    );
    assert!(
        !revoked[0]["detail"].to_string().contains(&password),
        "{revoked:?}"
    );
    await_events(
        &g.api,
        "source.lease_revoked",
        "cert",
        1,
        Duration::from_secs(5),
    );

    // The next session gets a new lease, and a new login (good while the session lives).
    let mut next = g
        .daemon
        .ssh(&admin(), &g.key)
        .arg("printf '%s\\n' \"$DB_PASSWORD\"; sleep 2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let again = std::io::BufReader::new(next.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert_ne!(again, password);
    let new_role = role_of_password(&pg, &again);
    assert!(
        new_role.as_ref().is_some_and(|r| *r != role),
        "{new_role:?}"
    );
    assert!(next.wait().unwrap().success());
    for value in [&password, &again] {
        super::assert_nowhere(&sb, &g, value);
    }
}

#[test]
fn with_lease_end_expire_a_lease_outlives_its_session_and_runs_out() {
    let sb = Sandbox::new();
    let (bao, pg, g) = setup(&sb, "expire");
    let started = Instant::now();
    let password = super::stdout_of(&exec(&g, "printf %s \"$DB_PASSWORD\""));
    let role = role_of_password(&pg, &password)
        .unwrap_or_else(|| panic!("the session's password opens no role:\n{}", pg.log()));
    let live = bao.server.leases_under(DB_LEASES);
    assert_eq!(live.len(), 1, "{live:?}");
    // The session is over; the lease stays, and so does the login.
    std::thread::sleep(Duration::from_millis(1500));
    let info = bao
        .server
        .lease_lookup(&live[0])
        .unwrap_or_else(|| panic!("revoked, though lease_end = expire"));
    assert!(info.ttl <= DB_TTL, "{info:?}");
    db_login(&pg, &role, &password).unwrap();
    assert!(events(&g.api, "source.lease_revoked", "db").is_empty());
    // Not renewed: it ends at its ttl, and OpenBao drops the role then.
    assert!(
        eventually(Duration::from_secs(10), || bao
            .server
            .lease_lookup(&live[0])
            .is_none()),
        "the lease never ran out"
    );
    assert!(
        started.elapsed() >= DB_TTL - Duration::from_secs(1),
        "gone before its ttl: {:?}",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(5), || !pg.role_exists(&role)),
        "OpenBao drops the role when the lease expires"
    );
    await_events(
        &g.api,
        "source.lease_expired",
        "db",
        1,
        Duration::from_secs(5),
    );
    assert!(events(&g.api, "source.lease_revoked", "db").is_empty());
}

/// A daemon that stops revokes the leases its sessions held (`lease_end = "revoke"`), so
/// none outlives keyport until its TTL.
#[test]
fn a_stopping_daemon_revokes_the_leases_still_held() {
    let sb = Sandbox::new();
    let (bao, _pg, g) = setup(&sb, "revoke");
    let mut session = g
        .daemon
        .ssh(&admin(), &g.key)
        .arg("printf '%s\\n' \"$DB_PASSWORD\"; sleep 30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(session.stdout.take().unwrap()).lines();
    assert!(
        !lines.next().unwrap().unwrap().is_empty(),
        "the session got its password"
    );
    assert_eq!(bao.server.leases_under(DB_LEASES).len(), 1);
    let stopped = Instant::now();
    let status = g.daemon.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopped.elapsed()
    );
    assert!(
        bao.server.leases_under(DB_LEASES).is_empty(),
        "revoked before keyport exited: {:?}",
        bao.server.leases_under(DB_LEASES)
    );
    let _ = session.kill();
    let _ = session.wait();
}
