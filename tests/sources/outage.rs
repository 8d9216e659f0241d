//! OpenBao down: stale-if-error up to `max_stale`, then a required secret refuses the session
//! and a non-required one is skipped, a pty session told each time.

use std::time::{Duration, Instant};

use super::common::Sandbox;
use super::{Bao, await_events, exec, gateway, ok, pty, sample, text};

const REQ_VALUE: &str = "req-outage-canary-e81b2a";
const OPT_VALUE: &str = "opt-outage-canary-5d7fc3";
const REQ_REF: &str = "vault://secret/team/req#v";
const OPT_REF: &str = "vault://secret/team/opt#v";

/// Sleeps until `at`.
fn until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

#[test]
fn with_openbao_down_cached_values_serve_until_max_stale_then_required_refuses() {
    let sb = Sandbox::new();
    let mut bao = Bao::start(&sb);
    bao.server.kv_put("team/req", &[("v", REQ_VALUE)]);
    bao.server.kv_put("team/opt", &[("v", OPT_VALUE)]);
    let config = format!(
        "[sources]\ntimeout = \"3s\"\nmax_stale = \"6s\"\n{}",
        bao.vault_table("kv_ttl = \"1s\"")
    );
    let g = gateway(&sb, "keyport", &config, &[]);
    ok(
        &sb,
        &[
            "secret",
            "create",
            "req",
            "--source",
            REQ_REF,
            "--env",
            "REQ_TOKEN",
            "--required",
        ],
    );
    ok(
        &sb,
        &[
            "secret",
            "create",
            "opt",
            "--source",
            OPT_REF,
            "--env",
            "OPT_TOKEN",
        ],
    );
    let show = "printf '<%s|%s>\\n' \"${REQ_TOKEN-unset}\" \"${OPT_TOKEN-unset}\"";

    let fetched = Instant::now();
    let out = exec(&g, show);
    assert_eq!(
        super::stdout_of(&out),
        format!("<{REQ_VALUE}|{OPT_VALUE}>\n")
    );
    bao.server.stop();

    // Past kv_ttl, within max_stale: the values from before, said so, audited.
    until(fetched + Duration::from_millis(1500));
    let shell = pty(&g, show);
    let said = text(&shell).replace('\r', "");
    let within = fetched.elapsed() < Duration::from_secs(5);
    if within {
        assert_eq!(shell.status.code(), Some(0), "{said}");
        assert!(
            said.contains(&format!("<{REQ_VALUE}|{OPT_VALUE}>")),
            "{said}"
        );
        for name in ["req", "opt"] {
            let notice = said
                .lines()
                .find(|l| l.starts_with(&format!("keyport: secret {name}: ")))
                .unwrap_or_else(|| panic!("no stale notice for {name}: {said}"));
            assert!(notice.contains("using the value from"), "{notice}");
        }
        for name in ["req", "opt"] {
            let stale = await_events(&g.api, "source.stale", name, 1, Duration::from_secs(5));
            let d = &stale[0]["detail"];
            assert_eq!(d["outcome"], "stale", "{d}");
            assert!(
                d["age_secs"].as_u64().is_some_and(|a| (1..=5).contains(&a)),
                "{d}"
            );
            assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
        }
        // An exec session too gets them.
        let quiet = exec(&g, show);
        assert_eq!(
            super::stdout_of(&quiet),
            format!("<{REQ_VALUE}|{OPT_VALUE}>\n")
        );
    }

    // Past max_stale: the required one refuses the session; nothing runs.
    until(fetched + Duration::from_millis(6800));
    let refused = exec(&g, "echo ran");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("ran"));
    let said = text(&refused);
    let prefix = format!("keyport: secret req is required but {REQ_REF} could not be resolved: ");
    let line = said
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no refusal line in {said}"));
    assert!(line.len() > prefix.len(), "a reason: {line}");
    assert!(
        super::eventually(Duration::from_secs(5), || !g
            .api
            .audit_rows("session.blocked")
            .is_empty()),
        "the refusal is audited as session.blocked"
    );
    let shell = pty(&g, show);
    assert_eq!(shell.status.code(), Some(1), "{}", text(&shell));
    assert!(!text(&shell).contains(OPT_VALUE), "{}", text(&shell));

    // Not required any more: skipped, both, and the pty session is told.
    ok(&sb, &["secret", "update", "req", "--no-required"]);
    let shell = pty(&g, show);
    let said = text(&shell).replace('\r', "");
    assert_eq!(shell.status.code(), Some(0), "{said}");
    assert!(said.contains("<unset|unset>"), "{said}");
    for (name, reference) in [("req", REQ_REF), ("opt", OPT_REF)] {
        let prefix = format!("keyport: secret {name} skipped: {reference} could not be resolved (");
        assert!(
            said.lines()
                .any(|l| l.starts_with(&prefix) && l.ends_with(')')),
            "no skip notice for {name}: {said}"
        );
    }
    let failed = await_events(&g.api, "source.failed", "opt", 1, Duration::from_secs(5));
    let d = &failed.last().unwrap()["detail"];
    assert_eq!(d["outcome"], "failure", "{d}");
    assert_eq!(d["reference"], OPT_REF, "{d}");
    assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
    let metrics = super::common::Http::new(&g.daemon.url, None)
        .get("metrics")
        .body;
    let count = |outcome| {
        sample(
            &metrics,
            "keyport_source_resolutions_total",
            &[("provider", "vault"), ("outcome", outcome)],
        )
    };
    assert!(count("failure") >= 2.0, "{metrics}");
    if within {
        assert!(count("stale") >= 2.0, "{metrics}");
    }
    for value in [REQ_VALUE, OPT_VALUE] {
        super::assert_nowhere(&sb, &g, value);
    }
}

