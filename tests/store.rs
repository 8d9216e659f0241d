//! The store conformance suite, part two: workspaces (routes, grants, pinned and announced
//! host keys), concurrent writers, web sign-in, the change mark and `admin migrate`, each case
//! on a real SQLite file and on a real PostgreSQL database (`on_sqlite`, `on_postgres`). Part
//! one is tests/vault.rs, part three (the user CAs) tests/store_ca.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sandbox;
use keyport::vault::NewUserSpec;
use keyport::vault::*;
use serde_json::json;

const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlaqXRzxlPxHzGYpr8aP5erxYYqDHLXqJ0uxdVAF6GN c1";
const FP1: &str = "SHA256:QkaYXhn9pF3e4dgNRjoY50UkDr84UKyYOaUH4qAQbT8";
const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM9/BvHqNEphufbfyxnCy65L7MtmPoBecKjZEvQVvz6W";
const FP2: &str = "SHA256:+DLwhnGPl96uDIj+tfQzod7KbqoSbev02ZukSULsLfo";

fn workspace_vault(sb: &Sandbox) -> Vault {
    let mut vault = sb.vault();
    let os = keyport::osuser::current().expect("os user").name;
    for name in ["alice", "bob", "carol"] {
        let spec = NewUserSpec {
            name: name.into(),
            os_user: Some(os.clone()),
            ..NewUserSpec::default()
        };
        vault.add_user(&Actor::System, &spec).expect("user");
    }
    vault
}

fn spec(name: &str, owners: &[&str]) -> WorkspaceSpec {
    WorkspaceSpec {
        name: name.into(),
        address: "127.0.0.1:22".into(),
        os_user: "dev".into(),
        owners: owners.iter().map(|o| o.to_string()).collect(),
        host_keys: vec![KEY1.into()],
        host_key_source: HostKeySource::Pinned,
        auth: WorkspaceAuth::Key,
    }
}

fn id(vault: &Vault, user: &str) -> i64 {
    vault.user(user).expect("user").id
}

fn routes_only_for_granted_users_with_the_login_in_effect(sb: &Sandbox) {
    let mut vault = workspace_vault(sb);
    let actor = Actor::System;
    vault
        .add_workspace(&actor, &spec("dev1", &["alice"]))
        .expect("add");
    let (alice, bob, carol) = (id(&vault, "alice"), id(&vault, "bob"), id(&vault, "carol"));

    // The owner is granted, with the workspace's login.
    let route = vault.workspace_route(alice, "dev1").expect("route");
    let route = route.expect("owner is granted");
    assert_eq!(route.workspace, "dev1");
    assert_eq!(route.address, "127.0.0.1:22");
    assert_eq!(route.os_user, "dev");
    assert_eq!(route.host_keys, vec![parse_host_key(KEY1).expect("key").0]);

    // Not granted is exactly unknown.
    assert!(vault.workspace_route(bob, "dev1").expect("ok").is_none());
    assert!(vault.workspace_route(bob, "nope").expect("ok").is_none());
    let hidden = vault.user_workspace("bob", "dev1").expect_err("hidden");
    let unknown = vault.user_workspace("bob", "nope").expect_err("unknown");
    assert_eq!(
        hidden.to_string().replace("dev1", "X"),
        unknown.to_string().replace("nope", "X")
    );
    assert!(vault.user_workspaces("bob").expect("list").is_empty());

    // A grant's own login wins over the workspace's.
    let grant = GrantSpec {
        os_user: Some("bob2".into()),
        owner: false,
    };
    let info = vault
        .grant_workspace(&actor, "dev1", "bob", &grant)
        .expect("grant");
    let bob_grant = info.grants.iter().find(|g| g.user == "bob").expect("bob");
    assert_eq!(bob_grant.login, "bob2");
    assert!(!bob_grant.owner);
    let route = vault.workspace_route(bob, "dev1").expect("ok");
    assert_eq!(route.expect("granted").os_user, "bob2");
    assert!(vault.workspace_route(carol, "dev1").expect("ok").is_none());

    // A user's view: no address, only their own grant.
    let mine = vault.user_workspaces("bob").expect("list");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].address, None);
    assert_eq!(mine[0].grants.len(), 1);
    assert_eq!(mine[0].grants[0].login, "bob2");

    // Granting again without a login goes back to the workspace's.
    vault
        .grant_workspace(&actor, "dev1", "bob", &GrantSpec::default())
        .expect("grant");
    let route = vault.workspace_route(bob, "dev1").expect("ok");
    assert_eq!(route.expect("granted").os_user, "dev");

    vault
        .revoke_workspace(&actor, "dev1", "bob")
        .expect("revoke");
    assert!(vault.workspace_route(bob, "dev1").expect("ok").is_none());
    // The last owner stays.
    let err = vault
        .revoke_workspace(&actor, "dev1", "alice")
        .expect_err("last owner");
    assert!(matches!(err, VaultError::Conflict(_)), "{err}");
}

