//! The store conformance suite, through the vault: every case runs on a real SQLite file and
//! on a real PostgreSQL database (`on_sqlite`, `on_postgres`). Secret operations and their
//! audit trail, PATCH semantics, rules enforced with state untouched on rejection, sealing
//! bound to the owner, users, tokens, and master key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::conformance::{Raw, stored};
use common::{Sandbox, add_user, me};
use keyport::secrets::{Limits, SecretPatch, SecretSpec};
use keyport::vault::{Actor, NewUserSpec, VaultError};
use keyport_keys::{KeyType, SecretBytes};

fn spec(name: &str, value: &str, env: Option<&str>, file: Option<&str>) -> SecretSpec {
    SecretSpec {
        source: None,
        required: false,
        name: name.into(),
        value: SecretBytes::from(value),
        description: String::new(),
        env: env.map(Into::into),
        file: file.map(Into::into),
        enabled: None,
        lifecycle: Default::default(),
    }
}

fn alice() -> Actor {
    Actor::User("alice".into())
}

fn fields(e: &VaultError) -> Vec<&str> {
    match e {
        VaultError::Invalid(v) | VaultError::Conflict(v) => {
            v.iter().map(|v| v.field.as_ref()).collect()
        }
        other => panic!("expected a rule violation, got {other:?}"),
    }
}

fn create_get_list_update_delete_with_audit_and_no_values_anywhere(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    let value = "ghp_SuperSecretValue123";
    let created = v
        .create_secret(
            &alice(),
            "alice",
            &spec("gh", value, Some("GH_TOKEN"), None),
        )
        .unwrap();
    assert!(
        created.enabled,
        "a secret with a target is enabled by default"
    );
    assert_eq!(created.env.as_deref(), Some("GH_TOKEN"));
    assert_eq!(
        v.secret_value("alice", "gh").unwrap().expose(),
        value.as_bytes()
    );

    let no_target = v
        .create_secret(&alice(), "alice", &spec("later", "x", None, None))
        .unwrap();
    assert!(
        !no_target.enabled,
        "a secret without a target starts disabled"
    );

    let names: Vec<_> = v
        .secrets("alice")
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["gh", "later"], "sorted by name");

    let new_value = "ghp_RotatedValue456";
    let updated = v
        .update_secret(
            &alice(),
            "alice",
            "gh",
            &SecretPatch {
                value: Some(SecretBytes::from(new_value)),
                description: Some("GitHub".into()),
                ..SecretPatch::default()
            },
        )
        .unwrap();
    assert_eq!(updated.description, "GitHub");
    assert_eq!(
        updated.env.as_deref(),
        Some("GH_TOKEN"),
        "absent field unchanged"
    );
    assert_eq!(
        v.secret_value("alice", "gh").unwrap().expose(),
        new_value.as_bytes()
    );

    v.delete_secret(&alice(), "alice", "gh").unwrap();
    assert!(matches!(
        v.secret("alice", "gh"),
        Err(VaultError::NotFound { .. })
    ));
    assert!(matches!(
        v.delete_secret(&alice(), "alice", "gh"),
        Err(VaultError::NotFound { .. })
    ));

    let events = v.store().audit_events(Some("alice"), 0).unwrap();
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.add",
            "secret.create",
            "secret.create",
            "secret.update",
            "secret.delete"
        ]
    );
    let update = &events[3];
    assert_eq!(update.secret_name.as_deref(), Some("gh"));
    assert_eq!(
        update.detail["fields"],
        serde_json::json!(["value", "description"])
    );
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(value) && !all.contains(new_value), "{all}");
}