/// A source that answers "no" is not stood in for: a deleted path (404) ends the cached
/// value at once, where an unreachable source would have kept it up to `max_stale`.
#[test]
fn a_source_that_says_no_is_not_stood_in_for() {
    let sb = Sandbox::new();
    let bao = Bao::start(&sb);
    bao.server.kv_put("team/gone", &[("v", OPT_VALUE)]);
    let config = format!(
        "[sources]\nmax_stale = \"1h\"\n{}",
        bao.vault_table("kv_ttl = \"1s\"")
    );
    let g = gateway(&sb, "keyport", &config, &[]);
    ok(
        &sb,
        &[
            "secret",
            "create",
            "gone",
            "--source",
            "vault://secret/team/gone#v",
            "--env",
            "OPT_TOKEN",
        ],
    );
    let show = "printf '<%s>\\n' \"${OPT_TOKEN-unset}\"";
    let out = exec(&g, show);
    assert_eq!(
        super::stdout_of(&out),
        format!("<{OPT_VALUE}>\n"),
        "{}",
        text(&out)
    );
    // Deleted, metadata and all: Vault answers 404 from now on.
    let deleted = bao
        .server
        .cli(&["kv", "metadata", "delete", "secret/team/gone"]);
    assert!(deleted.status.success(), "{deleted:?}");
    std::thread::sleep(Duration::from_millis(1200));
    let out = pty(&g, show);
    let shown = text(&out);
    assert!(shown.contains("<unset>"), "the value is gone: {shown}");
    assert!(
        shown.contains(
            "keyport: secret gone skipped: vault://secret/team/gone#v could not be resolved"
        ),
        "{shown}"
    );
    assert!(!shown.contains(OPT_VALUE), "{shown}");
    let failed = await_events(&g.api, "source.failed", "gone", 1, Duration::from_secs(5));
    assert!(
        failed[0]["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{failed:?}"
    );
    assert!(super::events(&g.api, "source.stale", "gone").is_empty());
}
