//! Relay-mode workspaces, managed by admins: `keyport workspace …` on a real data dir (bad
//! input exits non-zero with one line naming the field and changes nothing), `--scan` against a
//! real OpenSSH sshd (nothing pinned without a yes; the fingerprint `ssh-keygen -l` prints), and
//! `/api/v1/workspaces` (admin CRUD; a user sees only what is granted to them, and a workspace
//! not granted is the same 404 as one that does not exist; every status answered is declared in
//! the OpenAPI document). Every change leaves its audit event. Re-pinning a rebuilt
//! workspace's host keys is tested in tests/workspace_pin.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "workspaces/support.rs"]
mod support;

use std::process::Output;

use common::output::{error_line, stderr};
use common::sshd::Sshd;
use common::{Http, Sandbox, dump, me};
use serde_json::{Value, json};
use support::{
    api_user, host_key, keygen_fingerprint, on_a_terminal, piped, sandbox, show_json,
    workspace_events,
};

fn grant_of<'a>(info: &'a Value, user: &str) -> &'a Value {
    info["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["user"] == user)
        .unwrap_or_else(|| panic!("no grant for {user}: {info}"))
}

/// `command` split at spaces, with the word `KEY` standing for `--host-key LINE`.
fn argv(command: &str, line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in command.split_whitespace() {
        match word {
            "KEY" => out.extend(["--host-key".to_string(), line.to_string()]),
            word => out.push(word.to_string()),
        }
    }
    out
}