fn patch_clears_with_empty_string_and_checks_the_result(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    let mut s = spec("npm", "tok", Some("NPM_TOKEN"), Some("~/.npmrc"));
    s.description = "npm".into();
    v.create_secret(&alice(), "alice", &s).unwrap();

    let cleared = v
        .update_secret(
            &alice(),
            "alice",
            "npm",
            &SecretPatch {
                env: Some(String::new()),
                description: Some(String::new()),
                ..SecretPatch::default()
            },
        )
        .unwrap();
    assert_eq!(cleared.env, None);
    assert_eq!(cleared.description, "");
    assert_eq!(cleared.file.as_deref(), Some("~/.npmrc"));

    // Clearing the last target of an enabled secret while asking for it enabled breaks
    // "enabled ⇒ target", and changes nothing.
    let before = Raw::open(sb).dump(sb);
    let err = v
        .update_secret(
            &alice(),
            "alice",
            "npm",
            &SecretPatch {
                file: Some(String::new()),
                enabled: Some(true),
                ..SecretPatch::default()
            },
        )
        .unwrap_err();
    assert_eq!(fields(&err), ["enabled"]);
    assert_eq!(Raw::open(sb).dump(sb), before);

    // …but together with disabling it is fine.
    let off = v
        .update_secret(
            &alice(),
            "alice",
            "npm",
            &SecretPatch {
                file: Some(String::new()),
                enabled: Some(false),
                ..SecretPatch::default()
            },
        )
        .unwrap();
    assert!(!off.enabled && off.file.is_none());

    let err = v
        .update_secret(&alice(), "alice", "npm", &SecretPatch::default())
        .unwrap_err();
    assert_eq!(fields(&err), ["body"], "at least one field");
}

