//! Table-driven tests of the workspace rules, and the route rules on a real vault: no grant
//! is the same as no workspace, a grant's login wins, owners are granted.
use super::*;
use crate::secrets::Limits;
use crate::vault::NewUserSpec;
use crate::vault::workspace_rules::MAX_LOGIN_LEN;

const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlaqXRzxlPxHzGYpr8aP5erxYYqDHLXqJ0uxdVAF6GN c1";
const FP1: &str = "SHA256:QkaYXhn9pF3e4dgNRjoY50UkDr84UKyYOaUH4qAQbT8";
const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM9/BvHqNEphufbfyxnCy65L7MtmPoBecKjZEvQVvz6W";
const FP2: &str = "SHA256:+DLwhnGPl96uDIj+tfQzod7KbqoSbev02ZukSULsLfo";

#[test]
fn addresses() {
    for (address, ok) in [
        ("dev1.internal:22", true),
        ("10.0.0.5:2222", true),
        ("[::1]:22", true),
        ("[2001:db8::1]:65535", true),
        ("host_name:1", true),
        ("localhost", false),
        ("localhost:", false),
        ("localhost:0", false),
        ("localhost:65536", false),
        ("localhost:22a", false),
        ("localhost:-1", false),
        (":22", false),
        ("::1:22", false),
        ("[nope]:22", false),
        ("-x:22", false),
        ("a b:22", false),
        ("host/x:22", false),
    ] {
        let got = check_address(address);
        assert_eq!(got.is_ok(), ok, "address {address:?}: {got:?}");
        if let Err(v) = got {
            assert_eq!(v.field, "address");
        }
    }
    let port = check_address("h:70000").err().map(|v| v.detail);
    assert!(port.is_some_and(|d| d.contains("1 to 65535")));
}

#[test]
fn logins() {
    let long = "a".repeat(MAX_LOGIN_LEN);
    let too_long = "a".repeat(MAX_LOGIN_LEN + 1);
    for (login, ok) in [
        ("alice", true),
        ("_svc", true),
        ("a.b-c_d", true),
        ("user1", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("-oProxyCommand", false),
        ("1000", false),
        ("a b", false),
        ("a:b", false),
        ("é", false),
    ] {
        let got = check_login(login);
        assert_eq!(got.is_ok(), ok, "login {login:?}");
        if let Err(v) = got {
            assert_eq!(v.field, "os-user");
        }
    }
}

#[test]
fn workspace_names_follow_the_user_name_rule() {
    for (name, ok) in [
        ("dev1", true),
        ("a.b_c-d", true),
        ("", false),
        ("-x", false),
        ("a:b", false),
        ("a b", false),
    ] {
        assert_eq!(check_workspace_name(name).is_ok(), ok, "name {name:?}");
    }
}

#[test]
fn host_keys_are_canonical_with_their_fingerprint() {
    let (line, fp) = parse_host_key(KEY1).expect("parses");
    assert_eq!(fp, FP1);
    assert!(!line.ends_with("c1"), "comment dropped: {line}");
    assert_eq!(
        parse_host_key(&format!("  {line}  ")).expect("parses").0,
        line
    );
    for bad in [
        "",
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        "not a key",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ] {
        let v = parse_host_key(bad).expect_err(bad);
        assert_eq!(v.field, "host-key");
    }
    let known_hosts = format!("dev1.internal {KEY1}");
    let v = parse_host_key(&known_hosts).expect_err("host name in front");
    assert!(v.detail.contains("known_hosts"), "{}", v.detail);
}

fn vault() -> (tempfile::TempDir, Vault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vault = Vault::open(&dir.path().join("data"), Limits::default()).expect("vault");
    let os = crate::osuser::current().expect("os user").name;
    for name in ["alice", "bob", "carol"] {
        let spec = NewUserSpec {
            name: name.into(),
            os_user: Some(os.clone()),
            ..NewUserSpec::default()
        };
        vault.add_user(&Actor::System, &spec).expect("user");
    }
    (dir, vault)
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

#[test]
fn routes_only_for_granted_users_with_the_login_in_effect() {
    let (_dir, mut vault) = vault();
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

#[test]
fn bad_specs_name_every_field_and_store_nothing() {
    let (_dir, mut vault) = vault();
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

#[test]
fn announced_keys_are_added_once_and_audited() {
    let (_dir, mut vault) = vault();
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

#[test]
fn pinning_replaces_every_key_in_one_audited_change() {
    let (_dir, mut vault) = vault();
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
