//! File secrets through real SSH sessions: written before the command runs (0700 dirs, 0600
//! files, an existing file's mode kept, unchanged files not rewritten), rewritten on change,
//! removed when deleted, disabled, moved or cleared — only if still what keyport wrote — and
//! written at daemon start for the workspace owner. As root, with two real OS accounts: each
//! gets only their own secrets and files, owned by them, and a planted symlink cannot make
//! keyport write over a root-owned file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::output::mode;
use common::{Daemon, OsAccount, keyport_user, me, require_tool};
use serde_json::json;

use common::ssh_daemon as started;

fn session(daemon: &Daemon, user: &str, key: &Path, command: &str) -> String {
    let out = daemon
        .ssh(user, key)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn files_follow_their_secrets_and_user_edits_are_kept() {
    let (sb, daemon, key, api) = started(&[]);
    let me = me().name;
    let dir = sb.dir.path().join("w");
    let file = dir.join("deep/er/.npmrc");
    let f = file.display().to_string();
    let binary: Vec<u8> = vec![0, 1, 2, 255, b'\n'];
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "npm", "value_base64": "AAEC/wo=", "file": f}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Written before the command runs: the command itself sees it.
    assert_eq!(
        session(&daemon, &me, &key, &format!("od -An -tu1 {f}"))
            .split_whitespace()
            .count(),
        5
    );
    assert_eq!(std::fs::read(&file).unwrap(), binary, "byte-exact");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.join("deep")), 0o700);
    assert_eq!(mode(&dir.join("deep/er")), 0o700);

    // Unchanged: not rewritten — the same inode (an atomic replace makes a new one), the same
    // mtime and ctime to the nanosecond, size and mode.
    let stamp = |m: std::fs::Metadata| {
        (
            m.ino(),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
            m.size(),
            m.mode(),
        )
    };
    let written = stamp(std::fs::metadata(&file).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    session(&daemon, &me, &key, "true");
    assert_eq!(
        stamp(std::fs::metadata(&file).unwrap()),
        written,
        "rewritten though unchanged"
    );

    // Overwritten in place by something else of the same size: put right at the next
    // session (and again after it was deleted).
    std::fs::write(&file, [9u8, 9, 9, 9, 9]).unwrap();
    session(&daemon, &me, &key, "true");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        binary,
        "a changed file was not restored"
    );
    std::fs::remove_file(&file).unwrap();
    session(&daemon, &me, &key, "true");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        binary,
        "a deleted file was not restored"
    );

    // A new value is rewritten; the mode the user chose is kept.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    api.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"value": "npm-second-value"}),
    );
    session(&daemon, &me, &key, "true");
    assert_eq!(std::fs::read(&file).unwrap(), b"npm-second-value");
    assert_eq!(mode(&file), 0o640);

    // Moved: the old file goes, the new one comes.
    let moved = dir.join("moved");
    api.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"file": moved.display().to_string()}),
    );
    session(&daemon, &me, &key, "true");
    assert!(!file.exists(), "old path not removed");
    assert_eq!(std::fs::read(&moved).unwrap(), b"npm-second-value");

    // Disabled, then re-enabled, then the target cleared: removed each time it is unwanted.
    api.send("PATCH", "users/me/secrets/npm", &json!({"enabled": false}));
    session(&daemon, &me, &key, "true");
    assert!(!moved.exists(), "a disabled secret's file stays");
    api.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"enabled": true, "env": "NPM"}),
    );
    session(&daemon, &me, &key, "true");
    assert!(moved.exists());
    api.send("PATCH", "users/me/secrets/npm", &json!({"file": ""}));
    assert_eq!(
        session(&daemon, &me, &key, "printenv NPM"),
        "npm-second-value\n"
    );
    assert!(!moved.exists(), "a cleared target's file stays");

    // A file the user changed is left, and that is audited; so is a removal.
    api.send(
        "PATCH",
        "users/me/secrets/npm",
        &json!({"file": moved.display().to_string()}),
    );
    session(&daemon, &me, &key, "true");
    std::fs::write(&moved, "edited by the user").unwrap();
    assert_eq!(api.delete("users/me/secrets/npm").status, 204);
    session(&daemon, &me, &key, "true");
    assert_eq!(
        std::fs::read_to_string(&moved).unwrap(),
        "edited by the user"
    );
    let audit = api.get("audit").body;
    assert!(
        audit.contains("file.kept-changed") && audit.contains("file.removed"),
        "{audit}"
    );
    assert!(!audit.contains("npm-second-value"), "{audit}");
}

