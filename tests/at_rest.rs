//! Nothing unsealed at rest: the raw bytes of every file in the data dir — database, WAL, shared
//! memory, master key — hold no plaintext secret value (raw, base64, hex, or the SHA-256 of a
//! file keyport wrote), no token and no private key in any form, whether the WAL has been
//! checkpointed or not, after file secrets went through a real session (so the sealed file
//! ledger has rows), and after a rotation re-sealed it all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::custody::Custody;
use common::{Sandbox, add_user, contains};
use keyport::secrets::SecretSpec;
use keyport::vault::{Actor, NewUserSpec};
use keyport_keys::{KeyType, SecretBytes};

fn scan(sb: &Sandbox, needles: &[(String, Vec<u8>)], keys: &[(String, Custody)]) -> usize {
    let mut files = 0;
    let mut paths = Vec::new();
    let mut dirs = vec![sb.data()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    for path in paths {
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
        for (whose, key) in keys {
            if let Some(form) = key.found_in(&bytes) {
                panic!("{} holds {whose} private key ({form})", path.display());
            }
        }
    }
    files
}

/// A value in every form it could be stored in by mistake: itself, base64, hex, and — for a
/// file keyport wrote — its SHA-256 (what the file ledger seals), raw and hex.
fn value_forms(value: &str) -> Vec<(String, Vec<u8>)> {
    use sha2::Digest as _;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let digest = sha2::Sha256::digest(value.as_bytes());
    vec![
        (format!("value {value}"), value.as_bytes().to_vec()),
        (
            format!("base64 of {value}"),
            base64::engine::general_purpose::STANDARD
                .encode(value)
                .into_bytes(),
        ),
        (
            format!("hex of {value}"),
            hex(value.as_bytes()).into_bytes(),
        ),
        (format!("SHA-256 of {value}"), digest.to_vec()),
        (format!("SHA-256 hex of {value}"), hex(&digest).into_bytes()),
    ]
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
    let mut keys: Vec<(String, Custody)> = Vec::new();
    for (i, user) in ["alice", "bob"].into_iter().enumerate() {
        for j in 0..20 {
            // Distinctive, and long enough that a chance match is impossible.
            let value = format!("plaintext-canary-{i}-{j}-Zq8RkX2mVt7Lp");
            v.create_secret(
                &Actor::User(user.into()),
                user,
                &SecretSpec {
                    source: None,
                    required: false,
                    name: format!("s{j}"),
                    value: SecretBytes::from(value.as_str()),
                    description: String::new(),
                    env: Some(format!("S{j}")),
                    file: (j % 2 == 0).then(|| format!("~/.s{i}-{j}")),
                    enabled: None,
                    lifecycle: Default::default(),
                },
            )
            .unwrap();
            needles.extend(value_forms(&value));
        }
        let token = v.create_token(&Actor::System, user, "t").unwrap();
        needles.push(("a token".into(), token.token.as_bytes().to_vec()));
        keys.push((
            format!("{user}'s"),
            Custody::of(&v.open_user_key(user).unwrap()),
        ));
    }
    keys.push(("the host".into(), Custody::of(&v.host_key().unwrap())));

    // While open: recent commits are in the WAL, not yet in the main file.
    assert!(sb.data().join("keyport.db-wal").exists());
    assert!(
        scan(&sb, &needles, &keys) >= 3,
        "db, wal, shm, master.key expected"
    );

    // After close: checkpointed into the main file.
    drop(v);
    scan(&sb, &needles, &keys);

    // And after a rotation re-sealed everything.
    let mut v = sb.vault();
    v.rotate_master_key(&Actor::cli()).unwrap();
    scan(&sb, &needles, &keys);
    drop(v);
    scan(&sb, &needles, &keys);
}

#[test]
fn file_secrets_written_through_a_session_leave_no_plaintext_in_the_ledger() {
    let (sb, daemon, key, api) = common::ssh_daemon(&[]);
    let dir = sb.dir.path().join("files");
    let mut needles = Vec::new();
    for j in 0..6 {
        let value = format!("file-canary-{j}-Hx3Wq9Lr5Tz");
        let r = api.send(
            "POST",
            "users/me/secrets",
            &serde_json::json!({
                "name": format!("f{j}"), "value": value,
                "file": dir.join(format!("f{j}")).display().to_string(),
            }),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        needles.extend(value_forms(&value));
    }
    let out = daemon
        .ssh(&common::me().name, &key)
        .arg(format!("cat {}/f0", dir.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "file-canary-0-Hx3Wq9Lr5Tz"
    );
    daemon.stop();
    let mut v = sb.vault();
    // The ledger has a row per file (what the scan must find sealed).
    let ledger = common::dump(&sb.db())
        .lines()
        .filter(|l| l.starts_with("secret_files:"))
        .count();
    assert!(
        ledger >= 6,
        "ledger rows: {ledger}\n{}",
        common::dump(&sb.db())
    );
    let user = common::me().name;
    let keys = vec![
        (
            "the user's".to_string(),
            Custody::of(&v.open_user_key(&user).unwrap()),
        ),
        ("the host".to_string(), Custody::of(&v.host_key().unwrap())),
    ];
    scan(&sb, &needles, &keys);
    v.rotate_master_key(&Actor::cli()).unwrap();
    scan(&sb, &needles, &keys);
    drop(v);
    scan(&sb, &needles, &keys);

    // The re-sealed ledger still works: after a restart, a deleted secret's file is removed
    // at the next session, which needs its hash unsealed under the new key and matched.
    let daemon = sb.serve();
    let api = common::Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    assert_eq!(api.delete("users/me/secrets/f1").status, 204);
    let out = daemon
        .ssh(&common::me().name, &key)
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !dir.join("f1").exists(),
        "the re-sealed ledger did not match the file"
    );
    assert!(dir.join("f2").exists());
    drop(daemon);
    scan(&sb, &needles, &keys);
}
