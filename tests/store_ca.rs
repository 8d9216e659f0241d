//! The store conformance suite, part three: keyport's user CAs (one per state, ids never
//! reused, the private half only sealed, rotation's fallback, every certificate audited), each
//! case on a real SQLite file and on a real PostgreSQL database (`on_sqlite`, `on_postgres`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sandbox;
use keyport::vault::*;
use keyport::vault::{NewUserSpec, SessionUser};
use keyport_keys::{KeyPair, KeyType};

fn ca_vault(sb: &Sandbox) -> (Vault, SessionUser) {
    let mut vault = sb.vault();
    let spec = NewUserSpec {
        name: "alice".into(),
        os_user: Some(keyport::osuser::current().expect("os user").name),
        ..NewUserSpec::default()
    };
    vault.add_user(&Actor::System, &spec).expect("user");
    let user = SessionUser {
        id: vault.user("alice").expect("alice").id,
        name: "alice".into(),
    };
    (vault, user)
}

fn order(user: &SessionUser, signing: Signing) -> CertOrder {
    let subject = KeyPair::generate(KeyType::Ed25519, "").unwrap();
    CertOrder {
        user: user.clone(),
        workspace_id: 1,
        workspace: "dev1".into(),
        login: "dev".into(),
        subject: subject.private().public_key().clone(),
        signing,
        connection: "c0ffee00".into(),
        settings: keyport::config::CaSettings {
            gateway: Some("gw1".into()),
            ..Default::default()
        },
        now: 1_800_000_000,
    }
}

fn states(vault: &Vault) -> Vec<(String, String)> {
    vault
        .user_cas()
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect()
}

fn pair(id: &str, state: &str) -> (String, String) {
    (id.to_string(), state.to_string())
}

fn rotate_promote_retire_keep_one_ca_per_state_and_never_reuse_an_id(sb: &Sandbox) {
    let (mut v, _) = ca_vault(sb);
    let actor = Actor::System;
    assert!(
        v.rotate_user_ca(&actor, KeyType::Ed25519).is_err(),
        "nothing to rotate"
    );
    let (cas, made) = v.ensure_user_ca(&actor).unwrap();
    assert!(made && cas.len() == 1 && cas[0].algorithm == "ed25519");
    assert!(!v.ensure_user_ca(&actor).unwrap().1, "made once");
    assert!(matches!(
        v.init_user_ca(&actor, KeyType::EcdsaP256),
        Err(VaultError::Conflict(_))
    ));
    assert!(v.promote_user_ca(&actor).is_err(), "no next CA");
    let next = v.rotate_user_ca(&actor, KeyType::EcdsaP256).unwrap();
    assert_eq!(
        (next.id.as_str(), next.algorithm.as_str()),
        ("ca2", "ecdsa-p256")
    );
    assert!(next.public_key.starts_with("ecdsa-sha2-nistp256 "));
    assert!(
        v.rotate_user_ca(&actor, KeyType::Ed25519).is_err(),
        "one next at a time"
    );
    v.promote_user_ca(&actor).unwrap();
    assert_eq!(states(&v), [pair("ca2", "active"), pair("ca1", "previous")]);
    v.rotate_user_ca(&actor, KeyType::Ed25519).unwrap();
    assert!(
        v.promote_user_ca(&actor).is_err(),
        "retire the previous one first"
    );
    assert!(
        v.retire_user_ca(&actor, Some("ca2")).is_err(),
        "never the active one"
    );
    v.retire_user_ca(&actor, None).unwrap();
    assert_eq!(states(&v), [pair("ca2", "active"), pair("ca3", "next")]);
    // Abandoning a rotation: the next id is not given again.
    v.retire_user_ca(&actor, Some("ca3")).unwrap();
    assert_eq!(
        v.rotate_user_ca(&actor, KeyType::Ed25519).unwrap().id,
        "ca4"
    );
    let actions: Vec<String> = v
        .store()
        .audit_events(None, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("ca."))
        .collect();
    assert_eq!(
        actions,
        [
            "ca.create",
            "ca.rotate",
            "ca.promote",
            "ca.rotate",
            "ca.retire",
            "ca.retire",
            "ca.rotate"
        ]
    );
}

