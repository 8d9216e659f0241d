//! The resolver with real commands as providers (exec providers are what a user meets): the
//! protocol, its limits, and the cache — hits within the TTL, stale-if-error within
//! `max_stale`, failures past it. Vault and leases are tested against a real OpenBao in
//! tests/sources.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::{ExecSource, SourceProviders as Settings};

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn provider(command: String, ttl: Duration) -> ExecSource {
    ExecSource {
        command: vec![command],
        run_as: Some(crate::osuser::current().unwrap().name),
        timeout: Duration::from_secs(2),
        max_bytes: 64,
        cache_ttl: ttl,
    }
}

/// Sources with exec providers `providers`, and what they audited.
fn start(
    providers: Vec<(&str, ExecSource)>,
    max_stale: Duration,
) -> (Arc<Sources>, Arc<Mutex<Vec<String>>>) {
    let settings = Settings {
        timeout: Duration::from_secs(3),
        max_stale,
        vault: None,
        exec: providers
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect::<BTreeMap<_, _>>(),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let audit: AuditSink = Arc::new(move |_, action, _, _| log.lock().unwrap().push(action.into()));
    (Sources::start(&settings, None, audit).unwrap(), seen)
}

fn wanted(name: &str, reference: &str, env: bool) -> Wanted {
    Wanted {
        name: name.into(),
        reference: Reference::parse(reference).unwrap(),
        env,
    }
}

fn user(name: &str) -> User {
    User {
        id: name.len() as i64,
        name: name.into(),
    }
}

async fn one(sources: &Arc<Sources>, reference: &str) -> Resolution {
    resolve(sources, "alice", reference, Mode::Session).await
}

async fn resolve(sources: &Arc<Sources>, who: &str, reference: &str, mode: Mode) -> Resolution {
    let mut r = sources
        .resolve(&user(who), vec![wanted("s", reference, true)], mode)
        .await;
    r.resolutions.remove(0)
}

fn value(r: &Resolution) -> Option<String> {
    r.value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v.expose()).into_owned())
}

#[tokio::test]
async fn a_command_gets_the_key_and_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let echo = script(
        dir.path(),
        "echo.sh",
        r#"read key; printf '%s|%s|%s|%s\n' "$key" "$KEYPORT_USER" "$KEYPORT_SOURCE" "$(env | cut -d= -f1 | sort | tr '\n' ,)""#,
    );
    let mut p = provider(echo, Duration::from_secs(60));
    p.max_bytes = 4096;
    let (sources, _) = start(vec![("echo", p)], Duration::ZERO);
    let r = one(&sources, "exec://echo/team/gh").await;
    assert_eq!(r.outcome, Outcome::Miss, "{r:?}");
    let got = value(&r).unwrap();
    let fields: Vec<&str> = got.split('|').collect();
    assert_eq!(&fields[..3], ["team/gh", "alice", "echo"], "{got}");
    // PWD is the shell's own; nothing of the daemon's environment.
    assert_eq!(
        fields[3], "HOME,KEYPORT_SOURCE,KEYPORT_USER,LOGNAME,PATH,PWD,USER,",
        "{got}"
    );
    // One trailing newline was dropped, nothing else.
    assert!(!got.ends_with('\n'));
}

#[tokio::test]
async fn timeouts_caps_and_exit_codes_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let slow = script(dir.path(), "slow.sh", "sleep 30; echo late");
    let big = script(
        dir.path(),
        "big.sh",
        "head -c 100000 /dev/zero | tr '\\0' x",
    );
    let sad = script(
        dir.path(),
        "sad.sh",
        "echo 'no such secret: prod/db' >&2; exit 3",
    );
    let mut quick = provider(slow, Duration::ZERO);
    quick.timeout = Duration::from_secs(1);
    let (sources, _) = start(
        vec![
            ("slow", quick),
            ("big", provider(big, Duration::ZERO)),
            ("sad", provider(sad, Duration::ZERO)),
        ],
        Duration::ZERO,
    );
    let began = std::time::Instant::now();
    let r = one(&sources, "exec://slow/k").await;
    assert_eq!(r.outcome, Outcome::Failure);
    assert!(
        r.error.as_deref().unwrap().contains("timed out after 1s"),
        "{r:?}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    let r = one(&sources, "exec://big/k").await;
    assert!(r.error.as_deref().unwrap().contains("64-byte cap"), "{r:?}");
    let r = one(&sources, "exec://sad/k").await;
    let error = r.error.as_deref().unwrap();
    assert!(
        error.contains("exit status: 3") && error.ends_with(": no such secret: prod/db"),
        "{error}"
    );
    let r = one(&sources, "exec://nobody/k").await;
    assert!(
        r.error.as_deref().unwrap().contains("[sources.nobody]"),
        "{r:?}"
    );
}

