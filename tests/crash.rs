//! `kill -9` in the middle of a burst of secret writes loses no write that reported success,
//! shows no half-done one, and leaves a database that passes `PRAGMA integrity_check`; the
//! writer's connection is checked to run WAL with `synchronous = FULL` (SIGKILL alone keeps the
//! page cache, so it could not tell).
//!
//! The writer is this same test binary, re-run as a child with `KEYPORT_CRASH_WRITER` set: a
//! real separate process, killed with SIGKILL while it commits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::Sandbox;
use keyport::secrets::{SecretPatch, SecretSpec};
use keyport::vault::{Actor, Vault};
use keyport_keys::SecretBytes;

const WRITER_ENV: &str = "KEYPORT_CRASH_WRITER";

fn value(i: usize, round: usize) -> String {
    format!("value-{i}-round-{round}")
}

/// The child: updates secrets as fast as it can, printing `committed I` after each write
/// returns Ok. Ignored in normal runs; the parent runs it with `--ignored`.
#[test]
#[ignore = "run as a child process by kill_9_during_a_burst_loses_no_committed_write"]
fn crash_writer_child() {
    let Some(data) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let round: usize = std::env::var("KEYPORT_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let mut v = Vault::open(Path::new(&data), Default::default()).unwrap();
    let actor = Actor::User("alice".into());
    let mut out = std::io::stdout().lock();
    // SIGKILL keeps the page cache, so surviving it proves nothing about fsync: the parent
    // checks that the writer's own connection runs WAL with synchronous = FULL.
    let (mode, sync) = v.store().durability().unwrap();
    writeln!(out, "durability {mode} {sync}").unwrap();
    for i in 0..100_000 {
        let result = v.update_secret(
            &actor,
            "alice",
            &format!("s{}", i % 90),
            &SecretPatch {
                value: Some(SecretBytes::from(value(i, round).as_str())),
                ..SecretPatch::default()
            },
        );
        result.unwrap();
        writeln!(out, "committed {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_during_a_burst_loses_no_committed_write() {
    let sb = Sandbox::new();
    {
        let mut v = sb.vault();
        common::add_user(&mut v, "alice");
        for slot in 0..90 {
            let spec = SecretSpec {
                source: None,
                required: false,
                name: format!("s{slot}"),
                value: SecretBytes::from("initial"),
                description: String::new(),
                env: Some(format!("S{slot}")),
                file: None,
                enabled: None,
                lifecycle: Default::default(),
            };
            v.create_secret(&Actor::System, "alice", &spec).unwrap();
        }
    }
    // Latest committed value per secret, across rounds.
    let mut expected: Vec<Option<String>> = vec![Some("initial".into()); 90];
    // Every landed update wrote its audit event in the same transaction.
    let mut landed_updates = 0;
    for (round, kill_after) in [(0usize, 40usize), (1, 150), (2, 25), (3, 300)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_writer_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, sb.data())
            .env("KEYPORT_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // libtest may print "test crash_writer_child ... " with no newline before the first
        // report, so the index is read from wherever "committed N" stands on a line.
        let reported_index = |line: &str| -> Option<usize> {
            let at = line.find("committed ")?;
            line[at + "committed ".len()..].trim().parse().ok()
        };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last_seen = None;
        let mut durability = None;
        while let Some(Ok(line)) = lines.next() {
            if let Some(at) = line.find("durability ") {
                durability = Some(line[at + "durability ".len()..].trim().to_string());
            }
            if let Some(i) = reported_index(&line) {
                last_seen = Some(i);
                if i + 1 == kill_after {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        assert_eq!(
            last_seen.map(|i| i + 1),
            Some(kill_after),
            "round {round}: the writer stopped before it was killed"
        );
        assert_eq!(
            durability.as_deref(),
            Some("wal 2"),
            "round {round}: the writer's connection is not WAL with synchronous = FULL (2)"
        );
        // Reports already in the pipe when the kill landed are reports of success too.
        let reported = lines
            .map_while(Result::ok)
            .filter_map(|l| reported_index(&l))
            .chain(last_seen)
            .max();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the writer did not die of SIGKILL"
        );
        // Writes are sequential, so every i up to the last reported one committed.
        let last = reported.unwrap_or(0);
        for (i, slot) in (0..=last).map(|i| (i, i % 90)) {
            expected[slot] = Some(value(i, round));
        }
        // The one write in flight at the kill may or may not have landed; nothing else may differ.
        let in_flight = last + 1;

        let store = keyport::store::Store::open(&sb.db()).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok", "round {round}");
        drop(store);
        let v = sb.vault();
        landed_updates += last + 1;
        for (slot, want) in expected.iter_mut().enumerate() {
            let name = format!("s{slot}");
            let got = v
                .secret_value("alice", &name)
                .ok()
                .map(|b| b.expose().to_vec());
            if slot == in_flight % 90 && got.as_deref() == Some(value(in_flight, round).as_bytes())
            {
                *want = Some(value(in_flight, round));
                landed_updates += 1;
            }
            assert_eq!(
                got.as_deref(),
                want.as_deref().map(str::as_bytes),
                "round {round}: {name} lost a committed write or shows a half-done one"
            );
        }
        let updates = v
            .store()
            .audit_events(Some("alice"), 0)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "secret.update")
            .count();
        assert_eq!(
            updates, landed_updates,
            "round {round}: an update and its audit event split"
        );
    }
}
