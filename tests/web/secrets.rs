//! Secrets through the pages: the same rules, errors and audit as the API, a real `ssh`
//! session seeing each change, and no value on any page.

use crate::client::{Browser, link};
use crate::common;

#[test]
fn secrets_through_the_pages() {
    let (_sb, daemon, key, api) = common::ssh_daemon(&[]);
    let me = common::me().name;
    let env_of = |name: &str| {
        let out = daemon
            .ssh(&me, &key)
            .arg(format!("printf %s \"${name}\""))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut web = Browser::new(&daemon.url);
    web.sign_in(&link(&api));
    let (first, second) = ("web-canary-first-1f2e", "web-canary-second-9a8b\nline two");

    // Create: the API's rules, each next to its field; nothing is stored.
    let bad = web.post(
        "/secrets",
        &[
            ("name", "gh"),
            ("value", first),
            ("env", "1BAD"),
            ("file", "relative/path"),
            ("kind", "token"),
        ],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("id=\"env-error\""), "{}", bad.body);
    assert!(bad.body.contains("id=\"file-error\""), "{}", bad.body);
    assert!(bad.body.contains("value=\"1BAD\""), "the typed fields stay");
    assert_eq!(api.get("users/me/secrets/gh").status, 404);
    let p = web.post(
        "/secrets",
        &[("name", "gh"), ("env", "GH_TOKEN"), ("kind", "token")],
    );
    assert!(p.body.contains("id=\"value-error\""), "{}", p.body);
    let p = web.post(
        "/secrets",
        &[
            ("name", "gh"),
            ("value", first),
            ("env", "GH_TOKEN"),
            ("kind", "token"),
            ("description", "<b>bold</b> & \"quoted\""),
        ],
    );
    p.redirects_to("/secrets?done=created&name=gh");
    let list = web.get(p.location.as_deref().unwrap());
    assert!(
        list.body
            .contains("<p id=\"flash\" role=\"status\">Created gh.</p>"),
        "{}",
        list.body
    );
    assert!(list.body.contains("tr id=\"secret-gh\""));
    assert!(
        list.body
            .contains("&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;"),
        "{}",
        list.body
    );
    assert!(!list.body.contains("<b>bold</b>"));
    assert_eq!(env_of("GH_TOKEN"), first);
    // A clash is a conflict next to its field (env names are unique case-insensitively).
    let p = web.post(
        "/secrets",
        &[
            ("name", "gh2"),
            ("value", "x-canary-3"),
            ("env", "gh_token"),
            ("kind", "other"),
        ],
    );
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(p.body.contains("id=\"env-error\""), "{}", p.body);
    // The same audit event as through the API, by the same actor.
    let created = api.audit_rows("secret.create");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor"], format!("user:{me}"));

    // Edit: the value field is empty, and only what changed is changed.
    let edit = web.get("/secrets/gh/edit");
    assert!(
        edit.body.contains("<textarea id=\"value\" name=\"value\""),
        "{}",
        edit.body
    );
    assert!(edit.body.contains("value=\"GH_TOKEN\""));
    let same = [
        ("description", "<b>bold</b> & \"quoted\""),
        ("env", "GH_TOKEN"),
        ("kind", "token"),
    ];
    web.post("/secrets/gh/edit", &same)
        .redirects_to("/secrets?done=unchanged&name=gh");
    let mut changed = same.to_vec();
    changed.push(("value", "web-canary-second-9a8b\r\nline two"));
    web.post("/secrets/gh/edit", &changed)
        .redirects_to("/secrets?done=updated&name=gh");
    assert_eq!(
        env_of("GH_TOKEN"),
        second,
        "a textarea's CRLF is the LF typed"
    );
    let updates = api.audit_rows("secret.update");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["detail"]["fields"], serde_json::json!(["value"]));
    let p = web.post("/secrets/gh/edit", &[("env", "1BAD"), ("kind", "token")]);
    assert_eq!(p.status, 400);
    assert!(p.body.contains("id=\"env-error\""), "{}", p.body);
    assert_eq!(api.get("users/me/secrets/gh").json()["env"], "GH_TOKEN");

    // Disable, enable.
    web.post("/secrets/gh/enabled", &[("enabled", "false")])
        .redirects_to("/secrets?done=disabled&name=gh");
    assert_eq!(env_of("GH_TOKEN"), "");
    let list = web.get("/secrets");
    assert!(
        list.body.contains("class=\"toggle\">Enable<"),
        "{}",
        list.body
    );
    web.post("/secrets/gh/enabled", &[("enabled", "true")])
        .redirects_to("/secrets?done=enabled&name=gh");
    assert_eq!(env_of("GH_TOKEN"), second);

    // Import: every problem at once, nothing created; then all of it.
    let p = web.post(
        "/secrets/import",
        &[
            ("format", "dotenv"),
            (
                "content",
                "GOOD=import-canary-1\n1BAD=x\nALSO BAD\nGH_TOKEN=dup\n",
            ),
        ],
    );
    assert_eq!(p.status, 400, "{}", p.body);
    for problem in [
        "secret 1BAD: must match",
        "line 3: expected NAME=VALUE",
        "GH_TOKEN is already used",
    ] {
        assert!(p.body.contains(problem), "{problem}: {}", p.body);
    }
    assert_eq!(api.get("users/me/secrets/GOOD").status, 404);
    let p = web.post(
        "/secrets/import",
        &[
            ("format", "dotenv"),
            (
                "content",
                "IMP_A=import-canary-1\r\nIMP_B=import-canary-2\r\n",
            ),
        ],
    );
    p.redirects_to("/secrets?done=imported&count=2");
    assert_eq!(env_of("IMP_B"), "import-canary-2");

    // Delete: asks first, then deletes.
    let confirm = web.get("/secrets/gh/delete");
    assert!(confirm.body.contains("id=\"delete\""));
    assert_eq!(
        api.get("users/me/secrets/gh").status,
        200,
        "a GET deletes nothing"
    );
    web.post("/secrets/gh/delete", &[])
        .redirects_to("/secrets?done=deleted&name=gh");
    assert_eq!(api.get("users/me/secrets/gh").status, 404);
    assert_eq!(env_of("GH_TOKEN"), "");
    assert_eq!(web.post("/secrets/gh/delete", &[]).status, 404);

    // Secrets may be named like the pages beside them: `new` and `import` are edited and
    // deleted as any other.
    for name in ["new", "import"] {
        let env = format!("R_{name}");
        let fields = [
            ("name", name),
            ("value", "route-canary-4"),
            ("env", &env),
            ("kind", "other"),
        ];
        web.post("/secrets", &fields)
            .redirects_to(&format!("/secrets?done=created&name={name}"));
        let edit = web.get(&format!("/secrets/{name}/edit"));
        assert!(
            edit.body.contains(&format!("<h1>Edit {name}</h1>")),
            "{}",
            edit.body
        );
        let fields = [("description", "renamed"), ("env", &env), ("kind", "other")];
        web.post(&format!("/secrets/{name}/edit"), &fields)
            .redirects_to(&format!("/secrets?done=updated&name={name}"));
        let stored = api.get(&format!("users/me/secrets/{name}")).json();
        assert_eq!(stored["description"], "renamed");
        web.post(&format!("/secrets/{name}/delete"), &[])
            .redirects_to(&format!("/secrets?done=deleted&name={name}"));
    }
    // A form that does not parse is a page naming the problem, not a bare error.
    let p = web.post("/secrets/IMP_A/enabled", &[]);
    assert_eq!(p.status, 400);
    assert!(
        p.body.contains("<h1>Not done</h1>") && p.body.contains("enabled"),
        "{}",
        p.body
    );
    // A page nobody serves is a page; under /api/ the API's JSON.
    let p = web.get("/no-such-page");
    assert_eq!(p.status, 404);
    assert!(p.body.contains("<h1>Not found</h1>"), "{}", p.body);
    assert!(p.header("content-security-policy").is_some());
    let p = web.get("/api/v1/no-such-route");
    assert_eq!(p.status, 404);
    assert!(p.body.starts_with('{'), "{}", p.body);

    // A crafted message link shows only keyport's own words.
    let p = web.get("/secrets?done=created&name=%3Cscript%3Ealert(1)%3C/script%3E");
    assert!(p.body.contains("Created the secret."), "{}", p.body);
    assert!(!p.body.contains("alert(1)"));
    let p = web.get("/audit?kind=%3Cscript%3E");
    assert!(p.body.contains("value=\"&lt;script&gt;\""), "{}", p.body);

    for value in [
        first,
        second,
        "web-canary-second-9a8b",
        "import-canary-1",
        "import-canary-2",
        "x-canary-3",
        "route-canary-4",
    ] {
        web.assert_never_returned(value);
    }
}
