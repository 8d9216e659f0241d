//! Nothing unsealed at rest: the raw bytes of every file in the data dir — database, WAL, shared
//! memory, master key — hold no plaintext secret value, no token and no private key material,
//! whether the WAL has been checkpointed or not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Sandbox, add_user, contains, key_needles};
use keyport::secrets::SecretSpec;
use keyport::vault::{Actor, NewUserSpec};
use keyport_keys::{KeyType, SecretBytes};

fn scan(sb: &Sandbox, needles: &[(String, Vec<u8>)]) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(sb.data()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        assert!(
            !contains(&bytes, b"PRIVATE KEY"),
            "{} holds a PEM private key",
            path.display()
        );
        for (what, needle) in needles {
            assert!(!contains(&bytes, needle), "{} holds {what}", path.display());
        }
    }
    files
}

#[test]
fn data_dir_holds_no_plaintext_values_tokens_or_private_keys() {
    let sb = Sandbox::new();
    let mut v = sb.vault();
    add_user(&mut v, "alice");
    v.add_user(
        &Actor::System,
        &NewUserSpec {
            name: "bob".into(),
            os_user: Some(common::me().name),
            key_type: KeyType::EcdsaP256,
            ..NewUserSpec::default()
        },
    )
    .unwrap();
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, user) in ["alice", "bob"].into_iter().enumerate() {
        for j in 0..20 {
            // Distinctive, and long enough that a chance match is impossible.
            let value = format!("plaintext-canary-{i}-{j}-Zq8RkX2mVt7Lp");
            v.create_secret(
                &Actor::User(user.into()),
                user,
                &SecretSpec {
                    name: format!("s{j}"),
                    value: SecretBytes::from(value.as_str()),
                    description: String::new(),
                    env: Some(format!("S{j}")),
                    file: (j % 2 == 0).then(|| format!("~/.s{i}-{j}")),
                    enabled: None,
                },
            )
            .unwrap();
            needles.push((format!("value {value}"), value.into_bytes()));
        }
        let token = v.create_token(&Actor::System, user, "t").unwrap();
        needles.push(("a token".into(), token.token.as_bytes().to_vec()));
        for needle in key_needles(&v.open_user_key(user).unwrap()) {
            needles.push((format!("{user}'s private key"), needle));
        }
    }
    let host = v.host_key().unwrap();
    for needle in key_needles(&host) {
        needles.push(("the host private key".into(), needle));
    }

    // While open: recent commits are in the WAL, not yet in the main file.
    assert!(sb.data().join("keyport.db-wal").exists());
    assert!(
        scan(&sb, &needles) >= 3,
        "db, wal, shm, master.key expected"
    );

    // After close: checkpointed into the main file.
    drop(v);
    scan(&sb, &needles);

    // And after a rotation re-sealed everything.
    let mut v = sb.vault();
    v.rotate_master_key(&Actor::cli()).unwrap();
    scan(&sb, &needles);
    drop(v);
    scan(&sb, &needles);
}