#[tokio::test]
async fn values_are_cached_and_stand_in_while_the_source_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value");
    let cat = script(dir.path(), "cat.sh", &format!("cat {}", file.display()));
    // Cached for 1 s; a failing source's last value stands in for 3 s.
    let (sources, _) = start(
        vec![("cat", provider(cat, Duration::from_secs(1)))],
        Duration::from_secs(3),
    );
    std::fs::write(&file, "one\n").unwrap();
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Miss, Some("one"))
    );
    std::fs::write(&file, "two\n").unwrap();
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Hit, Some("one"))
    );
    // Another user's entry is their own.
    let other = resolve(&sources, "bob", "exec://cat/k", Mode::Session).await;
    assert_eq!(other.outcome, Outcome::Miss);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Miss, Some("two"))
    );
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Stale, Some("two")),
        "{r:?}"
    );
    assert!(r.age.unwrap() >= Duration::from_secs(1));
    assert!(r.error.as_deref().unwrap().contains("exit status"), "{r:?}");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, r.value.is_none()),
        (Outcome::Failure, true),
        "{r:?}"
    );
    let metrics = sources.metrics();
    for outcome in ["hit", "miss", "stale", "failure"] {
        assert!(
            metrics.contains(&format!(
                "keyport_source_resolutions_total{{provider=\"cat\",outcome=\"{outcome}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn values_a_session_cannot_take_are_failures() {
    let dir = tempfile::tempdir().unwrap();
    let nul = script(dir.path(), "nul.sh", "printf 'a\\000b'");
    let empty = script(dir.path(), "empty.sh", "printf '\\n'");
    let (sources, _) = start(
        vec![
            ("nul", provider(nul, Duration::ZERO)),
            ("empty", provider(empty, Duration::ZERO)),
        ],
        Duration::ZERO,
    );
    let r = one(&sources, "exec://nul/k").await;
    assert!(r.error.as_deref().unwrap().contains("NUL"), "{r:?}");
    // A file takes it.
    let mut file = sources
        .resolve(
            &user("alice"),
            vec![wanted("s", "exec://nul/k", false)],
            Mode::Session,
        )
        .await;
    assert_eq!(file.resolutions.remove(0).outcome, Outcome::Miss);
    let r = one(&sources, "exec://empty/k").await;
    assert!(r.error.as_deref().unwrap().contains("nothing"), "{r:?}");
    let tested = sources
        .test(
            "alice",
            "s",
            &Reference::parse("exec://nul/k").unwrap(),
            false,
        )
        .await;
    assert_eq!((tested.outcome.as_str(), tested.bytes), ("ok", Some(3)));
    // As an env var's it would not do, and the test says so.
    let tested = sources
        .test(
            "alice",
            "s",
            &Reference::parse("exec://nul/k").unwrap(),
            true,
        )
        .await;
    assert_eq!(tested.outcome, "failed");
    assert!(tested.error.unwrap().contains("NUL"));
}

#[tokio::test]
async fn a_refresh_takes_what_is_cached_and_a_no_is_not_stood_in_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value");
    // Prints the file, or floods past the cap (a "no": nothing may stand in for it) when
    // the file says so.
    let body = format!(
        "v=$(cat {0}) || exit 1; [ \"$v\" = flood ] && head -c 1000 /dev/zero | tr '\\0' x; echo \"$v\"",
        file.display()
    );
    let cat = script(dir.path(), "cat.sh", &body);
    let (sources, _) = start(
        vec![("cat", provider(cat, Duration::ZERO))],
        Duration::from_secs(60),
    );
    // No entry yet: a refresh asks the source.
    std::fs::write(&file, "one").unwrap();
    let r = resolve(&sources, "alice", "exec://cat/k", Mode::Refresh).await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Miss, Some("one"))
    );
    // A session asks again (TTL 0); a refresh takes what is cached, however old.
    std::fs::write(&file, "two").unwrap();
    let r = resolve(&sources, "alice", "exec://cat/k", Mode::Refresh).await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Hit, Some("one"))
    );
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, value(&r).as_deref()),
        (Outcome::Miss, Some("two"))
    );
    // A source that cannot answer: the last value stands in.
    std::fs::remove_file(&file).unwrap();
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(r.outcome, Outcome::Stale, "{r:?}");
    // One that answers what no session can take: nothing stands in, and the entry is gone.
    std::fs::write(&file, "flood").unwrap();
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, r.value.is_none()),
        (Outcome::Failure, true),
        "{r:?}"
    );
    std::fs::remove_file(&file).unwrap();
    let r = one(&sources, "exec://cat/k").await;
    assert_eq!(
        (r.outcome, r.value.is_none()),
        (Outcome::Failure, true),
        "{r:?}"
    );
    // A leased value is never made by a refresh.
    let r = resolve(
        &sources,
        "alice",
        "vault-dyn://database/creds/ro#password",
        Mode::Refresh,
    )
    .await;
    assert!(r.error.unwrap().contains("only for a session"));
}
