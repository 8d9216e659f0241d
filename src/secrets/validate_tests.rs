//! Table-driven tests of every validation rule, each limit at its boundary.
use super::*;

fn field_of(r: Result<(), Violation>) -> Option<String> {
    r.err().map(|v| v.field.into_owned())
}

#[test]
fn secret_names() {
    let long = "a".repeat(MAX_NAME_LEN);
    let too_long = "a".repeat(MAX_NAME_LEN + 1);
    for (name, ok) in [
        ("a", true),
        ("GITHUB_TOKEN", true),
        ("db.password-2", true),
        ("9lives", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("_x", false),
        (".x", false),
        ("-x", false),
        ("a b", false),
        ("a/b", false),
        ("a?b", false),
        ("a#b", false),
        ("é", false),
        ("a\0", false),
    ] {
        assert_eq!(check_name(name).is_ok(), ok, "name {name:?}");
        if !ok {
            assert_eq!(field_of(check_name(name)).as_deref(), Some("name"));
        }
    }
}

#[test]
fn user_names() {
    assert!(check_user_name("alice").is_ok());
    assert_eq!(field_of(check_user_name("me")).as_deref(), Some("user"));
    assert_eq!(field_of(check_user_name("a:b")).as_deref(), Some("user"));
}

#[test]
fn env_names() {
    let long = format!("A{}", "B".repeat(MAX_ENV_NAME_LEN - 1));
    let too_long = format!("A{}", "B".repeat(MAX_ENV_NAME_LEN));
    for (env, ok) in [
        ("GITHUB_TOKEN", true),
        ("_private", true),
        ("a1", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("1A", false),
        ("A-B", false),
        ("A B", false),
        ("A=B", false),
        ("Ä", false),
        // reserved names, any case
        ("PATH", false),
        ("path", false),
        ("Home", false),
        ("BASH_ENV", false),
        ("TMPDIR", false),
        ("HOSTNAME", false),
        ("EDITOR", false),
        ("PAGER", false),
        ("MAIL", false),
        // reserved prefixes, any case
        ("XDG_CONFIG_HOME", false),
        ("KEYPORT_X", false),
        ("keyport_x", false),
        ("SSH_AUTH_SOCK", false),
        ("GIT_SSH_COMMAND", false),
        ("LD_PRELOAD", false),
        ("LC_ALL", false),
        ("DYLD_INSERT_LIBRARIES", false),
        // near misses are fine
        ("PATHS", true),
        ("MY_PATH", true),
        ("SSH", true),
        ("GITHUB_TOKEN2", true),
    ] {
        let got = check_env_name(env);
        assert_eq!(got.is_ok(), ok, "env {env:?}: {got:?}");
        if !ok {
            assert_eq!(field_of(got).as_deref(), Some("env"));
        }
    }
    for name in RESERVED_ENV_NAMES {
        assert!(check_env_name(name).is_err(), "{name}");
        assert!(check_env_name(&name.to_lowercase()).is_err(), "{name}");
    }
}

#[test]
fn file_paths() {
    let at_limit = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
    let over = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    for (path, ok) in [
        ("~/.config/gh/hosts.yml", true),
        ("/etc/app/token", true),
        ("~/x", true),
        (at_limit.as_str(), true),
        (over.as_str(), false),
        ("relative/path", false),
        ("~user/x", false),
        ("~", false),
        ("~/", false),
        ("/", false),
        ("~/dir/", false),
        ("/a//b", false),
        ("~/./x", false),
        ("~/a/../b", false),
        ("~/..", false),
        ("/a/.", false),
        ("/a\0b", false),
    ] {
        let got = check_file_path(path);
        assert_eq!(got.is_ok(), ok, "file {path:?}: {got:?}");
        if !ok {
            assert_eq!(field_of(got).as_deref(), Some("file"));
        }
    }
}

#[test]
fn tilde_resolution() {
    assert_eq!(resolve_file_path("~/a/b", "/home/alice"), "/home/alice/a/b");
    assert_eq!(resolve_file_path("~/a", "/home/alice/"), "/home/alice/a");
    assert_eq!(resolve_file_path("/etc/x", "/home/alice"), "/etc/x");
}

#[test]
fn values() {
    let max = vec![b'x'; MAX_VALUE_BYTES];
    let over = vec![b'x'; MAX_VALUE_BYTES + 1];
    for (value, env, ok) in [
        (&b"v"[..], true, true),
        (&b""[..], false, false),
        (&b""[..], true, false),
        (&max[..], true, true),
        (&over[..], false, false),
        (&b"a\0b"[..], true, false),
        (&b"a\0b"[..], false, true),
        (&b"\xff\xfe binary"[..], false, true),
        (&b"line\r\n"[..], true, true),
    ] {
        let got = check_value(value, env);
        assert_eq!(
            got.is_ok(),
            ok,
            "value len {} env {env}: {got:?}",
            value.len()
        );
        if !ok {
            assert_eq!(field_of(got).as_deref(), Some("value"));
        }
    }
}

#[test]
fn descriptions() {
    assert!(check_description("").is_ok());
    assert!(check_description("token for\tgh").is_ok());
    assert!(check_description(&"d".repeat(MAX_DESCRIPTION_BYTES)).is_ok());
    assert_eq!(
        field_of(check_description(&"d".repeat(MAX_DESCRIPTION_BYTES + 1))).as_deref(),
        Some("description")
    );
    assert_eq!(
        field_of(check_description("a\nb")).as_deref(),
        Some("description")
    );
}

fn shape(name: &str, env: Option<&str>, file: Option<&str>, len: usize) -> SecretShape {
    SecretShape {
        name: name.into(),
        env: env.map(Into::into),
        file: file.map(Into::into),
        file_resolved: file.map(|f| resolve_file_path(f, "/home/alice")),
        enabled: env.is_some() || file.is_some(),
        value_len: len,
    }
}

fn fields(v: &[Violation]) -> Vec<&str> {
    v.iter().map(|v| v.field.as_ref()).collect()
}

#[test]
fn enabled_needs_a_target() {
    let mut s = shape("a", None, None, 1);
    assert!(check_set(&s, &[], &Limits::default()).invalid.is_empty());
    s.enabled = true;
    assert_eq!(
        fields(&check_set(&s, &[], &Limits::default()).invalid),
        ["enabled"]
    );
}

#[test]
fn uniqueness_conflicts() {
    let others = [
        shape("gh", Some("GH_TOKEN"), Some("~/.config/gh/token"), 1),
        shape("npm", None, Some("/home/alice/.npmrc"), 1),
    ];
    let l = Limits::default();
    let cases = [
        (shape("gh", None, None, 1), vec!["name"]),
        (shape("x", Some("gh_token"), None, 1), vec!["env"]),
        (shape("x", Some("Gh_Token"), None, 1), vec!["env"]),
        // ~ resolves to the same file as an absolute path
        (shape("x", None, Some("~/.npmrc"), 1), vec!["file"]),
        (
            shape("x", None, Some("/home/alice/.config/gh/token"), 1),
            vec!["file"],
        ),
        // one file would be the other's directory, either way round
        (shape("x", None, Some("~/.config/gh"), 1), vec!["file"]),
        (shape("x", None, Some("~/.npmrc/inner"), 1), vec!["file"]),
        (
            shape("x", Some("OTHER"), Some("~/.config/gh/token2"), 1),
            vec![],
        ),
        (shape("x", None, Some("~/.npmrc2"), 1), vec![]),
    ];
    for (candidate, want) in cases {
        let got = check_set(&candidate, &others, &l);
        assert_eq!(fields(&got.conflicts), want, "{candidate:?}");
        assert!(got.invalid.is_empty());
    }
}

#[test]
fn count_limit_at_the_boundary() {
    let l = Limits {
        max_secrets: 3,
        ..Limits::default()
    };
    let two = [shape("a", None, None, 1), shape("b", None, None, 1)];
    assert!(
        check_set(&shape("c", None, None, 1), &two, &l)
            .invalid
            .is_empty()
    );
    let three = [two[0].clone(), two[1].clone(), shape("c", None, None, 1)];
    let got = check_set(&shape("d", None, None, 1), &three, &l);
    assert_eq!(fields(&got.invalid), ["name"]);
    assert!(got.invalid[0].detail.contains("limit"));
    assert!(
        check_set(&shape("d", None, None, 1), &three, &Limits::default())
            .invalid
            .is_empty()
    );
}

#[test]
fn total_value_limit_at_the_boundary() {
    let l = Limits {
        max_total_value_bytes: 100,
        ..Limits::default()
    };
    let others = [shape("a", None, None, 60)];
    assert!(
        check_set(&shape("b", None, None, 40), &others, &l)
            .invalid
            .is_empty()
    );
    assert_eq!(
        fields(&check_set(&shape("b", None, None, 41), &others, &l).invalid),
        ["value"]
    );
}

#[test]
fn env_limit_counts_enabled_env_secrets_only() {
    // "A=" + 8 bytes = 10 bytes each
    let l = Limits {
        max_env_bytes: 20,
        ..Limits::default()
    };
    let mut disabled = shape("off", Some("OFF"), None, 1000);
    disabled.enabled = false;
    let others = [
        shape("a", Some("A"), None, 8),
        disabled,
        shape("f", None, Some("/f"), 500),
    ];
    assert!(
        check_set(&shape("b", Some("B"), None, 8), &others, &l)
            .invalid
            .is_empty()
    );
    assert_eq!(
        fields(&check_set(&shape("b", Some("B"), None, 9), &others, &l).invalid),
        ["env"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let l = Limits {
        max_secrets: 1,
        max_total_value_bytes: 1,
        max_env_bytes: 1,
    };
    let others = [shape("a", Some("A"), None, 1)];
    let got = check_set(&shape("a", Some("a"), None, 5), &others, &l);
    assert_eq!(fields(&got.conflicts), ["name", "env"]);
    assert_eq!(fields(&got.invalid), ["name", "value", "env"]);
}
