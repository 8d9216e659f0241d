//! References in relayed sessions: resolved by the same session-start path as local ones, the
//! values carried upstream (env and file, as stored secrets are), a failing one skipped.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::common::relay::{Relay, run};

#[test]
fn a_relayed_session_gets_its_references_resolved_and_a_failing_one_skipped() {
    // The provider lives where its account (nobody) can run it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("vals.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nread key\n[ \"$key\" = missing ] && { echo 'no such key' >&2; exit 4; }\n\
         echo \"relay-$key-for-$KEYPORT_USER\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("keyport.toml");
    std::fs::write(
        &config,
        format!(
            "[sources.vals]\ncommand = [\"{}\"]\nrun_as = \"nobody\"\n",
            script.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let Some(r) = Relay::start_with(&[("KEYPORT_CONFIG", &config)], 0, |b| b) else {
        return;
    };
    r.alice
        .secret(json!({"name": "github", "source": "exec://vals/gh", "env": "GITHUB_TOKEN"}));
    r.alice
        .secret(json!({"name": "tok", "source": "exec://vals/tok", "file": "~/.tok"}));
    r.alice
        .secret(json!({"name": "npm", "source": "exec://vals/missing", "env": "NPM_TOKEN"}));
    let out = run(r
        .relayed()
        .arg("echo \"gh=$GITHUB_TOKEN npm=${NPM_TOKEN-unset}\"; cat ~/.tok"))
    .ok("relayed session");
    assert_eq!(
        out, "gh=relay-gh-for-alice npm=unset\nrelay-tok-for-alice",
        "what the relayed command saw"
    );
    let tok = r.ws.home.join(".tok");
    assert_eq!(
        std::fs::read_to_string(&tok).unwrap(),
        "relay-tok-for-alice",
        "written upstream, in the workspace login's home"
    );
    let resolved = r.gw.audit("alice", "source.resolved");
    assert_eq!(resolved.len(), 2, "{resolved:?}");
    let failed = r.gw.audit("alice", "source.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let detail = failed[0]["detail"].to_string();
    assert!(
        detail.contains("no such key") && detail.contains("exec://vals/missing"),
        "{detail}"
    );
    let start = r.gw.audit("alice", "relay.start");
    assert_eq!(start.len(), 1, "{start:?}");
    let secrets = start[0]["detail"]["secrets"].to_string();
    assert_eq!(secrets, r#"["github","tok"]"#, "the names that arrived");
}
