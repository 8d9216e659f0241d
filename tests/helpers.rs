//! The helper commands, through the real binary: `completions` scripts that a real bash loads,
//! `man` pages in roff, `whoami` and `doctor` against a running daemon (and one that is down, or
//! whose data dir is open), inside a session with no login, and `--help` that shows the data-dir
//! options only where they mean something and examples everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::output::stderr;
use common::{Sandbox, me, require_tool};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line `keyport doctor` printed for `check`.
fn doctor_line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no '{check}' line in:\n{report}"))
}

#[test]
fn bash_loads_the_completion_script() {
    require_tool("bash");
    let sb = Sandbox::new();
    let out = std::process::Command::new("bash")
        .args([
            "--norc",
            "-c",
            "source <(\"$KEYPORT\" completions bash) && complete -p keyport",
        ])
        .env("KEYPORT", env!("CARGO_BIN_EXE_keyport"))
        .env("HOME", sb.home())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("keyport"), "{}", stdout(&out));
    // The other shells get a script naming the subcommands too.
    for shell in ["zsh", "fish"] {
        let script = sb.ok(&["completions", shell]);
        assert!(script.contains("secret"), "{shell}: {script}");
    }
    let out = sb.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn man_prints_roff_and_writes_a_page_per_command() {
    let sb = Sandbox::new();
    let page = sb.ok(&["man"]);
    assert!(page.contains(".TH keyport 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section}: {page}");
    }
    assert!(page.contains("Examples:"), "{page}");
    let dir = sb.dir.path().join("man1");
    let listed = sb.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for name in ["keyport.1", "keyport-secret-create.1", "keyport-doctor.1"] {
        let path = dir.join(name);
        assert!(listed.contains(&path.display().to_string()), "{listed}");
        // Readable by every user whatever keyport's umask.
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{name}");
    }
    let create = std::fs::read_to_string(dir.join("keyport-secret-create.1")).unwrap();
    assert!(create.contains("\\-\\-value"), "{create}");
    // The hidden internal command gets no page.
    assert!(!dir.join("keyport-session-reaper.1").exists());
}

#[test]
fn help_offers_data_dir_options_only_on_data_dir_commands_and_examples_everywhere() {
    let sb = Sandbox::new();
    let help = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push("--help");
        sb.ok(&args)
    };
    for api_only in [
        &["secret"][..],
        &["secret", "create"],
        &["key", "show"],
        &["token", "create"],
        &["audit"],
        &["login"],
        &["whoami"],
    ] {
        let text = help(api_only);
        assert!(!text.contains("--data-dir"), "{api_only:?}: {text}");
        assert!(!text.contains("--config"), "{api_only:?}: {text}");
        assert!(text.contains("Examples:\n  "), "{api_only:?}: {text}");
    }
    for data_dir in [
        &["serve"][..],
        &["user", "add"],
        &["login-key", "list"],
        &["workspace", "add"],
        &["admin", "rotate-master-key"],
        &["doctor"],
    ] {
        let text = help(data_dir);
        assert!(text.contains("--data-dir <DIR>"), "{data_dir:?}: {text}");
        assert!(text.contains("--config <FILE>"), "{data_dir:?}: {text}");
        assert!(text.contains("Examples:\n  "), "{data_dir:?}: {text}");
    }
}

#[test]
fn whoami_and_doctor_against_a_running_daemon_then_a_stopped_one() {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let os = me().name;
    let who = sb.ok(&["whoami"]);
    assert!(who.contains(&format!("user:  {os}\n")), "{who}");
    assert!(who.contains("admin: yes\n"), "{who}");
    assert!(who.contains(&format!("api:   {}\n", daemon.url)), "{who}");
    let json: serde_json::Value = serde_json::from_str(&sb.ok(&["whoami", "-o", "json"])).unwrap();
    assert_eq!(json["name"], os.as_str());
    assert_eq!(json["admin"], true);

    // Healthy: every check passes or does not apply (no session here).
    let out = sb.run(&["doctor"]);
    let report = stdout(&out);
    assert!(
        doctor_line(&report, "sftp-server").starts_with("ok"),
        "sftp-server is not installed; run scripts/test, which installs it:\n{report}"
    );
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(
        report
            .lines()
            .all(|l| l.starts_with("ok  ") || l.starts_with("skip")),
        "{report}"
    );
    assert!(
        doctor_line(&report, "daemon").contains(&daemon.url),
        "{report}"
    );
    assert!(doctor_line(&report, "user").contains(&os), "{report}");
    let data = sb.data().display().to_string();
    assert!(doctor_line(&report, "data dir").contains(&data), "{report}");
    assert!(
        doctor_line(&report, "master key").contains("master.key"),
        "{report}"
    );
    assert!(
        doctor_line(&report, "host key").contains("SHA256:"),
        "{report}"
    );
    assert!(
        doctor_line(&report, "session PATH").contains("not in a session"),
        "{report}"
    );

    // A data dir open to others: named, with its mode and the fix.
    let private = std::fs::metadata(sb.data()).unwrap().permissions();
    std::fs::set_permissions(sb.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sb.run(&["doctor"]);
    std::fs::set_permissions(sb.data(), private).unwrap();
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = doctor_line(&report, "data dir");
    assert!(line.starts_with("FAIL"), "{report}");
    assert!(
        line.contains("mode 0755") && line.contains("chmod 700"),
        "{line}"
    );

    // The daemon down: the check names the URL it could not reach.
    let url = daemon.url.clone();
    assert!(daemon.stop().success());
    let out = sb.run(&["doctor"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = doctor_line(&report, "daemon");
    assert!(line.starts_with("FAIL"), "{report}");
    assert!(
        line.contains("cannot reach") && line.contains(&url),
        "{line}"
    );
    assert!(stderr(&out).contains("checks failed"), "{}", stderr(&out));
    // whoami says the same, with the unreachable exit code.
    let out = sb.run(&["whoami"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
}

#[test]
fn whoami_and_doctor_work_in_a_session_with_no_login() {
    let (_sb, daemon, key, _api) = common::ssh_daemon(&[]);
    let os = me().name;
    let out = daemon
        .ssh(&os, &key)
        .arg("keyport whoami && keyport doctor")
        .env_remove("KEYPORT_URL")
        .env_remove("KEYPORT_TOKEN")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains(&format!("user:  {os}\n")), "{text}");
    assert!(text.contains("api:   session socket "), "{text}");
    assert!(
        doctor_line(&text, "daemon").contains("session socket"),
        "{text}"
    );
    let path = doctor_line(&text, "session PATH");
    assert!(
        path.starts_with("ok") && path.contains("/bin/keyport"),
        "{text}"
    );
    // The daemon's data dir is not the session user's to check.
    assert!(doctor_line(&text, "data dir").starts_with("skip"), "{text}");
}
