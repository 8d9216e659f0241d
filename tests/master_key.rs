//! The master key and the data dir through the real binary: a missing or wrong key is a clear
//! error naming the key id the data needs that changes nothing (`serve` included), concurrent
//! first starts agree on one key, a data dir open to others is refused, and rotation works
//! with a key file and with `KEYPORT_MASTER_KEY`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::output::{error_line, mode, stderr};
use common::{Sandbox, dump, me};

#[test]
fn a_missing_or_wrong_master_key_is_a_clear_error_that_changes_nothing() {
    let sb = Sandbox::new();
    sb.ok(&["user", "add", "alice", "--os-user", &me().name]);
    let key_file = sb.data().join("master.key");
    let saved = std::fs::read(&key_file).unwrap();
    // The id of the key the data is sealed under: every message must name it.
    let needed = keyport_keys::MasterKey::from_base64(std::str::from_utf8(&saved).unwrap().trim())
        .unwrap()
        .id();
    let before = dump(&sb.db());

    std::fs::remove_file(&key_file).unwrap();
    let out = sb.run(&["user", "list"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("the master key is missing")
            && line.contains(&format!("sealed under key {needed}"))
            && line.contains("nothing was changed"),
        "{line}"
    );
    assert!(
        !key_file.exists(),
        "a new key must not be made when data is sealed"
    );
    assert_eq!(dump(&sb.db()), before);

    let other = keyport_keys::MasterKey::generate().unwrap();
    let out = sb
        .keyport()
        .args(["user", "list"])
        .env("KEYPORT_MASTER_KEY", other.to_base64().as_str())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let line = error_line(&out);
    assert!(
        line.contains("wrong master key")
            && line.contains(&format!("sealed under key {needed}"))
            && line.contains(&format!("KEYPORT_MASTER_KEY is {}", other.id())),
        "{line}"
    );
    assert!(
        !line.contains(other.to_base64().as_str()),
        "the key itself is never printed"
    );

    std::fs::write(&key_file, other.to_base64().as_bytes()).unwrap();
    let out = sb.run(&["user", "list"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        error_line(&out).contains("wrong master key"),
        "{}",
        error_line(&out)
    );

    let out = sb
        .keyport()
        .args(["user", "list"])
        .env("KEYPORT_MASTER_KEY", "c2hvcnQ=")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(
        error_line(&out)
            .contains("KEYPORT_MASTER_KEY: master key must be base64 of exactly 32 bytes")
    );

    // `serve` too stops at start with the same message, before it listens or changes a thing.
    std::fs::remove_file(&key_file).unwrap();
    let out = sb
        .keyport()
        .args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("the master key is missing")
            && line.contains(&format!("sealed under key {needed}")),
        "{line}"
    );
    assert!(!stderr(&out).contains("keyport ready"), "{}", stderr(&out));
    assert!(!key_file.exists(), "serve made a new key over sealed data");

    assert_eq!(dump(&sb.db()), before);
    std::fs::write(&key_file, &saved).unwrap();
    assert!(sb.ok(&["user", "list"]).contains("alice"));
}

#[test]
fn concurrent_first_starts_agree_on_one_master_key() {
    let sb = Sandbox::new();
    let os = me().name;
    let children: Vec<_> = (0..6)
        .map(|i| {
            sb.keyport()
                .args(["user", "add", &format!("u{i}"), "--os-user", &os])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Rotation opens every sealed blob: it fails if any was sealed under a key not on disk.
    let said = sb.ok(&["admin", "rotate-master-key"]);
    assert!(said.starts_with("re-sealed 6 values"), "{said}");
}

#[test]
fn a_data_dir_open_to_others_is_refused_not_changed() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.data()).unwrap();
    std::fs::set_permissions(sb.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sb.run(&["user", "list"]);
    assert_eq!(out.status.code(), Some(7));
    let line = error_line(&out);
    assert!(
        line.contains("open to group or others (mode 0755)") && line.contains("chmod 700"),
        "{line}"
    );
    assert_eq!(
        mode(&sb.data()),
        0o755,
        "keyport must not chmod a dir it did not create"
    );
    assert_eq!(
        std::fs::read_dir(sb.data()).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn master_key_from_env_and_its_rotation() {
    let sb = Sandbox::new();
    let old = keyport_keys::MasterKey::generate().unwrap();
    let new = keyport_keys::MasterKey::generate().unwrap();
    let with = |key: &keyport_keys::MasterKey, args: &[&str]| {
        sb.keyport()
            .args(args)
            .env("KEYPORT_MASTER_KEY", key.to_base64().as_str())
            .output()
            .unwrap()
    };
    assert!(
        with(&old, &["user", "add", "alice", "--os-user", &me().name])
            .status
            .success()
    );
    assert!(
        !sb.data().join("master.key").exists(),
        "no key file when the key is in env"
    );

    let out = with(&old, &["admin", "rotate-master-key"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        error_line(&out).contains("KEYPORT_NEW_MASTER_KEY"),
        "{}",
        error_line(&out)
    );

    let out = sb
        .keyport()
        .args(["admin", "rotate-master-key"])
        .env("KEYPORT_MASTER_KEY", old.to_base64().as_str())
        .env("KEYPORT_NEW_MASTER_KEY", new.to_base64().as_str())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "under master key {} (retired {})",
            new.id(),
            old.id()
        )),
        "{said}"
    );
    assert_eq!(with(&old, &["user", "list"]).status.code(), Some(7));
    let out = with(&new, &["key", "show", "--user", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn rotate_master_key_with_a_key_file() {
    let sb = Sandbox::new();
    sb.ok(&["user", "add", "alice", "--os-user", &me().name]);
    let before = std::fs::read_to_string(sb.data().join("master.key")).unwrap();
    let key = sb.ok(&["key", "show", "--user", "alice"]);
    let said = sb.ok(&["admin", "rotate-master-key"]);
    assert!(said.starts_with("re-sealed 1 values"), "{said}");
    let after = std::fs::read_to_string(sb.data().join("master.key")).unwrap();
    assert_ne!(before, after);
    assert_eq!(mode(&sb.data().join("master.key")), 0o600);
    assert_eq!(sb.ok(&["key", "show", "--user", "alice"]), key);
}
