//! The `keyport secret|key|token|audit|login` client against the real daemon: a full run in
//! which no output and no log line holds a secret value, values read from stdin byte-exact,
//! the exit code for each kind of failure, and imports checked before anything is sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Daemon, Sandbox, contains};

/// Runs `keyport ARGS` against the daemon with `stdin` piped in (empty when None).
fn cli(sb: &Sandbox, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd: Command = sb.keyport();
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(sb: &Sandbox, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = cli(sb, args, stdin);
    assert!(out.status.success(), "keyport {args:?}: {}", text(&out));
    text(&out)
}

fn started() -> (Sandbox, Daemon) {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    (sb, daemon)
}

/// The stored value, read with the library while the daemon runs (WAL readers coexist).
fn stored(sb: &Sandbox, name: &str) -> Vec<u8> {
    let vault = sb.vault();
    vault
        .secret_value(&common::me().name, name)
        .unwrap()
        .expose()
        .to_vec()
}

#[test]
fn a_full_run_never_shows_a_value_in_any_output_or_log() {
    let (sb, daemon) = started();
    let values = [
        "canary-created-Vq3x9Lm2",
        "canary-stdin-Hp7Kw4Zt",
        "canary-updated-Rn8Yc5Qd",
        "canary-imported-Tb2Mf6Ws",
        "canary-json-Jx4Pe9Ua",
    ];
    let mut outputs = String::new();
    outputs += &ok(
        &sb,
        &[
            "secret",
            "create",
            "gh",
            "--value",
            values[0],
            "--env",
            "GH_TOKEN",
            "--description",
            "GitHub",
        ],
        None,
    );
    outputs += &ok(
        &sb,
        &["secret", "create", "npm", "--file", "~/.npmrc-test"],
        Some(values[1].as_bytes()),
    );
    outputs += &ok(&sb, &["secret", "update", "gh", "--value", values[2]], None);
    outputs += &ok(
        &sb,
        &["secret", "update", "gh", "--description", "GitHub token"],
        None,
    );
    outputs += &ok(&sb, &["secret", "list"], None);
    outputs += &ok(&sb, &["secret", "list", "-o", "json"], None);
    outputs += &ok(&sb, &["secret", "list", "gh"], None);
    let env_file = sb.dir.path().join("import.env");
    std::fs::write(&env_file, format!("IMPORTED=\"{}\"\n", values[3])).unwrap();
    outputs += &ok(&sb, &["secret", "import", env_file.to_str().unwrap()], None);
    let json_file = sb.dir.path().join("import.json");
    std::fs::write(&json_file, format!(r#"{{"FROM_JSON": "{}"}}"#, values[4])).unwrap();
    outputs += &ok(
        &sb,
        &["secret", "import", json_file.to_str().unwrap()],
        None,
    );
    // Failures echo no value either.
    outputs += &text(&cli(
        &sb,
        &["secret", "create", "gh", "--value", values[0]],
        None,
    ));
    outputs += &text(&cli(
        &sb,
        &[
            "secret", "create", "bad", "--value", values[0], "--env", "PATH",
        ],
        None,
    ));
    outputs += &text(&cli(
        &sb,
        &["secret", "import", env_file.to_str().unwrap()],
        None,
    ));
    outputs += &ok(&sb, &["audit", "-o", "json"], None);
    outputs += &ok(&sb, &["audit"], None);
    outputs += &ok(&sb, &["key", "show"], None);
    outputs += &ok(&sb, &["secret", "delete", "gh", "-y"], None);
    outputs += &ok(&sb, &["secret", "delete", "IMPORTED", "-y"], None);
    assert_eq!(stored(&sb, "npm"), values[1].as_bytes());
    assert_eq!(stored(&sb, "FROM_JSON"), values[4].as_bytes());

    let log = daemon.log();
    assert!(
        log.contains("DEBUG") || log.contains("INFO"),
        "the daemon logs at debug: {log}"
    );
    for value in values {
        assert!(
            !outputs.contains(value),
            "a CLI output holds {value}:\n{outputs}"
        );
        assert!(!log.contains(value), "the daemon log holds {value}");
    }
    assert!(
        outputs.contains("created secret gh (env GH_TOKEN, enabled)"),
        "{outputs}"
    );
    assert!(
        outputs.contains("imported 1 secrets: IMPORTED"),
        "{outputs}"
    );
    drop(daemon);
    for entry in std::fs::read_dir(sb.data()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for value in values {
            assert!(!contains(&bytes, value.as_bytes()));
        }
    }
}

#[test]
fn stdin_values_are_stored_byte_exact() {
    let (sb, _daemon) = started();
    let out = cli(
        &sb,
        &["secret", "create", "nl", "--env", "NL"],
        Some(b"value\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("warning: the value from stdin ends in a newline"),
        "{}",
        text(&out)
    );
    assert_eq!(
        stored(&sb, "nl"),
        b"value\n",
        "stored as given, newline and all"
    );

    let out = cli(
        &sb,
        &["secret", "create", "crlf", "--env", "CRLF"],
        Some(b"a\r\nb\r\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored(&sb, "crlf"), b"a\r\nb\r\n");

    let binary: Vec<u8> = (0u8..=255).chain([0, 0, 0xff]).collect();
    ok(
        &sb,
        &["secret", "create", "bin", "--file", "~/.bin-secret"],
        Some(&binary),
    );
    assert_eq!(stored(&sb, "bin"), binary);

    let out = cli(
        &sb,
        &["secret", "create", "binenv", "--env", "BINENV"],
        Some(&binary),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("value: must not contain a NUL byte"),
        "{}",
        text(&out)
    );

    ok(&sb, &["secret", "update", "nl"], Some(b"new\tvalue"));
    assert_eq!(stored(&sb, "nl"), b"new\tvalue");

    // Over 64 KiB on stdin is refused without reading it all.
    let big = vec![b'x'; 64 * 1024 + 1];
    let out = cli(
        &sb,
        &["secret", "create", "big", "--file", "~/.big"],
        Some(&big),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("value: must be at most 65536 bytes"),
        "{}",
        text(&out)
    );
    // A value on stdin from a file works like a pipe...
    let file = sb.dir.path().join("value.bin");
    std::fs::write(&file, b"from-a-file").unwrap();
    let from_file = |args: &[&str]| {
        sb.keyport()
            .args(args)
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap()
    };
    assert!(
        from_file(&["secret", "create", "ff", "--env", "FF"])
            .status
            .success()
    );
    assert_eq!(stored(&sb, "ff"), b"from-a-file");
    // ...and with --value, a file on stdin (a `while read` loop's input) is left alone.
    let out = from_file(&["secret", "update", "ff", "--value", "explicit"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored(&sb, "ff"), b"explicit");
    // /dev/null carries no value: update changes only what its flags say.
    let out = sb
        .keyport()
        .args(["secret", "update", "ff", "--description", "d"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored(&sb, "ff"), b"explicit");

    // --value and stdin together, and neither, are errors; nothing is created.
    let out = cli(
        &sb,
        &["secret", "create", "both", "--value", "v", "--env", "BOTH"],
        Some(b"also"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("value: give it with --value or on stdin, not both"),
        "{}",
        text(&out)
    );
    let out = cli(&sb, &["secret", "create", "none", "--env", "NONE"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("value: give --value, or pipe the value on stdin"),
        "{}",
        text(&out)
    );
    let out = cli(
        &sb,
        &["secret", "update", "nl", "--value", "v"],
        Some(b"also"),
    );
    assert_eq!(out.status.code(), Some(2));
    let names = ok(&sb, &["secret", "list", "-o", "json"], None);
    assert!(
        !names.contains("\"both\"") && !names.contains("\"none\""),
        "{names}"
    );
    assert_eq!(stored(&sb, "nl"), b"new\tvalue");
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let (sb, daemon) = started();
    ok(
        &sb,
        &["secret", "create", "a", "--value", "v", "--env", "A"],
        None,
    );
    let code = |args: &[&str]| cli(&sb, args, None).status.code();
    assert_eq!(
        code(&["secret", "create", "a", "--value", "v"]),
        Some(4),
        "conflict"
    );
    assert_eq!(
        code(&["secret", "create", "b", "--value", "v", "--env", "home"]),
        Some(2),
        "invalid"
    );
    assert_eq!(
        code(&["secret", "update", "a"]),
        Some(2),
        "nothing to change"
    );
    assert_eq!(
        code(&["secret", "update", "zz", "--disable"]),
        Some(3),
        "not found"
    );
    assert_eq!(code(&["secret", "delete", "zz", "-y"]), Some(3));
    assert_eq!(
        code(&["secret", "delete", "zz"]),
        Some(3),
        "no terminal, no question"
    );
    assert_eq!(code(&["secret", "bogus"]), Some(2), "usage");
    let with_env = |k: &str, v: &str, args: &[&str]| {
        sb.keyport()
            .args(args)
            .env(k, v)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = with_env("KEYPORT_TOKEN", "kpt_wrong", &["secret", "list"]);
    assert_eq!(out.status.code(), Some(5), "auth: {}", text(&out));
    // The saved token is never sent to another server...
    let out = with_env("KEYPORT_URL", "http://127.0.0.1:1", &["secret", "list"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "saved token elsewhere: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("only sent to the saved URL"),
        "{}",
        text(&out)
    );
    // ...one given with it is.
    let out = sb
        .keyport()
        .args(["secret", "list"])
        .env("KEYPORT_URL", "http://127.0.0.1:1")
        .env("KEYPORT_TOKEN", "kpt_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "unreachable: {}", text(&out));
    assert!(text(&out).contains("cannot reach keyport at http://127.0.0.1:1"));
    let out = sb
        .keyport()
        .args(["secret", "list"])
        .env("HOME", sb.dir.path())
        .env("XDG_CONFIG_HOME", sb.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "not logged in: {}", text(&out));
    assert!(text(&out).contains("keyport login"));
    // Every failure is one line.
    let out = cli(&sb, &["secret", "create", "a", "--value", "v"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out)
    );
    drop(daemon);
}

#[test]
fn import_is_checked_locally_before_anything_is_sent() {
    let (sb, daemon) = started();
    let file = sb.dir.path().join("bad.env");
    std::fs::write(&file, "OK=1\nPATH=2\nno equals\nOK=3\n").unwrap();
    let out = cli(&sb, &["secret", "import", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out);
    for part in [
        "line 3: expected NAME=VALUE",
        "secret PATH: PATH is reserved",
        "secret OK: appears twice",
    ] {
        assert!(said.contains(part), "{part} missing: {said}");
    }
    let metrics = common::Http::new(&daemon.url, None).get("metrics").body;
    assert!(
        !metrics.contains("secrets:import"),
        "the bad file reached the server:\n{metrics}"
    );

    std::fs::write(&file, "NEW=1\nA=2\n").unwrap();
    ok(
        &sb,
        &["secret", "create", "A", "--value", "v", "--env", "A"],
        None,
    );
    let out = cli(&sb, &["secret", "import", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let list = ok(&sb, &["secret", "list", "-o", "json"], None);
    assert!(!list.contains("\"NEW\""), "all or nothing: {list}");
    let out = cli(
        &sb,
        &["secret", "import", "-", "--format", "json"],
        Some(br#"{"FROM_STDIN": "x"}"#),
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn login_tokens_and_keys_through_the_cli() {
    let (sb, daemon) = started();
    let creds = sb.home().join(".config/keyport/cli.toml");
    std::fs::remove_file(&creds).unwrap();
    let token = sb
        .ok(&["token", "create", "fresh", "--user", &common::me().name])
        .trim()
        .to_string();
    let out = cli(
        &sb,
        &["login", "--url", &daemon.url],
        Some(b"kpt_not_valid\n"),
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(!creds.exists(), "a rejected login writes nothing");
    let said = ok(
        &sb,
        &["login", "--url", &daemon.url],
        Some(format!("{token}\n").as_bytes()),
    );
    assert!(
        said.contains(&format!("as {}", common::me().name)),
        "{said}"
    );
    assert!(!said.contains(&token));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let created = cli(&sb, &["token", "create", "ci"], None);
    let new_token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(new_token.starts_with("kpt_"));
    let listed = ok(&sb, &["token", "list"], None);
    assert!(
        listed.contains("ci") && !listed.contains(&new_token),
        "{listed}"
    );
    ok(&sb, &["token", "revoke", "ci"], None);
    assert_eq!(
        cli(&sb, &["token", "revoke", "ci"], None).status.code(),
        Some(3)
    );

    let before = ok(&sb, &["key", "show", "-o", "json"], None);
    assert_eq!(
        cli(&sb, &["key", "regenerate"], None).status.code(),
        Some(2),
        "asks first"
    );
    let after = ok(
        &sb,
        &["key", "regenerate", "--type", "ecdsa-p256", "-y"],
        None,
    );
    assert!(after.contains("ecdsa-sha2-nistp256 "), "{after}");
    let now = ok(&sb, &["key", "show", "-o", "json"], None);
    assert_ne!(before, now);
    assert!(now.contains("ecdsa-p256"));
}

#[test]
fn coder_habits_work_as_coders_docs_write_them() {
    let (sb, _daemon) = started();
    for name in ["api-key", "other", "x"] {
        ok(
            &sb,
            &[
                "secret",
                "create",
                name,
                "--env",
                &name.to_uppercase().replace('-', "_"),
            ],
            Some(b"v"),
        );
    }
    // `coder secret delete NAME` in a script: no terminal, no question; a "y" piped is fine.
    ok(&sb, &["secret", "delete", "api-key"], Some(b"y\n"));
    ok(&sb, &["secret", "delete", "other"], None);
    let listed = ok(&sb, &["secret", "list"], None);
    // By the NAME column: `other` is also a KIND.
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !names.contains(&"api-key") && !names.contains(&"other"),
        "{listed}"
    );
    // Clearing the last target: stored, not injected, and said so.
    let out = cli(&sb, &["secret", "update", "x", "--env", ""], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("stored, but not injected") && text(&out).contains("disabled"),
        "{}",
        text(&out)
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&sb, &["secret", "list", "x", "-o", "json"], None)).unwrap();
    assert_eq!(json[0]["enabled"], false, "{json}");
    // Timestamps as the table shows them, RFC 3339.
    let updated = json[0]["updated_at"].as_str().unwrap();
    assert!(
        updated.len() >= 20 && updated.ends_with('Z') && updated.contains('T'),
        "{updated}"
    );
    // Errors name the CLI's flags, not the API's fields.
    let out = cli(&sb, &["secret", "update", "x"], None);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out);
    assert!(
        said.contains("--value") && said.contains("--enable"),
        "{said}"
    );
    assert!(!said.contains("body:"), "{said}");
    let out = cli(&sb, &["secret", "update", "x", "--enable"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--enable: "), "{}", text(&out));
    // Nothing failed to deliver: check says so.
    let out = ok(&sb, &["secret", "check"], None);
    assert!(out.contains("every file secret was delivered"), "{out}");
}