fn certificates_come_from_the_active_ca_or_the_previous_one_and_are_audited(sb: &Sandbox) {
    let (mut v, alice) = ca_vault(sb);
    let actor = Actor::System;
    assert!(
        v.sign_upstream_certificate(&order(&alice, Signing::Active))
            .unwrap()
            .is_none(),
        "no CA, no certificate"
    );
    v.ensure_user_ca(&actor).unwrap();
    assert!(
        v.sign_upstream_certificate(&order(&alice, Signing::Fallback))
            .unwrap()
            .is_none(),
        "no previous CA to fall back to"
    );
    let signed = v
        .sign_upstream_certificate(&order(&alice, Signing::Active))
        .unwrap()
        .unwrap();
    assert_eq!(signed.ca, "ca1");
    assert_eq!(signed.key_id, "keyport:gw1:alice:dev1:c0ffee00");
    assert_eq!(signed.certificate.valid_principals(), ["dev".to_string()]);
    v.rotate_user_ca(&actor, KeyType::Ed25519).unwrap();
    v.promote_user_ca(&actor).unwrap();
    let active = v
        .sign_upstream_certificate(&order(&alice, Signing::Active))
        .unwrap()
        .unwrap();
    let fallback = v
        .sign_upstream_certificate(&order(&alice, Signing::Fallback))
        .unwrap()
        .unwrap();
    assert_eq!((active.ca.as_str(), fallback.ca.as_str()), ("ca2", "ca1"));
    let events: Vec<_> = v
        .store()
        .audit_events(Some("alice"), 0)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "ca.certificate")
        .collect();
    assert_eq!(events.len(), 3);
    let last = &events[2].detail;
    assert_eq!(last["serial"], fallback.serial.to_string());
    assert_eq!(last["ca"], "ca1");
    assert_eq!(last["login"], "dev");
    assert_eq!(last["valid_after"], 1_800_000_000 - 300);
    assert_eq!(last["valid_before"], 1_800_000_000 + 300);
    // A removed user gets no certificate.
    v.remove_user(&actor, "alice").unwrap();
    assert!(
        v.sign_upstream_certificate(&order(&alice, Signing::Active))
            .is_err()
    );
}

fn the_ca_is_stored_sealed_and_survives_a_master_key_rotation(sb: &Sandbox) {
    let (mut v, alice) = ca_vault(sb);
    v.ensure_user_ca(&Actor::System).unwrap();
    let record = v.store().user_ca_in("active").unwrap().unwrap();
    // The sealed blob is not the key's OpenSSH encoding (which starts with its type name).
    assert!(
        !record
            .private_sealed
            .windows(11)
            .any(|w| w == b"ssh-ed25519"),
        "private half stored unsealed"
    );
    drop(v);
    let mut v = sb.vault();
    v.rotate_master_key(&Actor::System).unwrap();
    let signed = v
        .sign_upstream_certificate(&order(&alice, Signing::Active))
        .unwrap()
        .unwrap();
    let fp = russh::keys::PublicKey::from_openssh(&record.public_key)
        .unwrap()
        .fingerprint(Default::default());
    signed
        .certificate
        .validate_at(1_800_000_000, &[fp])
        .unwrap();
}

fn workspaces_on_another_ca_are_named_in_the_status(sb: &Sandbox) {
    let (mut v, _) = ca_vault(sb);
    let actor = Actor::System;
    let spec = keyport::vault::WorkspaceSpec {
        name: "dev1".into(),
        address: "127.0.0.1:22".into(),
        os_user: "dev".into(),
        owners: vec!["alice".into()],
        host_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                .into(),
        ],
        host_key_source: keyport::vault::HostKeySource::Pinned,
        auth: WorkspaceAuth::Ca,
    };
    v.add_workspace(&actor, &spec).unwrap();
    assert_eq!(
        states(&v),
        [pair("ca1", "active")],
        "made for the workspace"
    );
    let status = v.ca_status().unwrap();
    assert_eq!(status.workspaces.len(), 1);
    assert!(status.workspaces[0].last_ca.is_none() && !status.workspaces[0].on_active);
    let id = v.store().workspace("dev1").unwrap().id;
    v.note_workspace_ca(id, "ca1").unwrap();
    assert!(v.ca_status().unwrap().workspaces[0].on_active);
    v.rotate_user_ca(&actor, KeyType::Ed25519).unwrap();
    v.promote_user_ca(&actor).unwrap();
    let status = v.ca_status().unwrap();
    assert_eq!(status.workspaces[0].last_ca.as_deref(), Some("ca1"));
    assert!(!status.workspaces[0].on_active, "on the previous CA");
    v.set_workspace_auth(&actor, "dev1", WorkspaceAuth::Key)
        .unwrap();
    assert!(v.ca_status().unwrap().workspaces.is_empty());
}

conformance!(
    rotate_promote_retire_keep_one_ca_per_state_and_never_reuse_an_id,
    certificates_come_from_the_active_ca_or_the_previous_one_and_are_audited,
    the_ca_is_stored_sealed_and_survives_a_master_key_rotation,
    workspaces_on_another_ca_are_named_in_the_status,
);