/// Runs `keyport COMMAND` (see [`argv`]).
fn run(sb: &Sandbox, command: &str, line: &str) -> Output {
    let args = argv(command, line);
    sb.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs `keyport COMMAND` (see [`argv`]) and insists it succeeds; returns stdout.
fn ok(sb: &Sandbox, command: &str, line: &str) -> String {
    let args = argv(command, line);
    sb.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

const ADD_DEV1: &str =
    "workspace add dev1 --address 127.0.0.1:2200 --os-user dev --owner alice KEY";

#[test]
fn cli_adds_lists_shows_grants_revokes_and_removes_on_the_data_dir() {
    let sb = sandbox();
    let (line, fp) = host_key(&sb, "dev1_host");
    let added = ok(&sb, ADD_DEV1, &line);
    assert!(added.contains("added workspace dev1"), "{added}");
    assert!(added.contains(&fp), "{added}");

    // No login saved: `list` reads the data dir and shows every workspace.
    let listed = sb.ok(&["workspace", "list"]);
    let row = listed.lines().find(|l| l.starts_with("dev1")).unwrap();
    for part in ["127.0.0.1:2200", "dev", "alice", &fp] {
        assert!(row.contains(part), "{part} missing: {listed}");
    }
    let json: Value = serde_json::from_str(&sb.ok(&["workspace", "list", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["name"], "dev1");

    // A grant with its own login: `show` says which login is in effect for whom.
    let granted = sb.ok(&["workspace", "grant", "dev1", "bob", "--os-user", "bob2"]);
    assert!(granted.contains("login bob2"), "{granted}");
    let shown = sb.ok(&["workspace", "show", "dev1"]);
    assert!(shown.contains(&fp) && shown.contains("pinned"), "{shown}");
    for (user, owner, login) in [
        ("alice", "yes", "dev (workspace)"),
        ("bob", "no", "bob2 (grant)"),
    ] {
        let row = shown.lines().find(|l| l.starts_with(user)).unwrap();
        assert!(row.contains(owner) && row.contains(login), "{shown}");
    }
    let info = show_json(&sb, "dev1");
    assert_eq!(info["address"], "127.0.0.1:2200");
    assert_eq!(info["os_user"], "dev");
    assert_eq!(info["host_keys"][0]["fingerprint"], fp.as_str());
    assert_eq!(info["host_keys"][0]["source"], "pinned");
    assert_eq!(grant_of(&info, "alice")["owner"], true);
    assert_eq!(grant_of(&info, "alice")["login"], "dev");
    assert_eq!(grant_of(&info, "alice")["os_user"], Value::Null);
    assert_eq!(grant_of(&info, "bob")["owner"], false);
    assert_eq!(grant_of(&info, "bob")["login"], "bob2");

    // Granting again without --os-user goes back to the workspace's login.
    sb.ok(&["workspace", "grant", "dev1", "bob"]);
    assert_eq!(grant_of(&show_json(&sb, "dev1"), "bob")["login"], "dev");

    sb.ok(&["workspace", "revoke", "dev1", "bob"]);
    let info = show_json(&sb, "dev1");
    assert_eq!(info["grants"].as_array().unwrap().len(), 1, "{info}");
    // The last owner's grant stays.
    let out = sb.run(&["workspace", "revoke", "dev1", "alice"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(error_line(&out).contains("last owner"), "{}", stderr(&out));

    // Removing asks; without a terminal and without -y nothing is removed.
    let out = piped(sb.keyport().args(["workspace", "remove", "dev1"]), "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    sb.ok(&["workspace", "show", "dev1"]);
    let removed = sb.ok(&["workspace", "remove", "dev1", "-y"]);
    assert!(removed.contains("removed workspace dev1"), "{removed}");
    let out = sb.run(&["workspace", "show", "dev1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(error_line(&out).contains("workspace dev1 not found"));

    // One event per change, naming things only, by the CLI's OS user.
    let events = workspace_events(&sb);
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|(a, _, u, _)| (a.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("workspace.add", ""),
            ("workspace.grant", "bob"),
            ("workspace.grant", "bob"),
            ("workspace.revoke", "bob"),
            ("workspace.remove", ""),
        ]
    );
    let actor = format!("cli:{}", me().name);
    assert!(events.iter().all(|(_, a, _, _)| *a == actor), "{events:?}");
    assert_eq!(events[0].3["workspace"], "dev1");
    assert_eq!(events[0].3["owners"], json!(["alice"]));
    assert_eq!(events[0].3["host_keys"], json!([fp]));
    assert_eq!(events[1].3["os_user"], "bob2");
}

#[test]
fn cli_bad_input_names_the_field_and_changes_nothing() {
    let sb = sandbox();
    let (line, _) = host_key(&sb, "dev1_host");
    ok(&sb, ADD_DEV1, &line);
    let before = dump(&sb.db());
    // "exit code | what the one error line says | command"; STD is the valid rest of an add.
    let cases = [
        "2 | address: must be HOST:PORT | add dev2 --address nohost STD",
        "2 | address: port 70000 is out of range | add dev2 --address 10.0.0.1:70000 STD",
        "2 | address: port 0 is out of range | add dev2 --address 10.0.0.1:0 STD",
        "2 | host-key: is not an OpenSSH public key | add dev2 --address h:22 --os-user dev \
         --owner alice --host-key ssh-ed25519",
        "2 | os-user: must be a login name | add dev2 --address h:22 --os-user=-x --owner alice KEY",
        "2 | owner: there is no keyport user named zed | add dev2 --address h:22 --os-user dev \
         --owner zed KEY",
        "2 | name: must be 1 to 64 characters | add a:b --address h:22 STD",
        "4 | name: a workspace named dev1 already exists | add dev1 --address h:22 STD",
        // Caught before any scan: nothing listens on port 1, and no scan error shows.
        "4 | name: a workspace named dev1 already exists | add dev1 --address 127.0.0.1:1 \
         --os-user dev --owner alice --scan -y",
        "2 | owner: there is no keyport user named zed | add dev2 --address 127.0.0.1:1 \
         --os-user dev --owner zed --scan -y",
        "2 | cannot be used with | add dev2 --address h:22 STD --scan",
        "2 | <--host-key <KEY>|--scan> | add dev2 --address h:22 --os-user dev --owner alice",
        "2 | --owner <USER> | add dev2 --address h:22 --os-user dev KEY",
        "2 | os-user: must be a login name | grant dev1 bob --os-user=1000",
        "3 | workspace nope not found | grant nope bob",
        "3 | user zed not found | grant dev1 zed",
        "3 | grant of workspace dev1 to bob not found | revoke dev1 bob",
        "3 | workspace nope not found | remove nope -y",
        "3 | workspace nope not found | show nope",
    ];
    for case in cases {
        let mut parts = case.splitn(3, " | ");
        let (code, message, command) = (parts.next(), parts.next(), parts.next());
        let code: i32 = code.unwrap().parse().unwrap();
        let message = message.unwrap();
        let rest = command
            .unwrap()
            .replace("STD", "--os-user dev --owner alice KEY");
        let args = format!("workspace {rest}");
        let out = run(&sb, &args, &line);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(message), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        if text.contains("keyport: ") {
            // Ours: one line, and it is the last.
            let line = error_line(&out);
            assert!(
                line.starts_with("keyport: ") && line.contains(message),
                "{args:?}: {text}"
            );
            assert_eq!(text.matches("keyport: ").count(), 1, "{args:?}: {text}");
        } else {
            // clap's usage errors: one `error:` line.
            assert_eq!(text.matches("error:").count(), 1, "{args:?}: {text}");
        }
        assert_eq!(dump(&sb.db()), before, "{args:?} changed the database");
    }
    // Every broken rule at once, each named.
    let all = "workspace add a:b --address nohost --os-user=-x --owner zed --host-key nope";
    let out = run(&sb, all, &line);
    assert_eq!(out.status.code(), Some(2));
    let line = error_line(&out);
    for field in ["name:", "address:", "os-user:", "host-key:", "owner:"] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert_eq!(dump(&sb.db()), before);
}

#[test]
fn scan_pins_the_sshd_host_key_only_after_yes() {
    if !keyport::testing::needs_root("a real sshd") {
        return;
    }
    let sb = sandbox();
    let sshd = Sshd::start(&sb, &me().name);
    let address = format!("127.0.0.1:{}", sshd.port);
    // `Sshd` keeps its host key in the sandbox's `sshd/` directory.
    let expected = keygen_fingerprint(&sb.dir.path().join("sshd/host_ed25519.pub"));
    let before = dump(&sb.db());
    let scan = format!("workspace add dev1 --address {address} --os-user dev --owner alice --scan");
    let args = argv(&scan, "");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let announced = format!("The host key of {address} is ED25519 {expected}");

    // stdin not a terminal: even a piped "yes" is no confirmation.
    for stdin in ["", "yes\n"] {
        let out = piped(sb.keyport().args(&args), stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&announced), "{text}");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(error_line(&out).contains("not pinned"), "{}", stderr(&out));
        assert_eq!(dump(&sb.db()), before, "pinned without a yes");
    }

    // On a terminal: "no" pins nothing; "yes" pins.
    let out = on_a_terminal(&sb, &args, "no");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&announced), "{text}");
    assert!(text.contains("not pinned"), "{text}");
    assert!(!out.status.success(), "{text}");
    assert_eq!(dump(&sb.db()), before, "pinned after a no");
    let out = on_a_terminal(&sb, &args, "yes");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("added workspace dev1"), "{text}");
    let info = show_json(&sb, "dev1");
    assert_eq!(info["host_keys"][0]["fingerprint"], expected.as_str());
    assert_eq!(info["host_keys"][0]["source"], "scan");
    sb.ok(&["workspace", "remove", "dev1", "-y"]);

    // -y: pinned without a question, and `show` prints ssh-keygen's fingerprint.
    let out = piped(sb.keyport().args(&args).arg("-y"), "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&announced));
    let shown = sb.ok(&["workspace", "show", "dev1"]);
    let key_row = shown.lines().find(|l| l.starts_with("SHA256:")).unwrap();
    assert!(
        key_row.starts_with(&expected) && key_row.contains("scan"),
        "{shown}"
    );
    let added: Vec<_> = workspace_events(&sb)
        .into_iter()
        .filter(|(a, _, _, _)| a == "workspace.add")
        .collect();
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(
        added.iter().all(|(_, _, _, d)| d["source"] == "scan"),
        "{added:?}"
    );
}

#[test]
fn api_admins_manage_workspaces_and_users_see_only_their_grants() {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let alice = api_user(&sb, &daemon, &admin, "alice");
    let bob = api_user(&sb, &daemon, &admin, "bob");
    let (line, fp) = host_key(&sb, "dev1_host");
    let body = json!({
        "name": "dev1", "address": "10.0.0.5:22", "os_user": "dev",
        "owners": ["alice"], "host_keys": [line],
    });

    // Users cannot create, remove or grant: 403, as on other admin-only routes.
    let r = bob.send("POST", "workspaces", &body);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = admin.send("POST", "workspaces", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert_eq!(created["address"], "10.0.0.5:22");
    assert_eq!(created["host_keys"][0]["fingerprint"], fp.as_str());
    assert_eq!(grant_of(&created, "alice")["owner"], true);
    let r = admin.send("POST", "workspaces", &body);
    assert_eq!(r.status, 409, "{}", r.body);
    let bad = json!({
        "name": "dev2", "address": "10.0.0.5:99999", "os_user": "dev",
        "owners": ["zed"], "host_keys": ["ssh-ed25519 AAAA"],
    });
    let r = admin.send("POST", "workspaces", &bad);
    assert_eq!(r.status, 400, "{}", r.body);
    let fields: Vec<String> = r.json()["validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["address", "host-key", "owner"], "{}", r.body);
    for (method, path) in [
        ("PUT", "workspaces/dev1/grants/bob"),
        ("DELETE", "workspaces/dev1/grants/alice"),
        ("DELETE", "workspaces/dev1"),
        ("DELETE", "workspaces/nope"),
    ] {
        let r = bob.raw(method, path, None, None);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }

    // Admins see everything.
    let r = admin.get("workspaces");
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(
        admin.get("workspaces/dev1").json()["address"],
        "10.0.0.5:22"
    );

    // alice (an owner) sees dev1 without its address, with her own grant only.
    let mine = alice.get("workspaces").json();
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert!(mine[0].get("address").is_none(), "{mine}");
    assert_eq!(mine[0]["host_keys"][0]["fingerprint"], fp.as_str());
    assert_eq!(mine[0]["grants"], json!([grant_of(&created, "alice")]));
    assert_eq!(alice.get("workspaces/dev1").status, 200);

    // bob, not granted: dev1 is exactly as unknown as a name nobody registered.
    assert_eq!(bob.get("workspaces").json(), json!([]));
    let hidden = bob.get("workspaces/dev1");
    let unknown = bob.get("workspaces/nope");
    assert_eq!((hidden.status, unknown.status), (404, 404));
    assert_eq!(
        hidden.body.replace("dev1", "NAME"),
        unknown.body.replace("nope", "NAME"),
        "a workspace not granted must look like one that does not exist"
    );
    assert_eq!(admin.get("workspaces/nope").body, unknown.body);

    // Granted, with a login of his own: he sees it, with only his grant.
    let r = admin.send(
        "PUT",
        "workspaces/dev1/grants/bob",
        &json!({"os_user": "bob2"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(grant_of(&r.json(), "bob")["login"], "bob2");
    let seen = bob.get("workspaces/dev1").json();
    assert_eq!(seen["grants"].as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen["grants"][0]["login"], "bob2");
    assert_eq!(bob.get("workspaces").json().as_array().unwrap().len(), 1);

    // `keyport workspace list` goes over the API with a login: bob sees his view.
    let listed = sb
        .keyport()
        .env("KEYPORT_URL", &daemon.url)
        .env("KEYPORT_TOKEN", bob.token.as_deref().unwrap())
        .args(["workspace", "list"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.starts_with("NAME") && !text.contains("ADDRESS"),
        "{text}"
    );
    let row = text.lines().find(|l| l.starts_with("dev1")).unwrap();
    assert!(row.contains("bob2") && row.contains(&fp), "{text}");
    // The admin (the credentials `serve` saved) sees every workspace with its address.
    let text = sb.ok(&["workspace", "list"]);
    assert!(text.contains("10.0.0.5:22"), "{text}");

    // No body: the grant goes back to the workspace's login.
    let r = admin.raw("PUT", "workspaces/dev1/grants/bob", None, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(grant_of(&r.json(), "bob")["login"], "dev");
    for (path, body, status) in [
        ("workspaces/dev1/grants/bob", json!({"os_user": "-x"}), 400),
        ("workspaces/dev1/grants/bob", json!({"login": "x"}), 400),
        ("workspaces/dev1/grants/zed", json!({}), 404),
        ("workspaces/nope/grants/bob", json!({}), 404),
    ] {
        let r = admin.send("PUT", path, &body);
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
    }

    let r = admin.delete("workspaces/dev1/grants/bob");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(bob.get("workspaces/dev1").status, 404);
    assert_eq!(admin.delete("workspaces/dev1/grants/bob").status, 404);
    assert_eq!(admin.delete("workspaces/dev1/grants/alice").status, 409);
    assert_eq!(admin.delete("workspaces/dev1").status, 204);
    assert_eq!(admin.get("workspaces/dev1").status, 404);
    assert_eq!(admin.delete("workspaces/dev1").status, 404);
    assert_eq!(alice.get("workspaces").json(), json!([]));

    // One audit event per change, by the API caller.
    let admin_name = admin.get("users/me").json()["name"]
        .as_str()
        .unwrap()
        .to_string();
    for (action, count) in [
        ("workspace.add", 1),
        ("workspace.grant", 2),
        ("workspace.revoke", 1),
        ("workspace.remove", 1),
    ] {
        let rows = admin.audit_rows(action);
        assert_eq!(rows.len(), count, "{action}: {rows:?}");
        for row in &rows {
            assert_eq!(row["actor"], format!("user:{admin_name}"), "{row}");
            assert_eq!(row["detail"]["workspace"], "dev1", "{row}");
        }
    }
}

/// The statuses `/api/v1/workspaces…` answers are the ones the OpenAPI document declares for
/// that operation (what tests/api_fuzz checks for every route it sweeps), under each kind of
/// caller and body.
#[test]
fn api_answers_only_declared_statuses() {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let admin = Http::new(&daemon.url, Some(&sb.bootstrap_token()));
    let bob = api_user(&sb, &daemon, &admin, "bob");
    let anon = Http::new(&daemon.url, None);
    let doc = anon.get("openapi.json").json();
    let (line, _) = host_key(&sb, "dev1_host");
    let admin_name = admin.get("users/me").json()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let create = json!({
        "name": "dev1", "address": "127.0.0.1:22", "os_user": "dev",
        "owners": [admin_name], "host_keys": [line],
    })
    .to_string();
    let pin = json!({ "host_keys": [line] }).to_string();
    let routes = [
        ("GET", "workspaces", "/api/v1/workspaces"),
        ("POST", "workspaces", "/api/v1/workspaces"),
        ("GET", "workspaces/dev1", "/api/v1/workspaces/{name}"),
        ("GET", "workspaces/nope", "/api/v1/workspaces/{name}"),
        (
            "PUT",
            "workspaces/dev1/grants/bob",
            "/api/v1/workspaces/{name}/grants/{user}",
        ),
        (
            "PUT",
            "workspaces/dev1/grants/me",
            "/api/v1/workspaces/{name}/grants/{user}",
        ),
        (
            "PUT",
            "workspaces/nope/grants/bob",
            "/api/v1/workspaces/{name}/grants/{user}",
        ),
        (
            "DELETE",
            "workspaces/dev1/grants/bob",
            "/api/v1/workspaces/{name}/grants/{user}",
        ),
        (
            "DELETE",
            "workspaces/dev1/grants/me",
            "/api/v1/workspaces/{name}/grants/{user}",
        ),
        (
            "PUT",
            "workspaces/dev1/host-keys",
            "/api/v1/workspaces/{name}/host-keys",
        ),
        (
            "PUT",
            "workspaces/nope/host-keys",
            "/api/v1/workspaces/{name}/host-keys",
        ),
        ("DELETE", "workspaces/dev1", "/api/v1/workspaces/{name}"),
        ("DELETE", "workspaces/nope", "/api/v1/workspaces/{name}"),
    ];
    let bodies: [(Option<&[u8]>, Option<&str>); 7] = [
        (None, None),
        (Some(b"{"), None),
        (Some(b"{}"), None),
        (Some(b"{\"os_user\": 7}"), None),
        (Some(create.as_bytes()), None),
        (Some(pin.as_bytes()), None),
        (Some(b"x"), Some("text/plain")),
    ];
    let mut answered = std::collections::BTreeSet::new();
    // Twice: once before dev1 exists for everyone, then again with it there.
    for _round in 0..2 {
        for (method, path, template) in routes {
            let declared = doc["paths"][template][method.to_lowercase()]["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {template} is not documented"));
            for (who, client) in [("admin", &admin), ("bob", &bob), ("anonymous", &anon)] {
                // (ureq sends no body with GET or DELETE, and the handlers read none.)
                let takes_body = matches!(method, "POST" | "PUT");
                for (body, content_type) in bodies.iter().filter(|b| takes_body || b.0.is_none()) {
                    // A fresh connection each time: a refused request's unread body makes the
                    // server close the one it came on.
                    let client = Http::new(&daemon.url, client.token.as_deref());
                    let r = client.raw(method, path, *body, *content_type);
                    assert!(
                        declared.contains_key(&r.status.to_string()),
                        "{who} {method} {path} {:?}: {} is not declared ({:?}): {}",
                        body.map(String::from_utf8_lossy),
                        r.status,
                        declared.keys().collect::<Vec<_>>(),
                        r.body
                    );
                    answered.insert(r.status);
                }
            }
        }
        let r = admin.raw("POST", "workspaces", Some(create.as_bytes()), None);
        assert!(matches!(r.status, 201 | 409), "{}", r.body);
    }
    // The sweep reached every kind of answer, so the check above was not vacuous.
    for status in [200, 201, 204, 400, 401, 403, 404, 409, 415] {
        assert!(answered.contains(&status), "no {status} in {answered:?}");
    }
}