fn bad_specs_name_every_field_and_store_nothing(sb: &Sandbox) {
    let mut vault = workspace_vault(sb);
    let bad = WorkspaceSpec {
        name: "a:b".into(),
        address: "nohost".into(),
        os_user: "-x".into(),
        owners: vec!["zed".into()],
        host_keys: vec!["ssh-ed25519 AAAA".into()],
        host_key_source: HostKeySource::Pinned,
        auth: WorkspaceAuth::Key,
    };
    let Err(VaultError::Invalid(v)) = vault.add_workspace(&Actor::System, &bad) else {
        panic!("invalid expected");
    };
    let fields: Vec<&str> = v.iter().map(|v| v.field.as_ref()).collect();
    assert_eq!(fields, ["name", "address", "os-user", "host-key", "owner"]);
    let empty = WorkspaceSpec {
        owners: vec![],
        host_keys: vec![],
        ..spec("dev1", &[])
    };
    let Err(VaultError::Invalid(v)) = vault.add_workspace(&Actor::System, &empty) else {
        panic!("invalid expected");
    };
    let fields: Vec<&str> = v.iter().map(|v| v.field.as_ref()).collect();
    assert_eq!(fields, ["host-key", "owner"]);
    assert!(vault.workspaces().expect("list").is_empty());

    vault
        .add_workspace(&Actor::System, &spec("dev1", &["alice"]))
        .expect("add");
    let dup = vault.add_workspace(&Actor::System, &spec("dev1", &["bob"]));
    assert!(matches!(dup, Err(VaultError::Conflict(_))), "{dup:?}");
}

fn announced_keys_are_added_once_and_audited(sb: &Sandbox) {
    let mut vault = workspace_vault(sb);
    let info = vault
        .add_workspace(&Actor::System, &spec("dev1", &["alice", "alice"]))
        .expect("add");
    assert_eq!(info.grants.len(), 1, "one owner named twice is one grant");
    let ws = vault.store().workspace("dev1").expect("ws").id;
    assert!(!vault.add_workspace_host_key(ws, KEY1, FP1).expect("known"));
    assert!(vault.add_workspace_host_key(ws, KEY2, FP1).expect("new"));
    assert!(!vault.add_workspace_host_key(ws, KEY2, FP1).expect("again"));
    let info = vault.workspace("dev1").expect("show");
    // Listed by when they were added, then by fingerprint: within one millisecond the order
    // is the fingerprints'.
    let mut keys: Vec<(&str, &str)> = info
        .host_keys
        .iter()
        .map(|k| (k.fingerprint.as_str(), k.source.as_str()))
        .collect();
    keys.sort_unstable();
    let mut want = [(FP1, "pinned"), (FP2, "announced")];
    want.sort_unstable();
    assert_eq!(keys, want);
    let events = vault.audit_events(None, 0).expect("audit");
    let added: Vec<_> = events
        .iter()
        .filter(|e| e.action == "workspace.host-key-added")
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].actor, "system");
    assert_eq!(
        added[0].detail,
        json!({ "workspace": "dev1", "fingerprint": FP2, "source": "announced" })
    );
    assert!(vault.add_workspace_host_key(ws + 100, KEY2, FP1).is_err());

    vault.remove_workspace(&Actor::System, "dev1").expect("rm");
    assert!(matches!(
        vault.workspace("dev1"),
        Err(VaultError::NotFound { .. })
    ));
    let actions: Vec<String> = vault
        .audit_events(None, 0)
        .expect("audit")
        .into_iter()
        .filter(|e| e.action.starts_with("workspace."))
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "workspace.add",
            "workspace.host-key-added",
            "workspace.remove"
        ]
    );
}