fn binary_file_value_round_trips_and_cannot_become_an_env_var(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    let binary = vec![0u8, 159, 146, 150, 255, b'\r', b'\n', 0];
    let mut s = spec("blob", "", None, Some("~/.blob"));
    s.value = SecretBytes::new(binary.clone());
    v.create_secret(&alice(), "alice", &s).unwrap();
    assert_eq!(
        v.secret_value("alice", "blob").unwrap().expose(),
        &binary[..]
    );

    let before = Raw::open(sb).dump(sb);
    let err = v
        .update_secret(
            &alice(),
            "alice",
            "blob",
            &SecretPatch {
                env: Some("BLOB".into()),
                ..SecretPatch::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        fields(&err),
        ["value"],
        "a NUL byte cannot go into the environment"
    );
    assert_eq!(Raw::open(sb).dump(sb), before);
}

/// Every rule, through the vault: each rejection names its field and changes nothing.
fn every_bad_input_is_rejected_and_leaves_state_as_it_was(sb: &Sandbox) {
    let mut v = sb.vault_with(Limits {
        max_secrets: 3,
        max_total_value_bytes: 131_072,
        max_env_bytes: 100_000,
    });
    add_user(&mut v, "alice");
    v.create_secret(
        &alice(),
        "alice",
        &spec("gh", "v", Some("GH_TOKEN"), Some("~/.gh")),
    )
    .unwrap();
    v.create_secret(
        &alice(),
        "alice",
        &spec("big", &"x".repeat(65_536), None, Some("/tmp/kp-big")),
    )
    .unwrap();
    let home = me().home;
    let big = "x".repeat(65_537);
    let long_path = format!("/{}", "a".repeat(4096));
    let cases: Vec<(SecretSpec, &[&str])> = vec![
        (spec("", "v", None, None), &["name"]),
        (spec("-x", "v", None, None), &["name"]),
        (spec(&"n".repeat(65), "v", None, None), &["name"]),
        (spec("a b", "v", None, None), &["name"]),
        (spec("x", "v", Some("1BAD"), None), &["env"]),
        (spec("x", "v", Some("PATH"), None), &["env"]),
        (spec("x", "v", Some("ld_preload"), None), &["env"]),
        (spec("x", "v", Some("Xdg_Runtime_Dir"), None), &["env"]),
        (
            spec("x", "v", Some(&format!("A{}", "B".repeat(256))), None),
            &["env"],
        ),
        (spec("x", "v", None, Some("relative")), &["file"]),
        (spec("x", "v", None, Some("~/a/../b")), &["file"]),
        (spec("x", "v", None, Some("~/dir/")), &["file"]),
        (spec("x", "v", None, Some("/a//b")), &["file"]),
        (spec("x", "v", None, Some(&long_path)), &["file"]),
        (spec("x", "", None, Some("~/f")), &["value"]),
        (spec("x", &big, None, Some("~/f")), &["value"]),
        (spec("x", "a\0b", Some("NUL_VAL"), None), &["value"]),
        // conflicts with the existing secret
        (spec("gh", "v", None, None), &["name"]),
        (spec("x", "v", Some("gh_token"), None), &["env"]),
        (
            spec("x", "v", None, Some(&format!("{home}/.gh"))),
            &["file"],
        ),
        (spec("x", "v", None, Some("~/.gh/inner")), &["file"]),
        // total value limit: 1 + 65536 stored, + 65536 = 131073, one over 131072
        (
            spec("x", &"y".repeat(65_536), None, Some("~/y")),
            &["value"],
        ),
        // several problems at once are all reported
        (
            spec("-x", "", Some("PATH"), Some("rel")),
            &["name", "env", "file", "value"],
        ),
    ];
    let mut enabled_without_target = spec("x", "v", None, None);
    enabled_without_target.enabled = Some(true);
    let mut desc = spec("x", "v", None, None);
    desc.description = "d".repeat(1025);
    let cases = cases.into_iter().chain([
        (enabled_without_target, &["enabled"][..]),
        (desc, &["description"][..]),
    ]);

    let before = Raw::open(sb).dump(sb);
    for (bad, want) in cases {
        let err = v.create_secret(&alice(), "alice", &bad).unwrap_err();
        assert_eq!(fields(&err), want, "secret {:?}", bad.name);
        assert!(!err.to_string().is_empty());
        assert_eq!(
            Raw::open(sb).dump(sb),
            before,
            "state changed after rejecting {:?}",
            bad.name
        );
    }

    // At the count limit: the third is accepted, a fourth refused.
    v.create_secret(&alice(), "alice", &spec("third", "v", None, None))
        .unwrap();
    let before = Raw::open(sb).dump(sb);
    let err = v
        .create_secret(&alice(), "alice", &spec("fourth", "v", None, None))
        .unwrap_err();
    assert_eq!(fields(&err), ["name"]);
    assert!(err.to_string().contains("limit"), "{err}");
    assert_eq!(Raw::open(sb).dump(sb), before);

    // Bad patches change nothing either.
    for patch in [
        SecretPatch {
            env: Some("HOME".into()),
            ..SecretPatch::default()
        },
        SecretPatch {
            file: Some("~/../x".into()),
            ..SecretPatch::default()
        },
        SecretPatch {
            value: Some(SecretBytes::from("")),
            ..SecretPatch::default()
        },
        SecretPatch {
            description: Some("a\u{7}".into()),
            ..SecretPatch::default()
        },
        SecretPatch {
            file: Some("/tmp/kp-big".into()),
            ..SecretPatch::default()
        },
    ] {
        assert!(
            v.update_secret(&alice(), "alice", "gh", &patch).is_err(),
            "{patch:?}"
        );
        assert_eq!(Raw::open(sb).dump(sb), before, "{patch:?}");
    }
    assert!(matches!(
        v.update_secret(
            &alice(),
            "alice",
            "nope",
            &SecretPatch {
                enabled: Some(false),
                ..SecretPatch::default()
            }
        ),
        Err(VaultError::NotFound { .. })
    ));
    assert!(matches!(
        v.create_secret(&alice(), "nobody", &spec("x", "v", None, None)),
        Err(VaultError::NotFound { .. })
    ));
    assert_eq!(Raw::open(sb).dump(sb), before);
}

fn env_limit_at_the_boundary_through_the_vault(sb: &Sandbox) {
    // "A=" + 8 = 10 bytes, "B=" + 8 = 10 bytes.
    let mut v = sb.vault_with(Limits {
        max_env_bytes: 20,
        ..Limits::default()
    });
    add_user(&mut v, "alice");
    v.create_secret(&alice(), "alice", &spec("a", "12345678", Some("A"), None))
        .unwrap();
    let err = v
        .create_secret(&alice(), "alice", &spec("b", "123456789", Some("B"), None))
        .unwrap_err();
    assert_eq!(fields(&err), ["env"]);
    v.create_secret(&alice(), "alice", &spec("b", "12345678", Some("B"), None))
        .unwrap();
}

fn a_sealed_value_copied_into_another_users_row_does_not_open(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    add_user(&mut v, "bob");
    v.create_secret(
        &alice(),
        "alice",
        &spec("tok", "alice-only", Some("TOK"), None),
    )
    .unwrap();
    v.create_secret(
        &Actor::User("bob".into()),
        "bob",
        &spec("tok", "bobs", Some("TOK"), None),
    )
    .unwrap();
    Raw::open(sb).execute(
        "UPDATE secrets SET value_sealed = (SELECT s.value_sealed FROM secrets s
             JOIN users u ON u.id = s.user_id WHERE u.name = 'alice')
         WHERE user_id = (SELECT id FROM users WHERE name = 'bob')",
    );
    let err = v.secret_value("bob", "tok").unwrap_err();
    assert!(
        matches!(err, VaultError::Seal(keyport_keys::SealError::Unauthentic)),
        "{err:?}"
    );
    assert!(!err.to_string().contains("alice-only"));
    assert_eq!(
        v.secret_value("alice", "tok").unwrap().expose(),
        b"alice-only"
    );
}

