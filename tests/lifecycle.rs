//! Secrets that look after themselves (design.md, "Secret lifecycle"), with the real binary
//! and the real `ssh`: kinds and rotation ages through the CLI and the API (a value set 100
//! days ago — a stored timestamp, not a sleep — is stale; a new description keeps its age, a
//! new value resets it); the rotation notice before a pty shell and nothing extra on exec
//! channels; `[[required]]` secrets named by `secret check`, announced before a pty shell,
//! and with `block` refused (exit 1, audited) until created; and `secret list -o json`
//! importing back as it was, values aside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{Daemon, Http, Sandbox, ssh_daemon};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `keyport ARGS` as the sandbox's user (logged in by the first start), with no stdin.
fn cli(sb: &Sandbox, args: &[&str]) -> Output {
    sb.keyport()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = cli(sb, args);
    assert!(out.status.success(), "keyport {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves secret `name`'s value change `days` into the past, in the database itself.
fn age_value(sb: &Sandbox, name: &str, days: i64) {
    let db = rusqlite::Connection::open(sb.db()).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let n = db
        .execute(
            "UPDATE secrets SET value_updated_at = value_updated_at - ?1 WHERE name = ?2",
            rusqlite::params![days * DAY_MS, name],
        )
        .unwrap();
    assert_eq!(n, 1, "no secret {name}");
}

fn secret(api: &Http, name: &str) -> Value {
    let r = api.get(&format!("users/me/secrets/{name}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// `ssh -tt` (a pty) running `command`; what the client printed on stdout and stderr.
fn pty_session(daemon: &Daemon, key: &Path, command: &str) -> Output {
    daemon
        .ssh(&common::me().name, key)
        .arg("-tt")
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn exec(daemon: &Daemon, key: &Path, command: &str) -> Output {
    daemon
        .ssh(&common::me().name, key)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn kinds_and_rotation_ages_through_the_cli_and_the_api() {
    let (sb, daemon, key, api) = ssh_daemon(&[]);
    // Through the API: a token, masked by default, due after 90 days.
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "gh", "value": "ghp-lifecycle-1", "env": "GH_TOKEN", "kind": "token"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let gh = r.json();
    assert_eq!(gh["kind"], "token");
    assert_eq!(gh["rotate_after"], Value::Null, "its kind's");
    assert_eq!(gh["rotate_after_effective"], "90d");
    assert_eq!(gh["stale"], false);
    assert_eq!(gh["masked"], true);
    assert!(gh["value_updated_at"].as_i64().unwrap() > 0);
    // Through the CLI: kinds, an own rotation age, and no kind = other.
    ok(
        &sb,
        &[
            "secret",
            "create",
            "db",
            "--value",
            "pw-lifecycle-2",
            "--env",
            "DB_PASSWORD",
        ],
    );
    ok(
        &sb,
        &[
            "secret",
            "update",
            "db",
            "--kind",
            "password",
            "--rotate-after",
            "30d",
        ],
    );
    ok(
        &sb,
        &[
            "secret",
            "create",
            "cfg",
            "--value",
            "x=1",
            "--file",
            "~/.kp-life.cfg",
            "--kind",
            "config",
        ],
    );
    let db = secret(&api, "db");
    assert_eq!(
        (db["kind"].as_str(), db["rotate_after"].as_str()),
        (Some("password"), Some("30d"))
    );
    assert_eq!(db["masked"], true, "password masks by default");
    // Bad input names the flag and the rule.
    let bad = cli(&sb, &["secret", "update", "db", "--rotate-after", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("--rotate-after: "), "{}", text(&bad));
    let bad = cli(
        &sb,
        &["secret", "create", "x", "--value", "v", "--kind", "tokn"],
    );
    assert!(
        !bad.status.success() && text(&bad).contains("--kind"),
        "{}",
        text(&bad)
    );
    let r = api.send("PATCH", "users/me/secrets/db", &json!({"kind": "pasword"}));
    assert_eq!(r.status, 400, "{}", r.body);

    // The table: KIND and AGE columns; --kind filters.
    let table = ok(&sb, &["secret", "list"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "KIND", "ENV", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    let tokens = ok(&sb, &["secret", "list", "--kind", "token", "-o", "json"]);
    let tokens: Vec<Value> = serde_json::from_str(&tokens).unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["name"], "gh");

    // A value set 100 days ago is stale; only it is listed by --stale.
    age_value(&sb, "gh", 100);
    let gh = secret(&api, "gh");
    assert_eq!(gh["stale"], true, "{gh}");
    let stale = ok(&sb, &["secret", "list", "--stale"]);
    assert!(stale.contains("gh") && !stale.contains("db"), "{stale}");
    let gh_row = stale.lines().find(|l| l.starts_with("gh ")).unwrap();
    assert!(gh_row.contains("100d !"), "{stale}");
    // The rotation notice before a pty shell; nothing extra on exec channels.
    let shell = pty_session(&daemon, &key, "echo in-shell");
    let said = text(&shell);
    assert!(
        said.contains(
            "keyport: 1 secret is due for rotation: gh (100 d) — keyport secret list --stale"
        ),
        "{said}"
    );
    let quiet = exec(&daemon, &key, "true");
    assert!(quiet.status.success());
    assert_eq!(text(&quiet), "", "exec channels print nothing extra");
    let value = exec(&daemon, &key, r#"printf %s "$DB_PASSWORD""#);
    assert_eq!(String::from_utf8_lossy(&value.stdout), "pw-lifecycle-2");
    assert!(value.stderr.is_empty(), "{}", text(&value));

    // A new description keeps the value's age; a new value resets it.
    ok(&sb, &["secret", "update", "gh", "--description", "GitHub"]);
    assert_eq!(secret(&api, "gh")["stale"], true, "description only");
    ok(
        &sb,
        &["secret", "update", "gh", "--value", "ghp-lifecycle-3"],
    );
    let gh = secret(&api, "gh");
    assert_eq!(gh["stale"], false, "{gh}");
    let shell = pty_session(&daemon, &key, "echo in-shell");
    assert!(
        !text(&shell).contains("due for rotation"),
        "{}",
        text(&shell)
    );
    // An own `never` wins over the kind's 90 days.
    ok(&sb, &["secret", "update", "gh", "--rotate-after", "never"]);
    age_value(&sb, "gh", 400);
    assert_eq!(secret(&api, "gh")["stale"], false);
    ok(
        &sb,
        &["secret", "update", "gh", "--rotate-after", "default"],
    );
    let gh = secret(&api, "gh");
    assert_eq!(
        (gh["stale"].as_bool(), gh["rotate_after"].is_null()),
        (Some(true), true)
    );
}

#[test]
fn a_listing_imports_back_as_it_was_values_aside() {
    let (sb, _daemon, _key, api) = ssh_daemon(&[]);
    for body in [
        json!({"name": "gh", "value": "v1-abcdefgh", "env": "GH_TOKEN", "kind": "token",
               "rotate_after": "30d", "mask": false, "description": "GitHub"}),
        json!({"name": "npmrc", "value": "//registry/:_authToken=x", "file": "~/.kp-npmrc",
               "kind": "config", "enabled": false}),
    ] {
        let r = api.send("POST", "users/me/secrets", &body);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let listed = ok(&sb, &["secret", "list", "-o", "json"]);
    let mut entries: Vec<Value> = serde_json::from_str(&listed).unwrap();
    for name in ["gh", "npmrc"] {
        assert_eq!(api.delete(&format!("users/me/secrets/{name}")).status, 204);
    }
    for entry in &mut entries {
        entry["value"] = json!("restored-value");
    }
    let file = sb.dir.path().join("listing.json");
    std::fs::write(&file, serde_json::to_string(&entries).unwrap()).unwrap();
    ok(&sb, &["secret", "import", file.to_str().unwrap()]);
    let again: Vec<Value> =
        serde_json::from_str(&ok(&sb, &["secret", "list", "-o", "json"])).unwrap();
    let settable = |e: &Value| {
        let keys = [
            "name",
            "description",
            "env",
            "file",
            "enabled",
            "kind",
            "rotate_after",
            "mask",
            "rotate_after_effective",
            "masked",
        ];
        keys.iter().map(|k| e[*k].clone()).collect::<Vec<_>>()
    };
    let before: Vec<_> = entries.iter().map(settable).collect();
    let after: Vec<_> = again.iter().map(settable).collect();
    assert_eq!(before, after);
}

/// A config file with `required` tables, for the daemon.
fn config_with(sb: &Sandbox, required: &str) -> String {
    let path = sb.dir.path().join("keyport.toml");
    std::fs::write(&path, required).unwrap();
    path.display().to_string()
}

#[test]
fn required_secrets_are_announced_checked_and_with_block_refuse_sessions() {
    // warn: a notice before a pty shell, `secret check` exits 1, exec channels are quiet.
    let (sb, daemon, key, api) = {
        let sb = Sandbox::new();
        let config = config_with(
            &sb,
            "[[required]]\nenv = \"GITHUB_TOKEN\"\ndescription = \"GitHub for the monorepo\"\n\
             [[required]]\nenv = \"NPM_TOKEN\"\nusers = [\"somebody-else\"]\n",
        );
        common::require_tool("ssh");
        let key = sb.client_key("id_ed25519");
        let daemon = sb.serve_with(&[("KEYPORT_CONFIG", &config)]);
        let api = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
        (sb, daemon, key, api)
    };
    let check = cli(&sb, &["secret", "check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let said = text(&check);
    assert!(
        said.contains("missing GITHUB_TOKEN (env) — GitHub for the monorepo (required): printf %s VALUE | keyport secret create github_token --env GITHUB_TOKEN"),
        "{said}"
    );
    assert!(!said.contains("NPM_TOKEN"), "not alice's: {said}");
    let r = api.get("users/me/required");
    assert_eq!(r.status, 200);
    let required = r.json();
    assert_eq!(required.as_array().unwrap().len(), 1, "{required}");
    assert_eq!(required[0]["satisfied"], false);
    let shell = pty_session(&daemon, &key, "echo in-shell");
    let said = text(&shell);
    assert!(
        said.contains("keyport: required secret missing: GITHUB_TOKEN (GitHub for the monorepo)"),
        "{said}"
    );
    assert!(
        said.contains("in-shell"),
        "a warning does not stop the shell: {said}"
    );
    let quiet = exec(&daemon, &key, "true");
    assert_eq!(
        (quiet.status.code(), text(&quiet)),
        (Some(0), String::new())
    );
    // Once created: all clear, and no notice.
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "github", "value": "ghp-required-1", "env": "GITHUB_TOKEN"}),
    );
    assert_eq!(r.status, 201);
    let check = cli(&sb, &["secret", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(text(&check).contains("all clear"), "{}", text(&check));
    let shell = pty_session(&daemon, &key, "echo in-shell");
    assert!(
        !text(&shell).contains("required secret"),
        "{}",
        text(&shell)
    );
    drop(daemon);

    // block: the same gateway, restarted with the requirement blocking, and the secret gone.
    let config = config_with(
        &sb,
        "[[required]]\nenv = \"GITHUB_TOKEN\"\ndescription = \"GitHub\"\nmode = \"block\"\n",
    );
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", &config)]);
    assert_eq!(
        api_at(&daemon, &sb)
            .delete("users/me/secrets/github")
            .status,
        204
    );
    let refused = exec(&daemon, &key, "echo ran > /dev/null; echo ran");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let said = text(&refused);
    assert!(!said.contains("ran"), "nothing was run: {said}");
    assert!(
        said.contains(
            "keyport: sessions here need a secret you have not set: GITHUB_TOKEN (GitHub)"
        ) && said.contains("keyport secret create github_token --env GITHUB_TOKEN")
            && said.contains("nothing was run"),
        "{said}"
    );
    let shell = pty_session(&daemon, &key, "echo in-shell");
    assert_eq!(shell.status.code(), Some(1), "{}", text(&shell));
    assert!(!text(&shell).contains("in-shell"), "{}", text(&shell));
    let admin = api_at(&daemon, &sb);
    let blocked = admin.audit_rows("session.blocked");
    assert_eq!(blocked.len(), 2, "{blocked:?}");
    assert_eq!(blocked[0]["detail"]["missing"], json!(["GITHUB_TOKEN"]));
    // Created again: sessions run.
    let r = admin.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "github", "value": "ghp-required-2", "env": "GITHUB_TOKEN"}),
    );
    assert_eq!(r.status, 201);
    let ran = exec(&daemon, &key, "echo ran");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "ran\n",
        "{}",
        text(&ran)
    );
}

/// The bootstrap admin's API client for `daemon` (the token outlives a restart).
fn api_at(daemon: &Daemon, sb: &Sandbox) -> Http {
    Http::new(&daemon.url, Some(&sb.bootstrap_token()))
}

#[test]
fn bad_lifecycle_config_is_a_startup_error_naming_the_key() {
    let sb = Sandbox::new();
    for (text, key) in [
        ("[rotation]\ntoken = \"soon\"\n", "rotation.token"),
        ("[[required]]\ndescription = \"nothing\"\n", "required"),
        ("[[required]]\nenv = \"1BAD\"\n", "required.env"),
        ("[[required]]\nfile = \"relative\"\n", "required.file"),
    ] {
        let config = config_with(&sb, text);
        let out = sb
            .keyport()
            .env("KEYPORT_CONFIG", &config)
            .args([
                "serve",
                "--ssh-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(&format!("{key}: ")), "{text}: {said}");
    }
}

#[test]
fn a_required_file_is_met_however_the_secret_names_the_same_path() {
    let sb = Sandbox::new();
    let home = common::me().home;
    let config = config_with(
        &sb,
        &format!(
            "[[required]]\nfile = \"~/.kp-required-a\"\n[[required]]\nfile = \"{home}/.kp-required-b\"\n\
             [[required]]\nenv = \"ONLY_ON_DEV9\"\nworkspaces = [\"dev9\"]\n"
        ),
    );
    let daemon = sb.serve_with(&[("KEYPORT_CONFIG", &config)]);
    let api = api_at(&daemon, &sb);
    let unmet = api.get("users/me/required").json();
    // dev9 is no workspace of this user's: not listed.
    assert_eq!(unmet.as_array().unwrap().len(), 2, "{unmet}");
    // `~/…` required, the absolute path given; the absolute path required, `~/…` given.
    for body in [
        json!({"name": "a", "value": "x", "file": format!("{home}/.kp-required-a"), "enabled": false}),
        json!({"name": "b", "value": "x", "file": "~/.kp-required-b", "enabled": false}),
    ] {
        assert_eq!(api.send("POST", "users/me/secrets", &body).status, 201);
    }
    let required = api.get("users/me/required").json();
    assert!(
        required
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["satisfied"] == false),
        "disabled secrets meet nothing: {required}"
    );
    for name in ["a", "b"] {
        let r = api.send(
            "PATCH",
            &format!("users/me/secrets/{name}"),
            &json!({"enabled": true}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let required = api.get("users/me/required").json();
    assert!(
        required
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["satisfied"] == true),
        "{required}"
    );
    let check = cli(&sb, &["secret", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}
