//! An exec provider (`[sources.NAME] command = [...]`, `exec://NAME/KEY`): a shell script
//! that answers by key — its identity and environment, a value, a hang, too much output, a
//! failure.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::common::Sandbox;
use super::{admin, await_events, cli, eventually, exec, gateway, ok, ok_line, stdout_of, text};

/// The provider: KEY on stdin, the value on stdout. `PIDS` is a directory it may write to.
const SCRIPT: &str = r#"#!/bin/sh
read -r key
case "$key" in
  ident)
    names=$(tr '\0' '\n' < /proc/$$/environ | cut -d= -f1 | sort | tr '\n' ',')
    printf 'uid=%s user=%s logname=%s kuser=%s ksource=%s env=%s\n' \
      "$(id -u)" "$USER" "$LOGNAME" "$KEYPORT_USER" "$KEYPORT_SOURCE" "$names"
    ;;
  token) printf 'exec-canary-%s-91c3\n' "$KEYPORT_SOURCE" ;;
  hang) echo $$ > PIDS/hang.pid; exec sleep 30 ;;
  big) head -c 5000 /dev/zero | tr '\0' x ;;
  *) echo "no such key: $key" >&2; exit 3 ;;
esac
"#;

#[test]
fn an_exec_provider_answers_as_its_account_and_hangs_and_floods_are_cut_off() {
    let sb = Sandbox::new();
    let root = keyport::osuser::is_root();
    // The account it runs as must reach the script: the sandbox is opened to traversal only.
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = sb.dir.path().join("provider");
    let pids = dir.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&pids, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = dir.join("provider.sh");
    std::fs::write(&script, SCRIPT.replace("PIDS", pids.to_str().unwrap())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (run_as, account) = if root {
        (
            "run_as = \"nobody\"\n",
            keyport::osuser::lookup("nobody").unwrap(),
        )
    } else {
        ("", keyport::osuser::current().unwrap())
    };
    let config = format!(
        "[sources]\ntimeout = \"3s\"\n[sources.tool]\ncommand = [\"{}\"]\n{run_as}\
         timeout = \"1s\"\nmax_bytes = 4096\n",
        script.display()
    );
    let g = gateway(
        &sb,
        "keyport",
        &config,
        &[("KEYPORT_SOURCES_CANARY", "daemon-env-leak")],
    );
    for (name, key) in [
        ("ident", "ident"),
        ("token", "token"),
        ("hang", "hang"),
        ("big", "big"),
    ] {
        let env = name.to_uppercase();
        ok(
            &sb,
            &[
                "secret",
                "create",
                name,
                "--source",
                &format!("exec://tool/{key}"),
                "--env",
                &env,
            ],
        );
    }

    let began = Instant::now();
    let out = exec(
        &g,
        "printf '%s\\n%s\\n%s|%s\\n' \"$IDENT\" \"$TOKEN\" \"${HANG-unset}\" \"${BIG-unset}\"",
    );
    let took = began.elapsed();
    let got = stdout_of(&out);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 3, "{got}");
    // Who it ran as, and with what environment: only the six variables, nothing of keyport's.
    let ident = lines[0];
    assert!(
        ident.starts_with(&format!(
            "uid={} user={} logname={} kuser={} ksource=tool env=",
            account.uid,
            account.name,
            account.name,
            admin()
        )),
        "{ident}"
    );
    let names: BTreeSet<&str> = ident
        .split("env=")
        .nth(1)
        .unwrap()
        .split(',')
        .filter(|n| !n.is_empty())
        .collect();
    let expected: BTreeSet<&str> = [
        "HOME",
        "KEYPORT_SOURCE",
        "KEYPORT_USER",
        "LOGNAME",
        "PATH",
        "USER",
    ]
    .into();
    assert_eq!(names, expected, "{ident}");
    // One trailing newline taken off, no more.
    assert_eq!(lines[1], "exec-canary-tool-91c3");
    // The hang and the flood: skipped, and the session started anyway, soon.
    assert_eq!(lines[2], "unset|unset");
    assert!(took < Duration::from_secs(6), "the session waited {took:?}");

    let hang = await_events(&g.api, "source.failed", "hang", 1, Duration::from_secs(5));
    let d = &hang[0]["detail"];
    assert_eq!(
        (&d["provider"], &d["outcome"]),
        (&"tool".into(), &"failure".into()),
        "{d}"
    );
    assert_eq!(d["reference"], "exec://tool/hang", "{d}");
    let error = d["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "{d}"
    );
    // ...and the command is gone (killed), not left sleeping.
    let pid = std::fs::read_to_string(pids.join("hang.pid")).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(
        eventually(Duration::from_secs(3), || !std::path::Path::new(&proc_dir)
            .exists()),
        "the hanging provider {} still runs",
        pid.trim()
    );
    let big = await_events(&g.api, "source.failed", "big", 1, Duration::from_secs(5));
    let error = big[0]["detail"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        error.contains("4096") || error.contains("bytes") || error.contains("max_bytes"),
        "{big:?}"
    );

    // `secret test`: the outcome only.
    let tested = cli(&sb, &["secret", "test", "token"]);
    assert_eq!(tested.status.code(), Some(0), "{}", text(&tested));
    let stdout = String::from_utf8_lossy(&tested.stdout);
    let (bytes, lease) = ok_line(&stdout, "token", "exec://tool/token");
    assert_eq!((bytes, lease.as_str()), ("exec-canary-tool-91c3".len(), ""));
    ok(
        &sb,
        &[
            "secret",
            "create",
            "nokey",
            "--source",
            "exec://tool/nokey",
            "--env",
            "NOKEY",
        ],
    );
    let failed = cli(&sb, &["secret", "test", "nokey"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(
        text(&failed)
            .lines()
            .any(|l| l.starts_with("failed: nokey from exec://tool/nokey: ")),
        "{}",
        text(&failed)
    );
    let failed = cli(&sb, &["secret", "test", "big"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(!text(&failed).contains("xxxxxxxx"), "{}", text(&failed));
    super::assert_nowhere(&sb, &g, "exec-canary-tool-91c3");
    assert!(!text(&tested).contains("exec-canary"));
}