fn user_keys_both_types_and_regeneration(sb: &Sandbox) {
    let mut v = sb.vault();
    for (name, kind) in [("ed", KeyType::Ed25519), ("ec", KeyType::EcdsaP256)] {
        v.add_user(
            &Actor::System,
            &NewUserSpec {
                name: name.into(),
                os_user: Some(me().name),
                key_type: kind,
                ..NewUserSpec::default()
            },
        )
        .unwrap();
        let info = v.user_key(name).unwrap();
        assert_eq!(info.algorithm, kind.as_str());
        let pair = v.open_user_key(name).unwrap();
        assert_eq!(pair.fingerprint(), info.fingerprint);
        assert_eq!(pair.public_line().unwrap(), info.public_key);
    }
    let old = v.user_key("ed").unwrap();
    let new = v
        .regenerate_user_key(&Actor::System, "ed", Some(KeyType::EcdsaP256))
        .unwrap();
    assert_ne!(old.fingerprint, new.fingerprint);
    assert_eq!(new.algorithm, "ecdsa-p256");
    assert_eq!(
        v.open_user_key("ed").unwrap().fingerprint(),
        new.fingerprint
    );
    let events = v.store().audit_events(Some("ed"), 0).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.action, "key.regenerate");
    assert_eq!(last.detail["old_fingerprint"], old.fingerprint.as_str());
}

fn removing_a_user_removes_their_secrets_keys_and_tokens(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    add_user(&mut v, "bob");
    v.create_secret(&alice(), "alice", &spec("a", "v", Some("A"), None))
        .unwrap();
    v.create_token(&Actor::System, "alice", "laptop").unwrap();
    v.remove_user(&Actor::cli(), "alice").unwrap();
    let mut raw = Raw::open(sb);
    for table in ["secrets", "user_keys", "login_keys", "api_tokens"] {
        let n = raw.count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE user_id NOT IN (SELECT id FROM users)"
        ));
        assert_eq!(n, 0, "{table} kept rows of a removed user");
    }
    assert_eq!(v.users().unwrap().len(), 1);
    let events = v.store().audit_events(Some("alice"), 0).unwrap();
    assert_eq!(events.last().unwrap().action, "user.remove");
    assert!(matches!(
        v.remove_user(&Actor::cli(), "alice"),
        Err(VaultError::NotFound { .. })
    ));
}

fn tokens_are_stored_hashed(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    let issued = v.create_token(&Actor::System, "alice", "laptop").unwrap();
    assert!(issued.token.starts_with("kpt_") && issued.token.len() > 40);
    assert!(!format!("{issued:?}").contains(issued.token.as_str()));
    drop(v);
    let everything = Raw::open(sb).everything(sb);
    assert!(!stored(&everything, issued.token.as_bytes()));
    let mut v = sb.vault();
    let err = v
        .create_token(&Actor::System, "alice", "laptop")
        .unwrap_err();
    assert!(matches!(err, VaultError::Conflict(_)), "{err:?}");
}

fn rotation_reseals_everything_and_the_retired_key_opens_nothing(sb: &Sandbox) {
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    v.host_key().unwrap();
    v.create_secret(&alice(), "alice", &spec("a", "value-a", Some("A"), None))
        .unwrap();
    let old_text = std::fs::read_to_string(sb.data().join("master.key")).unwrap();
    let old = keyport_keys::MasterKey::from_base64(&old_text).unwrap();
    let fingerprint = v.user_key("alice").unwrap().fingerprint;

    let r = v.rotate_master_key(&Actor::cli()).unwrap();
    assert_eq!(r.resealed, 3, "secret value, user key, host key");
    assert_eq!(r.old_id, old.id());
    assert!(!sb.data().join("master.key.next").exists());
    assert_eq!(v.secret_value("alice", "a").unwrap().expose(), b"value-a");
    drop(v);

    // A fresh open uses the new key file and everything opens.
    let v = sb.vault();
    assert!(!v.uses_key(&old));
    assert_eq!(v.secret_value("alice", "a").unwrap().expose(), b"value-a");
    assert_eq!(v.open_user_key("alice").unwrap().fingerprint(), fingerprint);

    // No stored blob opens with the retired key — not even with its header rewritten to
    // name the retired key, so the ciphertext itself is the new key's. The new key opens each
    // one with its own binding, which shows the bindings are right.
    let new_text = std::fs::read_to_string(sb.data().join("master.key")).unwrap();
    let new = keyport_keys::MasterKey::from_base64(&new_text).unwrap();
    let blobs = Raw::open(sb).blobs(
        "SELECT CAST('secret' AS text), CAST(user_id AS TEXT), name, value_sealed FROM secrets
         UNION ALL SELECT 'user-key', CAST(user_id AS TEXT), '', private_sealed FROM user_keys
         UNION ALL SELECT 'host-key', 'host', algorithm, private_sealed FROM host_keys",
    );
    assert_eq!(blobs.len(), 3);
    let old_id: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&old.id()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for (purpose, owner, item, blob) in &blobs {
        let binding = keyport_keys::Binding {
            purpose,
            owner,
            item,
        };
        assert_eq!(keyport_keys::seal::blob_key_id(blob).unwrap(), r.new_id);
        assert!(
            new.unseal(binding, blob).is_ok(),
            "{purpose} does not open with the new key"
        );
        let mut forged = blob.clone();
        forged[1..9].copy_from_slice(&old_id);
        assert_eq!(
            old.unseal(binding, &forged).unwrap_err(),
            keyport_keys::SealError::Unauthentic,
            "{purpose} still opens with the retired key"
        );
    }
}