fn pinning_replaces_every_key_in_one_audited_change(sb: &Sandbox) {
    let mut vault = workspace_vault(sb);
    let actor = Actor::System;
    vault
        .add_workspace(&actor, &spec("dev1", &["alice"]))
        .expect("add");
    let ws = vault.store().workspace("dev1").expect("ws").id;
    assert!(
        vault
            .add_workspace_host_key(ws, KEY2, FP1)
            .expect("announced")
    );
    let before = vault.workspace("dev1").expect("show");

    // Bad input, or no workspace: nothing changes, and the field is named.
    for (keys, field) in [
        (vec![], "host-key"),
        (
            vec![KEY1.to_string(), "ssh-ed25519 AAAA".into()],
            "host-key",
        ),
    ] {
        let got = vault.pin_workspace_host_keys(&actor, "dev1", &keys, HostKeySource::Pinned);
        let Err(VaultError::Invalid(v)) = got else {
            panic!("invalid expected: {got:?}");
        };
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, field);
    }
    let unknown =
        vault.pin_workspace_host_keys(&actor, "nope", &[KEY1.into()], HostKeySource::Pinned);
    assert!(
        matches!(unknown, Err(VaultError::NotFound { .. })),
        "{unknown:?}"
    );
    assert_eq!(vault.workspace("dev1").expect("show"), before);

    // The key given twice is pinned once; the announced one is gone with the old one.
    let keys = [KEY2.to_string(), KEY2.to_string()];
    let change = vault
        .pin_workspace_host_keys(&actor, "dev1", &keys, HostKeySource::Scan)
        .expect("pin");
    let mut replaced: Vec<&str> = change
        .replaced
        .iter()
        .map(|k| k.fingerprint.as_str())
        .collect();
    replaced.sort_unstable();
    let mut want = [FP1, FP2];
    want.sort_unstable();
    assert_eq!(replaced, want);
    let now: Vec<(&str, &str)> = change
        .workspace
        .host_keys
        .iter()
        .map(|k| (k.fingerprint.as_str(), k.source.as_str()))
        .collect();
    assert_eq!(now, [(FP2, "scan")]);
    assert_eq!(vault.workspace("dev1").expect("show"), change.workspace);
    let alice = id(&vault, "alice");
    let route = vault.workspace_route(alice, "dev1").expect("route");
    let key2 = parse_host_key(KEY2).expect("key").0;
    assert_eq!(route.expect("granted").host_keys, vec![key2]);

    let events = vault.audit_events(None, 0).expect("audit");
    let pinned: Vec<_> = events
        .iter()
        .filter(|e| e.action == "workspace.pinned")
        .collect();
    assert_eq!(pinned.len(), 1, "one event, for the change that landed");
    let mut detail = pinned[0].detail.clone();
    let old = detail["old_host_keys"].as_array_mut().expect("old keys");
    old.sort_unstable_by(|a, b| a.as_str().cmp(&b.as_str()));
    let mut want_old = [FP1, FP2];
    want_old.sort_unstable();
    assert_eq!(
        detail,
        json!({ "workspace": "dev1", "old_host_keys": want_old, "new_host_keys": [FP2],
                "source": "scan" })
    );
}