#[test]
fn the_owners_files_are_written_when_the_daemon_starts() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("keyport.toml");
    std::fs::write(&config, format!("owner = \"{}\"\n", me().name)).unwrap();
    let env = [("KEYPORT_CONFIG", config.to_str().unwrap())];
    let (sb, daemon, _key, api) = started(&env);
    let file = sb.dir.path().join("owner/.token");
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "t", "value": "at-start", "file": file.display().to_string()}),
    );
    assert_eq!(r.status, 201);
    assert!(daemon.stop().success());
    // This daemon's own start-up pass may have raced the create and written it already.
    let _ = std::fs::remove_file(&file);
    let _daemon = sb.serve_with(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "the owner's file was not written at start"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "at-start");
}

#[test]
fn as_root_each_os_user_gets_only_their_own_secrets_and_files() {
    if !keyport::testing::needs_root("creates OS accounts") {
        return;
    }
    require_tool("useradd");
    let (sb, daemon, _key, api) = started(&[]);
    let alice = OsAccount::create("kpa");
    let bob = OsAccount::create("kpb");
    let mut tokens = Vec::new();
    for (user, os) in [("alice", &alice), ("bob", &bob)] {
        let (key, h) = keyport_user(&sb, &daemon, &api, user, os);
        let r = h.send("POST", "users/me/secrets", &json!({"name": "s", "value": format!("{user}-value"), "env": "MINE", "file": "~/.kp-secret"}));
        assert_eq!(r.status, 201, "{}", r.body);
        tokens.push((user, os, key, h));
    }
    for (user, os, key, _) in &tokens {
        let out = session(
            &daemon,
            user,
            key,
            "id -un; printenv MINE; cat ~/.kp-secret; echo; echo $HOME",
        );
        assert_eq!(
            out,
            format!(
                "{}\n{user}-value\n{user}-value\n{}\n",
                os.name,
                os.home.display()
            )
        );
        let file = os.home.join(".kp-secret");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (os.uid, 0o600),
            "{user}'s file is theirs"
        );
    }
    // Alice cannot read bob's file.
    let (_, _, alice_key, alice_api) = &tokens[0];
    let bob_file = bob.home.join(".kp-secret");
    let out = daemon
        .ssh("alice", alice_key)
        .arg(format!("cat {}", bob_file.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("bob-value"));

    // A symlink alice plants where her secret's file goes cannot reach root's files.
    let victim = PathBuf::from(format!("/etc/kp-victim-{}", std::process::id()));
    std::fs::write(&victim, "root's data").unwrap();
    let victim_dir = PathBuf::from(format!("/etc/kp-victim-dir-{}", std::process::id()));
    std::fs::create_dir_all(&victim_dir).unwrap();
    session(
        &daemon,
        "alice",
        alice_key,
        &format!(
            "ln -s {} ~/.kp-link && ln -s {} ~/.kp-dir",
            victim.display(),
            victim_dir.display()
        ),
    );
    for (name, file) in [("link", "~/.kp-link"), ("dir", "~/.kp-dir/planted")] {
        let r = alice_api.send(
            "POST",
            "users/me/secrets",
            &json!({"name": name, "value": "alice-data", "file": file}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    session(&daemon, "alice", alice_key, "true");
    let cleanup = || {
        let _ = std::fs::remove_file(&victim);
        let _ = std::fs::remove_dir_all(&victim_dir);
    };
    let victim_text = std::fs::read_to_string(&victim).unwrap();
    let planted = victim_dir.join("planted").exists();
    cleanup();
    assert_eq!(
        victim_text, "root's data",
        "keyport wrote through alice's symlink"
    );
    assert!(
        !planted,
        "keyport wrote into a root-owned directory through alice's symlink"
    );
    // The link itself is alice's (a dotfiles manager's, say): left as it is, and the secret's
    // delivery says why it was not written.
    let link = alice.home.join(".kp-link");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link is left as it is");
    let listed = alice_api.get("users/me/secrets").json();
    let delivery = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "link")
        .map(|s| s["deliveries"][0].clone())
        .unwrap();
    assert_eq!(delivery["outcome"], "failed", "{listed}");
    assert!(
        delivery["reason"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{delivery}"
    );
    let _ = sb;
}

/// Two keyport users on one OS account (a non-root daemon runs every session as itself):
/// each one's sessions apply only their own ledger, so bob's never remove alice's files.
#[test]
fn users_sharing_an_os_account_never_remove_each_others_files() {
    let (sb, daemon, alice_key, alice) = started(&[]);
    let me = me().name;
    let bob_key = sb.client_key("bob_key");
    let bob_pub = std::fs::read_to_string(bob_key.with_extension("pub")).unwrap();
    sb.ok(&[
        "user",
        "add",
        "bob",
        "--os-user",
        &me,
        "--login-key",
        bob_pub.trim(),
    ]);
    let file = sb.dir.path().join("shared/alice.cfg");
    let r = alice.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "cfg", "value": "alice-config-value", "file": file.display().to_string()}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    session(&daemon, &me, &alice_key, "true");
    assert_eq!(std::fs::read(&file).unwrap(), b"alice-config-value");
    // Bob, who has no such secret, logs in: the file is not his to remove.
    session(&daemon, "bob", &bob_key, "true");
    assert!(file.exists(), "bob's session removed alice's file");
    // Alice deletes her secret; bob's session still leaves it, alice's next one removes it.
    assert_eq!(alice.delete("users/me/secrets/cfg").status, 204);
    session(&daemon, "bob", &bob_key, "true");
    assert!(file.exists(), "bob's session applied alice's deletion");
    session(&daemon, &me, &alice_key, "true");
    assert!(!file.exists(), "alice's own session did not remove it");
}

/// As root, a session runs with its OS account's identity, supplementary groups included
/// (initgroups), and none of the daemon's.
#[test]
fn as_root_a_session_has_its_accounts_groups_and_no_others() {
    if !keyport::testing::needs_root("creates OS accounts and a group") {
        return;
    }
    require_tool("groupadd");
    let (sb, daemon, _key, api) = started(&[]);
    let account = OsAccount::create("kpgr");
    let group = format!("{}x", account.name);
    let status = std::process::Command::new("groupadd")
        .arg(&group)
        .status()
        .unwrap();
    assert!(status.success(), "groupadd {group}");
    let status = std::process::Command::new("usermod")
        .args(["-aG", &group, &account.name])
        .status()
        .unwrap();
    assert!(status.success(), "usermod -aG");
    let gid = nix::unistd::Group::from_name(&group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let (login, _) = keyport_user(&sb, &daemon, &api, "grp", &account);
    let out = session(&daemon, "grp", &login, "id -u; id -g; id -G");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(account.uid.to_string().as_str()),
        "{out}"
    );
    assert_eq!(
        lines.next(),
        Some(account.gid.to_string().as_str()),
        "{out}"
    );
    let groups: std::collections::BTreeSet<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    let want: std::collections::BTreeSet<u32> = [account.gid, gid].into_iter().collect();
    assert_eq!(groups, want, "{out}");
    let _ = std::process::Command::new("groupdel").arg(&group).status();
}

#[test]
fn a_file_another_account_prepared_never_keeps_its_mode() {
    // Bob owns a 0777 directory and a 0666 file where Alice's secret goes: the secret must not
    // end up readable by him ("existing mode kept" is only for Alice's own files).
    if !keyport::testing::needs_root("creates OS accounts") {
        return;
    }
    require_tool("useradd");
    let (sb, daemon, _key, api) = started(&[]);
    let alice = OsAccount::create("kpfa");
    let bob = OsAccount::create("kpfb");
    let share = tempfile::tempdir().unwrap();
    std::fs::set_permissions(share.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let shared = |name: &str| share.path().join(name);
    for name in ["alice.json", "own.json"] {
        std::fs::write(shared(name), "bob's bait").unwrap();
    }
    std::os::unix::fs::chown(share.path(), Some(bob.uid), Some(bob.gid)).unwrap();
    std::os::unix::fs::chown(shared("alice.json"), Some(bob.uid), Some(bob.gid)).unwrap();
    std::fs::set_permissions(shared("alice.json"), std::fs::Permissions::from_mode(0o666)).unwrap();
    // Her own file there, 0640 by her choice, keeps its mode.
    std::os::unix::fs::chown(shared("own.json"), Some(alice.uid), Some(alice.gid)).unwrap();
    std::fs::set_permissions(shared("own.json"), std::fs::Permissions::from_mode(0o640)).unwrap();

    let (key, h) = keyport_user(&sb, &daemon, &api, "alice", &alice);
    for (name, file) in [("token", "alice.json"), ("mine", "own.json")] {
        let path = shared(file).display().to_string();
        let r = h.send(
            "POST",
            "users/me/secrets",
            &json!({"name": name, "value": format!("{name}-value"), "file": path}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let out = daemon
        .ssh("alice", &key)
        .arg("-tt")
        .arg("cat ~/.profile >/dev/null 2>&1; exit 0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let meta = std::fs::symlink_metadata(shared("alice.json")).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (alice.uid, 0o600),
        "replaced by a private file of Alice's"
    );
    assert_eq!(
        std::fs::read_to_string(shared("alice.json")).unwrap(),
        "token-value"
    );
    let own = std::fs::symlink_metadata(shared("own.json")).unwrap();
    assert_eq!(
        (own.uid(), own.mode() & 0o777),
        (alice.uid, 0o640),
        "her own mode kept"
    );
    assert!(
        stderr.contains("alice.json belonged to another account"),
        "an interactive session is told: {stderr}"
    );
    let audit = h.get("audit").json();
    let reported: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "file.replaced-foreign")
        .collect();
    assert_eq!(reported.len(), 1, "{audit}");
    assert_eq!(
        reported[0]["detail"]["paths"],
        json!([shared("alice.json").display().to_string()])
    );
}