fn a_process_holding_a_retired_key_cannot_write_sealed_data(sb: &Sandbox) {
    let mut a = sb.vault();
    add_user(&mut a, "alice");
    let mut b = sb.vault();
    b.rotate_master_key(&Actor::cli()).unwrap();
    let before = Raw::open(sb).dump(sb);
    let err = a
        .create_secret(&alice(), "alice", &spec("x", "v", Some("X"), None))
        .unwrap_err();
    assert!(
        err.to_string().contains("rotated by another process"),
        "{err}"
    );
    let err = a.regenerate_user_key(&alice(), "alice", None).unwrap_err();
    assert!(
        err.to_string().contains("rotated by another process"),
        "{err}"
    );
    assert_eq!(Raw::open(sb).dump(sb), before);
    // A fresh open picks up the new key and works.
    let mut a = sb.vault();
    a.create_secret(&alice(), "alice", &spec("x", "v", Some("X"), None))
        .unwrap();
}

fn an_interrupted_rotation_is_finished_or_undone_at_the_next_open(sb: &Sandbox) {
    // Crash after writing master.key.next but before the re-seal committed: the next key is
    // dropped and the old one stays.
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    v.create_secret(&alice(), "alice", &spec("a", "value-a", Some("A"), None))
        .unwrap();
    let id = v.master_key_id();
    drop(v);
    let stray = keyport_keys::MasterKey::generate().unwrap();
    std::fs::write(
        sb.data().join("master.key.next"),
        stray.to_base64().as_bytes(),
    )
    .unwrap();
    let v = sb.vault();
    assert_eq!(v.master_key_id(), id);
    assert!(!sb.data().join("master.key.next").exists());
    drop(v);

    // Crash after the commit but before the rename: the next key is moved into place.
    let mut v = sb.vault();
    v.rotate_master_key(&Actor::cli()).unwrap();
    let new_id = v.master_key_id();
    drop(v);
    let key = sb.data().join("master.key");
    std::fs::rename(&key, sb.data().join("master.key.next")).unwrap();
    let old = keyport_keys::MasterKey::generate().unwrap();
    std::fs::write(&key, old.to_base64().as_bytes()).unwrap();
    let v = sb.vault();
    assert_eq!(v.master_key_id(), new_id);
    assert_eq!(v.secret_value("alice", "a").unwrap().expose(), b"value-a");
}

conformance!(
    create_get_list_update_delete_with_audit_and_no_values_anywhere,
    patch_clears_with_empty_string_and_checks_the_result,
    binary_file_value_round_trips_and_cannot_become_an_env_var,
    every_bad_input_is_rejected_and_leaves_state_as_it_was,
    env_limit_at_the_boundary_through_the_vault,
    a_sealed_value_copied_into_another_users_row_does_not_open,
    user_keys_both_types_and_regeneration,
    removing_a_user_removes_their_secrets_keys_and_tokens,
    tokens_are_stored_hashed,
    rotation_reseals_everything_and_the_retired_key_opens_nothing,
    a_process_holding_a_retired_key_cannot_write_sealed_data,
    an_interrupted_rotation_is_finished_or_undone_at_the_next_open,
);
