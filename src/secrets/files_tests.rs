//! Unit tests of writing and removing file secrets: modes, atomic replaces, saved edits, links
//! and FIFOs never followed, and the one rule both writers follow.
use super::*;
use std::os::unix::fs::symlink;

fn wanted(path: &Path, content: &[u8]) -> Wanted {
    Wanted {
        path: path.display().to_string(),
        content: keyport_keys::SecretBytes::new(content.to_vec()),
        previous: None,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn writes_new_files_private_and_leaves_unchanged_ones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a/b/secret");
    let plan = Plan {
        write: vec![wanted(&file, b"v1\0bin")],
        remove: vec![],
    };
    let report = apply(&plan);
    assert_eq!(report.written.len(), 1, "{report:?}");
    assert_eq!(fs::read(&file).unwrap(), b"v1\0bin");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    let before = fs::metadata(&file).unwrap().modified().unwrap();
    let again = apply(&plan);
    assert_eq!(again.unchanged.len(), 1, "{again:?}");
    assert!(again.written.is_empty());
    assert_eq!(
        fs::metadata(&file).unwrap().modified().unwrap(),
        before,
        "not rewritten"
    );
    assert_eq!(again.unchanged[0].1, report.written[0].1, "same hash");
}

#[test]
fn an_existing_files_mode_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cfg");
    fs::write(&file, "old").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    apply(&Plan {
        write: vec![wanted(&file, b"new")],
        remove: vec![],
    });
    assert_eq!(fs::read(&file).unwrap(), b"new");
    assert_eq!(mode(&file), 0o640);
}

#[test]
fn a_version_the_user_edited_is_saved_beside_before_the_new_value_goes_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("npmrc");
    fs::write(&file, "user edit").unwrap();
    let mut want = wanted(&file, b"v2");
    want.previous = Some(sha256_hex(b"v1"));
    let plan = Plan {
        write: vec![want],
        remove: vec![],
    };
    let report = apply(&plan);
    let saved = format!("{}.keyport-saved", file.display());
    assert_eq!(report.saved, [(file.display().to_string(), saved.clone())]);
    assert_eq!(fs::read(&file).unwrap(), b"v2");
    assert_eq!(fs::read(&saved).unwrap(), b"user edit");
    assert_eq!(mode(Path::new(&saved)), 0o600);
    // A second edit does not replace the first saved one.
    fs::write(&file, "second edit").unwrap();
    let mut want = wanted(&file, b"v3");
    want.previous = Some(sha256_hex(b"v2"));
    let report = apply(&Plan {
        write: vec![want],
        remove: vec![],
    });
    assert_eq!(report.saved[0].1, format!("{saved}.1"));
    assert_eq!(fs::read(&saved).unwrap(), b"user edit");
}

#[test]
fn one_rule_for_what_is_found_where_a_value_goes() {
    let (new, old) = (sha256_hex(b"new"), sha256_hex(b"old"));
    let write = |save_first| Step::Write { save_first };
    let file = |content: &'static [u8], own| Found::File { content, own };
    for (found, previous, want) in [
        (Found::Missing, None, write(false)),
        (Found::Special, None, write(false)),
        (file(b"new", true), None, Step::Unchanged),
        // Someone else's file with the value is rewritten as the writer's own.
        (file(b"new", false), None, write(false)),
        (file(b"old", true), Some(old.as_str()), write(false)),
        (file(b"edit", true), Some(old.as_str()), write(true)),
        (file(b"theirs", true), None, write(true)),
        (file(b"theirs", false), None, write(true)),
    ] {
        assert_eq!(step(&found, &new, previous), want);
    }
    for found in [
        Found::Link,
        Found::Dir,
        Found::Uncomparable("it is larger than a value".into()),
    ] {
        assert!(
            matches!(step(&found, &new, None), Step::Refuse(why) if why.contains("not replaced"))
        );
    }
}

#[test]
fn what_keyport_wrote_is_replaced_without_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    fs::write(&file, "v1").unwrap();
    let mut want = wanted(&file, b"v2");
    want.previous = Some(sha256_hex(b"v1"));
    let report = apply(&Plan {
        write: vec![want],
        remove: vec![],
    });
    assert!(report.saved.is_empty(), "{report:?}");
    assert_eq!(fs::read(&file).unwrap(), b"v2");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn removes_only_what_still_holds_keyports_content() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, changed, gone, link) = (
        dir.path().join("ours"),
        dir.path().join("changed"),
        dir.path().join("gone"),
        dir.path().join("link"),
    );
    fs::write(&ours, "written").unwrap();
    fs::write(&changed, "user edited").unwrap();
    let target = dir.path().join("target");
    fs::write(&target, "written").unwrap();
    symlink(&target, &link).unwrap();
    let stale = |p: &Path| Stale {
        path: p.display().to_string(),
        sha256: sha256_hex(b"written"),
    };
    let report = apply(&Plan {
        write: vec![],
        remove: vec![stale(&ours), stale(&changed), stale(&gone), stale(&link)],
    });
    assert_eq!(report.removed, [ours.display().to_string()]);
    assert_eq!(report.missing, [gone.display().to_string()]);
    assert_eq!(
        report.kept_changed,
        [changed.display().to_string(), link.display().to_string()]
    );
    assert!(!ours.exists() && changed.exists() && link.exists() && target.exists());
}

#[test]
fn debug_never_shows_content() {
    let w = wanted(Path::new("/x"), b"topsecret");
    assert!(!format!("{w:?}").contains("topsecret"));
}

#[test]
fn fifos_and_links_are_never_followed_or_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let target = dir.path().join("public");
    fs::write(&target, "x").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("link");
    symlink(&target, &link).unwrap();
    // A FIFO where a secret goes is replaced, not read (reading would block forever).
    let report = apply(&Plan {
        write: vec![wanted(&fifo, b"v"), wanted(&link, b"v")],
        remove: vec![],
    });
    assert_eq!(report.written.len(), 1, "{report:?}");
    assert_eq!(fs::read(&fifo).unwrap(), b"v");
    // A link is the user's: left as it is, reported; its target keeps content and mode.
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("symbolic link"), "{report:?}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&target).unwrap(), b"x");
    assert_eq!(mode(&target), 0o644);
}
