//! The README's walk-through, run as written: every ```sh block of its "Walk-through" section,
//! top to bottom, in one bash (`set -e`), with `keyport` on the PATH, against the daemon the
//! first block starts. What the harness changes, and only that: the daemon's data dir is the
//! sandbox's, its ports are free ones (the text's 2222 becomes the SSH port; the API port is
//! given by `KEYPORT_API_LISTEN`), and `ssh` gets the sandbox's key and no known-hosts file —
//! what a fresh machine's own `~/.ssh` would give it. So the README cannot rot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::Sandbox;

/// The ```sh blocks between `## Walk-through` and the next heading of its level or above
/// (`### Workspaces` needs a workspace sshd and is not part of it).
fn walk_through(readme: &str) -> Vec<String> {
    let section = readme
        .split_once("\n## Walk-through\n")
        .expect("a Walk-through section")
        .1;
    let section = section.split("\n#").next().unwrap_or(section);
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some((_, after)) = rest.split_once("```sh\n") {
        let (block, tail) = after.split_once("```").expect("a closed block");
        blocks.push(block.to_string());
        rest = tail;
    }
    blocks
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_walk_through_runs_top_to_bottom() {
    common::require_tool("ssh");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = walk_through(&readme);
    assert!(blocks.len() >= 3, "{blocks:?}");
    let sb = Sandbox::new();
    let key = sb.client_key("id_ed25519");
    let bin = sb.dir.path().join("path");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyport"), bin.join("keyport")).unwrap();
    // ssh reads the passwd entry's ~/.ssh, not $HOME's: the sandbox's key, said outright.
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F none -o BatchMode=yes -o IdentitiesOnly=yes -i {} \
             -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n",
            key.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ssh_port, api_port) = (free_port(), free_port());
    let script = format!(
        "set -e -o pipefail\n{}",
        blocks.join("\n").replace("2222", &ssh_port.to_string())
    );
    let work = sb.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["180", "bash", "-c", &script])
        .current_dir(&work)
        .env("HOME", sb.home())
        .env("PATH", path)
        .env("KEYPORT_DATA_DIR", sb.data())
        .env("KEYPORT_SSH_LISTEN", format!("127.0.0.1:{ssh_port}"))
        .env("KEYPORT_API_LISTEN", format!("127.0.0.1:{api_port}"))
        .env_remove("KEYPORT_URL")
        .env_remove("KEYPORT_TOKEN")
        .env_remove("KEYPORT_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}\n--- stderr ---\n{}\n--- serve.log ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(work.join("serve.log")).unwrap_or_default()
    );
    assert!(out.status.success(), "the walk-through failed:\n{said}");
    // What the blocks say happens, happened.
    for line in [
        "ghp_xxx",
        "registry=https://registry.npmjs.org/",
        "ghp_yyy",
        "imported 2 secrets",
        "every file secret was delivered",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}");
    }
    // The last session removed the demo's files (it counts what is left).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim_end().lines().last(), Some("0"), "{said}");
}
