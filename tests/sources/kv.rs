//! KV v2 references end to end, `secret test`, and what the API, the CLI and the config refuse.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::Sandbox;
use super::{
    Bao, admin, assert_nowhere, await_events, cli, exec, gateway, ok, ok_line, sample, stdout_of,
    text,
};

const REF: &str = "vault://secret/team/gh#token";

#[test]
fn kv_values_reach_sessions_change_after_kv_ttl_and_are_kept_nowhere() {
    let sb = Sandbox::new();
    let bao = Bao::start(&sb);
    let (one, two) = ("ghp-kv-canary-one-51f0c2", "ghp-kv-canary-two-93ad7e");
    // Another length, so that `secret test` shows which value it read.
    let three = "ghp-kv-canary-three-0c44e1b7";
    bao.server
        .kv_put("team/gh", &[("token", one), ("other", "unused")]);
    let config = format!(
        "[sources]\ntimeout = \"3s\"\n{}",
        bao.vault_table("kv_ttl = \"3s\"")
    );
    let g = gateway(&sb, "keyport", &config, &[("KEYPORT_LOG", "trace")]);
    ok(
        &sb,
        &[
            "secret",
            "create",
            "gh",
            "--source",
            REF,
            "--env",
            "GH_TOKEN",
            "--description",
            "GitHub, from OpenBao",
            "--kind",
            "token",
        ],
    );
    ok(
        &sb,
        &[
            "secret",
            "create",
            "plain",
            "--value",
            "stored-kv-canary-77",
            "--env",
            "PLAIN",
        ],
    );

    let first = Instant::now();
    let out = exec(&g, "printf '%s|%s' \"$GH_TOKEN\" \"$PLAIN\"");
    assert_eq!(stdout_of(&out), format!("{one}|stored-kv-canary-77"));
    // Changed in OpenBao: the sessions within kv_ttl get the cached value.
    bao.server.kv_put("team/gh", &[("token", two)]);
    let cached = stdout_of(&exec(&g, "printf %s \"$GH_TOKEN\""));
    let within = first.elapsed() < Duration::from_millis(2500);
    if within {
        assert_eq!(cached, one, "within kv_ttl: the cached value");
    }
    // After kv_ttl: the new one.
    std::thread::sleep(
        (first + Duration::from_millis(3700)).saturating_duration_since(Instant::now()),
    );
    assert_eq!(stdout_of(&exec(&g, "printf %s \"$GH_TOKEN\"")), two);

    // Audited per resolution: the reference, the provider, hit or miss, the latency.
    let resolved = await_events(&g.api, "source.resolved", "gh", 3, Duration::from_secs(5));
    let outcomes: Vec<&str> = resolved
        .iter()
        .map(|e| e["detail"]["outcome"].as_str().unwrap_or_default())
        .collect();
    if within {
        assert_eq!(outcomes[..3], ["miss", "hit", "miss"], "{resolved:#?}");
    } else {
        assert_eq!(
            (outcomes[0], outcomes[2]),
            ("miss", "miss"),
            "{resolved:#?}"
        );
    }
    for e in &resolved {
        let d = &e["detail"];
        assert_eq!(e["user_name"], admin().as_str(), "{e}");
        assert_eq!(d["reference"], REF, "{e}");
        assert_eq!(d["provider"], "vault", "{e}");
        assert!(d["latency_ms"].is_u64() || d["latency_ms"].is_f64(), "{e}");
        assert!(
            d["session"].is_string() || d["session"].is_u64(),
            "names its session: {e}"
        );
        assert!(d["lease_ttl_secs"].is_null(), "KV has no lease: {e}");
    }
    assert_ne!(
        resolved[0]["detail"]["session"], resolved[2]["detail"]["session"],
        "two sessions"
    );
    let metrics = super::common::Http::new(&g.daemon.url, None)
        .get("metrics")
        .body;
    let counted = |outcome| {
        sample(
            &metrics,
            "keyport_source_resolutions_total",
            &[("provider", "vault"), ("outcome", outcome)],
        )
    };
    assert!(counted("miss") >= 2.0, "{metrics}");
    if within {
        assert!(counted("hit") >= 1.0, "{metrics}");
    }
    let timed = sample(
        &metrics,
        "keyport_source_resolution_seconds_count",
        &[("provider", "vault"), ("outcome", "miss")],
    );
    assert!(timed >= 2.0, "{metrics}");
    let sum = sample(
        &metrics,
        "keyport_source_resolution_seconds_sum",
        &[("provider", "vault"), ("outcome", "miss")],
    );
    assert!(sum > 0.0 && sum < 10.0, "{metrics}");

    // `secret test` reads afresh (the cache holds `two`), and prints the outcome, not the value.
    bao.server.kv_put("team/gh", &[("token", three)]);
    let tested = cli(&sb, &["secret", "test", "gh"]);
    assert_eq!(tested.status.code(), Some(0), "{}", text(&tested));
    let (bytes, lease) = ok_line(&String::from_utf8_lossy(&tested.stdout), "gh", REF);
    assert_eq!(
        (bytes, lease.as_str()),
        (three.len(), ""),
        "no lease for KV"
    );
    let json_test: Value =
        serde_json::from_str(&ok(&sb, &["secret", "test", "gh", "-o", "json"])).unwrap();
    assert_eq!(json_test["name"], "gh");
    assert_eq!(json_test["source"], REF);
    assert_eq!(json_test["provider"], "vault");
    assert_eq!(json_test["outcome"], "ok");
    assert_eq!(json_test["bytes"], three.len());
    assert_eq!(json_test["lease_ttl_secs"], Value::Null);
    assert_eq!(json_test["error"], Value::Null);
    assert!(json_test["latency_ms"].is_number(), "{json_test}");
    let r = g.api.send(
        "POST",
        &format!("users/{}/secrets/gh/test", admin()),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["outcome"], "ok", "{}", r.body);
    // A reference that leads nowhere: failed, exit 1, the reason.
    ok(
        &sb,
        &[
            "secret",
            "create",
            "gone",
            "--source",
            "vault://secret/team/nothing#token",
            "--env",
            "GONE",
        ],
    );
    let failed = cli(&sb, &["secret", "test", "gone"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    let said = text(&failed);
    let line = said
        .lines()
        .find(|l| l.starts_with("failed: gone from vault://secret/team/nothing#token: "))
        .unwrap_or_else(|| panic!("no failed: line in {said}"));
    assert!(
        line.len() > "failed: gone from vault://secret/team/nothing#token: ".len(),
        "{line}"
    );
    let r = g.api.send("POST", "users/me/secrets/gone/test", &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["outcome"], "failed", "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    // A secret that does not resolve is skipped in sessions (not required), the others are set.
    let out = exec(&g, "printf '%s|%s' \"${GONE-unset}\" \"$PLAIN\"");
    assert_eq!(stdout_of(&out), "unset|stored-kv-canary-77");

    // Listed with its SOURCE, never its value.
    let table = ok(&sb, &["secret", "list"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("SOURCE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("gh "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(REF), "{table}");
    let listed: Value = serde_json::from_str(&ok(&sb, &["secret", "list", "-o", "json"])).unwrap();
    let entry = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {listed}"))
    };
    assert_eq!(entry("gh")["source"], REF, "{listed}");
    assert_eq!(entry("gh")["required"], false, "{listed}");
    assert_eq!(entry("gh")["description"], "GitHub, from OpenBao");
    assert_eq!(entry("gh")["kind"], "token");
    assert_eq!(entry("plain")["source"], Value::Null, "{listed}");
    let r = g.api.get("users/me/secrets/gh");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], REF, "{}", r.body);
    assert!(r.json().get("value").is_none(), "{}", r.body);
    assert_eq!(g.api.get("users/me/secrets").status, 200);

    // None of the values anywhere: the CLI's output, the trace log, the database, the API.
    for value in [one, two, three] {
        for (what, out) in [("table", &table), ("json", &listed.to_string())] {
            assert!(!out.contains(value), "secret list ({what}) shows {value}");
        }
        assert!(!text(&tested).contains(value) && !text(&failed).contains(value));
        assert!(!json_test.to_string().contains(value));
        assert_nowhere(&sb, &g, value);
    }
    assert!(
        g.daemon.log().contains("TRACE") || g.daemon.log().contains("DEBUG"),
        "the log was verbose: {}",
        g.daemon.log()
    );
}

#[test]
fn a_source_or_a_value_and_only_good_references() {
    let sb = Sandbox::new();
    let run_as = if keyport::osuser::is_root() {
        "run_as = \"nobody\"\n"
    } else {
        ""
    };
    // No OpenBao: creating a reference does not reach it.
    let config = format!(
        "[sources.vault]\naddress = \"http://127.0.0.1:9\"\nauth = \"approle\"\nrole_id = \"r\"\n\
         secret_id_file = \"/nonexistent/secret-id\"\n[sources.tool]\ncommand = [\"/bin/cat\"]\n{run_as}"
    );
    let g = gateway(&sb, "keyport", &config, &[]);
    let api = &g.api;
    for (body, why) in [
        (
            json!({"name": "x", "source": "vault://secret/a#b", "value": "v"}),
            "both",
        ),
        (
            json!({"name": "x", "source": "vault://secret#x"}),
            "no path",
        ),
        (
            json!({"name": "x", "source": "vault://secret/a"}),
            "no field",
        ),
        (
            json!({"name": "x", "source": "vault-dyn://database#password"}),
            "no path",
        ),
        (
            json!({"name": "x", "source": "exec://nope/k"}),
            "no such provider",
        ),
        (
            json!({"name": "x", "source": "ftp://host/path#f"}),
            "no such scheme",
        ),
        (json!({"name": "x", "source": ""}), "empty"),
    ] {
        let r = api.send("POST", "users/me/secrets", &body);
        assert_eq!(r.status, 400, "{why}: {body} → {}", r.body);
        assert!(r.body.contains("source"), "{why}: {}", r.body);
    }
    assert_eq!(
        api.get("users/me/secrets").json(),
        json!([]),
        "nothing made"
    );
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "tool", "source": "exec://tool/key-1", "env": "TOOL"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["source"], "exec://tool/key-1");
    assert_eq!(r.json()["required"], false);
    let pki = "vault-dyn://pki/issue/web?common_name=x.example.com&ttl=60s#certificate";
    let r = api.send(
        "POST",
        "users/me/secrets",
        &json!({"name": "cert", "source": pki, "file": "~/.kp-sources-cert.pem", "required": true}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.json()["source"].as_str(), r.json()["required"].as_bool()),
        (Some(pki), Some(true))
    );
    // (A required secret whose source cannot be had would refuse the sessions below.)
    let r = api.send(
        "PATCH",
        "users/me/secrets/cert",
        &json!({"required": false}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["required"], false, "{}", r.body);
    // PATCH: one or the other again.
    let r = api.send(
        "PATCH",
        "users/me/secrets/tool",
        &json!({"source": "exec://tool/k2", "value": "v"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("source"), "{}", r.body);
    let r = api.send(
        "PATCH",
        "users/me/secrets/tool",
        &json!({"source": "exec://nope/k"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("source"), "{}", r.body);
    let r = api.send(
        "PATCH",
        "users/me/secrets/tool",
        &json!({"value": "now-stored-canary"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], Value::Null, "{}", r.body);
    let session = stdout_of(&exec(&g, "printf %s \"$TOOL\""));
    assert_eq!(session, "now-stored-canary", "a stored value again");

    // The CLI: both flags named; a value on stdin is a value too; bad references refused.
    let both = cli(
        &sb,
        &[
            "secret",
            "create",
            "y",
            "--source",
            "exec://tool/k",
            "--value",
            "v",
        ],
    );
    assert!(!both.status.success(), "{}", text(&both));
    assert!(
        text(&both).contains("--source") && text(&both).contains("--value"),
        "{}",
        text(&both)
    );
    let mut piped = sb
        .keyport()
        .args(["secret", "create", "y", "--source", "exec://tool/k"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), b"piped-value").unwrap();
    let piped = piped.wait_with_output().unwrap();
    assert!(
        !piped.status.success(),
        "a value on stdin and --source: {}",
        text(&piped)
    );
    assert!(text(&piped).contains("--source"), "{}", text(&piped));
    let bad = cli(
        &sb,
        &["secret", "create", "y", "--source", "vault://secret#x"],
    );
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(text(&bad).contains("source"), "{}", text(&bad));
    assert_eq!(api.get("users/me/secrets/y").status, 404, "nothing made");
    // Switching: to a reference, back to a value; required on and off.
    ok(
        &sb,
        &[
            "secret",
            "update",
            "tool",
            "--source",
            "exec://tool/k3",
            "--required",
        ],
    );
    let one = api.get("users/me/secrets/tool").json();
    assert_eq!(
        (one["source"].as_str(), one["required"].as_bool()),
        (Some("exec://tool/k3"), Some(true))
    );
    ok(&sb, &["secret", "update", "tool", "--no-required"]);
    assert_eq!(api.get("users/me/secrets/tool").json()["required"], false);
    ok(
        &sb,
        &["secret", "update", "tool", "--value", "stored-again-canary"],
    );
    assert_eq!(
        api.get("users/me/secrets/tool").json()["source"],
        Value::Null
    );
    let table = ok(&sb, &["secret", "list"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("cert "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(pki), "{table}");
    for value in ["now-stored-canary", "stored-again-canary"] {
        assert!(!table.contains(value), "{table}");
    }
}

#[test]
fn bad_sources_config_is_a_startup_error_naming_the_key() {
    let sb = Sandbox::new();
    let run_as = if keyport::osuser::is_root() {
        "run_as = \"nobody\"\n"
    } else {
        ""
    };
    let vault = "[sources.vault]\naddress = \"http://127.0.0.1:9\"\nauth = \"approle\"\n\
                 role_id = \"r\"\nsecret_id_file = \"/nonexistent/id\"\n";
    let mut cases = vec![
        (
            "[sources]\ntimeout = \"soon\"\n".to_string(),
            "sources.timeout",
        ),
        (
            "[sources]\nmax_stale = \"-1h\"\n".to_string(),
            "sources.max_stale",
        ),
        (
            "[sources.vault]\nauth = \"approle\"\nrole_id = \"r\"\nsecret_id_file = \"/x\"\n"
                .to_string(),
            "sources.vault.address",
        ),
        (
            format!("{vault}kv_ttl = \"often\"\n"),
            "sources.vault.kv_ttl",
        ),
        (
            format!("{vault}lease_end = \"never\"\n"),
            "sources.vault.lease_end",
        ),
        (
            vault.replace("auth = \"approle\"", "auth = \"ldap\""),
            "sources.vault.auth",
        ),
        (format!("{vault}colour = \"blue\"\n"), "colour"),
        (
            "[sources.tool]\ntimeout = \"2s\"\n".to_string(),
            "sources.tool.command",
        ),
        (
            "[sources.tool]\ncommand = [\"/bin/cat\"]\nrun_as = \"no-such-account-kp16\"\n"
                .to_string(),
            "sources.tool.run_as",
        ),
        (
            format!(
                "[sources.tool]\ncommand = [\"/bin/cat\"]\n{run_as}timeout = \"2 fortnights\"\n"
            ),
            "sources.tool.timeout",
        ),
        (
            format!("[sources.tool]\ncommand = [\"/bin/cat\"]\n{run_as}max_bytes = \"lots\"\n"),
            "max_bytes",
        ),
    ];
    if keyport::osuser::is_root() {
        cases.push((
            "[sources.tool]\ncommand = [\"/bin/cat\"]\n".to_string(),
            "sources.tool.run_as",
        ));
    }
    // Every case is tried; the test fails with all the ones that did not hold.
    let mut wrong = Vec::new();
    for (n, (config, key)) in cases.iter().enumerate() {
        let path = sb.dir.path().join(format!("bad-{n}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = sb
            .keyport()
            .env("KEYPORT_CONFIG", &path)
            .args([
                "serve",
                "--ssh-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A daemon that took the config keeps running: stopped after a while, and a failure.
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let started = child.try_wait().unwrap().is_none();
        if started {
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        if started || out.status.success() {
            wrong.push(format!("started with {config:?}"));
        } else if !said.contains(key) {
            wrong.push(format!("{config:?}: {key} not named in {said}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