/// Writers through two vaults at once (two replicas' connections) never take a user past
/// `max_secrets`: the per-user check and the insert are one serialized step on both backends.
fn concurrent_creates_through_two_connections_never_pass_the_per_user_limit(sb: &Sandbox) {
    use keyport::secrets::{Limits, SecretSpec};
    let limits = Limits {
        max_secrets: 10,
        ..Limits::default()
    };
    let mut first = sb.vault_with(limits);
    common::add_user(&mut first, "alice");
    let second = sb.vault_with(limits);
    let created = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (half, mut v) in [first, second].into_iter().enumerate() {
            let created = &created;
            s.spawn(move || {
                for i in 0..20 {
                    let spec = SecretSpec {
                        source: None,
                        required: false,
                        name: format!("s{half}-{i}"),
                        value: keyport_keys::SecretBytes::from("v"),
                        description: String::new(),
                        env: Some(format!("S{half}_{i}")),
                        file: None,
                        enabled: None,
                        lifecycle: Default::default(),
                    };
                    match v.create_secret(&Actor::System, "alice", &spec) {
                        Ok(_) => {
                            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(VaultError::Invalid(v)) => {
                            assert!(
                                v.iter().any(|v| v.detail.contains("limit reached")),
                                "{v:?}"
                            )
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let v = sb.vault();
    let stored = v.secrets("alice").unwrap().len();
    assert_eq!(stored, 10);
    assert_eq!(created.load(std::sync::atomic::Ordering::Relaxed), 10);
}

/// A web sign-in link is taken once; the session it makes is found until signed out; every
/// stored time comes back to the millisecond.
fn web_links_are_taken_once_and_times_round_trip(sb: &Sandbox) {
    let mut v = sb.vault();
    common::add_user(&mut v, "alice");
    let link = v
        .create_web_link(&Actor::System, "alice", std::time::Duration::from_secs(600))
        .unwrap();
    let age = std::time::Duration::from_secs(3600);
    let WebSignIn::SignedIn { session, user } = v.sign_in_web(&link.token, age, None).unwrap()
    else {
        panic!("the link did not sign in")
    };
    assert_eq!(user.name, "alice");
    assert!(
        matches!(
            v.sign_in_web(&link.token, age, None).unwrap(),
            WebSignIn::Unknown
        ),
        "a link signs in once"
    );
    let idle = std::time::Duration::from_secs(600);
    assert_eq!(v.web_user(&session, idle).unwrap().unwrap().name, "alice");
    v.sign_out_web("alice", &session).unwrap();
    assert!(v.web_user(&session, idle).unwrap().is_none());
    let user = v.user("alice").unwrap();
    let again = sb.vault().user("alice").unwrap();
    assert_eq!(user.created_at, again.created_at);
    assert!(user.created_at > 1_700_000_000_000, "{}", user.created_at);
}

/// The change mark grows with every change and stands still without one.
fn the_change_mark_grows_with_every_change(sb: &Sandbox) {
    let mut v = sb.vault();
    let m0 = v.change_mark().unwrap();
    assert_eq!(v.change_mark().unwrap(), m0);
    common::add_user(&mut v, "alice");
    let m1 = v.change_mark().unwrap();
    assert!(m1 > m0, "{m0} -> {m1}");
    v.remove_user(&Actor::cli(), "alice").unwrap();
    assert!(v.change_mark().unwrap() > m1);
}

/// `keyport admin migrate` brings a new database to this keyport's schema and says so, then
/// finds it up to date; it needs no master key.
fn admin_migrate_applies_then_finds_the_schema_up_to_date(sb: &Sandbox) {
    let run = || {
        // The database from KEYPORT_DATABASE (Sandbox::keyport sets it): no password in argv.
        let out = sb.keyport().args(["admin", "migrate"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(
        first.contains("schema version 8 (applied 1, 2, 3, 4, 5, 6, 7, 8)"),
        "{first}"
    );
    assert!(!first.contains(keyport_password()), "{first}");
    let again = run();
    assert!(
        again.contains("schema version 8 (already up to date)"),
        "{again}"
    );
    assert!(
        !sb.data().join("master.key").exists(),
        "migrate made a master key"
    );
}

fn keyport_password() -> &'static str {
    common::postgres::Postgres::SUPERUSER_PASSWORD
}

conformance!(
    admin_migrate_applies_then_finds_the_schema_up_to_date,
    concurrent_creates_through_two_connections_never_pass_the_per_user_limit,
    web_links_are_taken_once_and_times_round_trip,
    the_change_mark_grows_with_every_change,
    routes_only_for_granted_users_with_the_login_in_effect,
    bad_specs_name_every_field_and_store_nothing,
    announced_keys_are_added_once_and_audited,
    pinning_replaces_every_key_in_one_audited_change,
);

/// `openssl ARGS` in `dir`, insisting it succeeds.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sslmode=require` reaches a PostgreSQL serving TLS with a private CA's certificate: with
/// the CA in KEYPORT_DATABASE_CA the store migrates over TLS; without it the server is not
/// trusted and nothing connects.
#[test]
fn a_database_over_tls_is_trusted_only_through_the_given_ca() {
    common::require_tool("openssl");
    let host = Sandbox::new();
    let pg = common::postgres::Postgres::start(&host);
    let certs = host.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &certs,
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=keyport test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &certs,
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        certs.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    // The server's key and certificate in its data dir, its own and private, then TLS on.
    let data = pg.dir().join("data");
    for name in ["server.crt", "server.key"] {
        let to = data.join(name);
        std::fs::copy(certs.join(name), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        let owner = std::fs::metadata(&data).unwrap();
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    pg.psql("ALTER SYSTEM SET ssl = on");
    pg.psql("SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.psql("SHOW ssl") != "on" {
        assert!(
            std::time::Instant::now() < deadline,
            "ssl did not come on:\n{}",
            pg.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = pg
        .url(
            common::postgres::Postgres::SUPERUSER,
            common::postgres::Postgres::SUPERUSER_PASSWORD,
            "postgres",
        )
        .replace("sslmode=disable", "sslmode=require");
    let sb = Sandbox::new();
    let migrate = |ca: Option<&std::path::Path>| {
        let mut cmd = sb.keyport();
        cmd.args(["admin", "migrate"]).env("KEYPORT_DATABASE", &url);
        if let Some(ca) = ca {
            cmd.env("KEYPORT_DATABASE_CA", ca);
        }
        cmd.output().unwrap()
    };
    let untrusted = migrate(None);
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        !untrusted.status.success(),
        "connected to a server it cannot trust"
    );
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    let trusted = migrate(Some(&certs.join("ca.pem")));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // sslmode=require never falls back to plain text: this migration went over TLS.
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("schema version 8"));
}
