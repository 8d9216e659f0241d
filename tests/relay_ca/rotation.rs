//! CA rotation with two workspaces: `ws-both` installs both CA lines, `ws-old` keeps only the
//! first. `ca rotate` adds a next CA (ECDSA P-256, beside the ed25519 one) and signing stays
//! on the active one; after `ca promote` keyport signs with the new CA and falls back to the
//! previous one on the same connection for `ws-old`, which `ca status` then names as not on
//! the active CA; `ca retire` drops the previous CA, and `ws-old` is refused with keyport's
//! message while `ws-both` still works.

use crate::common::ca::{
    CaGateway, CaSshd, GATEWAY, NO_HOLD, accepted_certificates, certificates, fingerprint,
    status_ca, status_workspace,
};
use crate::common::relay::{Account, assert_keyport_failure, run};

/// The `ca` of each event, in order.
fn cas_of(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["detail"]["ca"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The `state` of CA `id` in `ca status` (None: not listed).
fn state(status: &serde_json::Value, id: &str) -> Option<String> {
    status_ca(status, id).map(|c| c["state"].as_str().unwrap_or_default().to_string())
}

#[test]
fn rotation_keeps_workspaces_on_the_old_ca_working_until_it_is_retired() {
    let Some(gw) = CaGateway::start("", NO_HOLD) else {
        return;
    };
    gw.ok(&["ca", "init"]);
    let first = gw.ca_lines();
    assert_eq!(first.len(), 1, "{first:?}");
    let alice = gw.member("alice");
    let ws = Account::create("kpw");
    let both = CaSshd::start(&gw.sb, "both", &ws.name, &first, &[]);
    let old = CaSshd::start(&gw.sb, "old", &ws.name, &first, &[]);
    gw.add_ca_workspace("ws-both", &both.sshd, &ws.name, "alice");
    gw.add_ca_workspace("ws-old", &old.sshd, &ws.name, "alice");
    let relayed = |workspace: &str| run(gw.ssh("alice", workspace, &alice.login).arg("id -un"));
    let works = |workspace: &str, when: &str| {
        let out = relayed(workspace).ok(&format!("{workspace} {when}"));
        assert_eq!(out.trim(), ws.name, "{workspace} {when}");
    };
    works("ws-both", "on ca1");
    works("ws-old", "on ca1");

    // rotate: a next CA, listed after the active one; signing stays on ca1.
    // An ECDSA P-256 next CA beside the ed25519 one: sshd takes both in one file.
    gw.ok(&["ca", "rotate", "--type", "ecdsa-p256"]);
    let two = gw.ca_lines();
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[0], first[0], "the active CA first");
    assert!(two[1].starts_with("ecdsa-sha2-nistp256 "), "{two:?}");
    assert!(
        two[1].ends_with(&format!(" keyport-user-ca:{GATEWAY}:ca2")),
        "{two:?}"
    );
    let status = gw.ca_status();
    assert_eq!(state(&status, "ca1").as_deref(), Some("active"), "{status}");
    assert_eq!(state(&status, "ca2").as_deref(), Some("next"), "{status}");
    assert_eq!(
        status_ca(&status, "ca2").unwrap()["type"],
        "ecdsa-p256",
        "{status}"
    );
    both.trust(&two);
    works("ws-both", "after rotate");
    works("ws-old", "after rotate");
    for workspace in ["ws-both", "ws-old"] {
        let cas = cas_of(&certificates(&gw, "alice", workspace));
        assert_eq!(cas, ["ca1", "ca1"], "{workspace}: signed before promote");
    }

    // promote: ca2 signs; ws-old gets in through the fallback to ca1, on one connection.
    gw.ok(&["ca", "promote"]);
    let promoted = gw.ca_lines();
    assert_eq!(
        promoted,
        [two[1].clone(), two[0].clone()],
        "active, then previous"
    );
    let status = gw.ca_status();
    assert_eq!(state(&status, "ca2").as_deref(), Some("active"), "{status}");
    assert_eq!(
        state(&status, "ca1").as_deref(),
        Some("previous"),
        "{status}"
    );
    let old_connections = old.sshd.connections();
    works("ws-both", "after promote");
    works("ws-old", "after promote (fallback)");
    assert_eq!(
        old.sshd.connections() - old_connections,
        1,
        "the fallback reconnected:\n{}",
        old.sshd.log()
    );
    let both_cas = cas_of(&certificates(&gw, "alice", "ws-both"));
    assert_eq!(
        both_cas.last().map(String::as_str),
        Some("ca2"),
        "{both_cas:?}"
    );
    assert!(!both_cas[2..].contains(&"ca1".to_string()), "{both_cas:?}");
    // On ws-old: ca2's refused, then ca1's, on the one connection.
    let fallback = &certificates(&gw, "alice", "ws-old")[2..];
    assert_eq!(cas_of(fallback), ["ca2", "ca1"], "{fallback:?}");
    assert_eq!(
        fallback[0]["detail"]["connection"], fallback[1]["detail"]["connection"],
        "{fallback:?}"
    );
    let refused = format!(
        "ID {} (serial",
        fallback[0]["detail"]["key_id"].as_str().unwrap()
    );
    assert!(
        old.sshd
            .log()
            .lines()
            .any(|l| l.starts_with("Failed publickey") && l.contains(&refused)),
        "{}",
        old.sshd.log()
    );
    // What ws-old's sshd let in after promote: a ca1 certificate.
    let accepted = accepted_certificates(&old.sshd.log());
    assert_eq!(accepted.len(), 3, "{}", old.sshd.log());
    assert_eq!(accepted[2].ca_fingerprint, fingerprint(&two[0]));
    let accepted = accepted_certificates(&both.sshd.log());
    let last = accepted.last().unwrap();
    assert_eq!(last.ca_fingerprint, fingerprint(&two[1]), "{last:?}");
    assert_eq!(last.ca_type, "ECDSA", "{last:?}");

    // ca status: ws-old flagged as still on ca1.
    let status = gw.ca_status();
    let ws_old = status_workspace(&status, "ws-old");
    assert_eq!(ws_old["last_ca"], "ca1", "{status}");
    assert_eq!(ws_old["on_active"], false, "{status}");
    assert!(
        ws_old["last_ca_at"].is_number() || ws_old["last_ca_at"].is_string(),
        "{status}"
    );
    let ws_both = status_workspace(&status, "ws-both");
    assert_eq!(ws_both["last_ca"], "ca2", "{status}");
    assert_eq!(ws_both["on_active"], true, "{status}");
    let table = gw.ok(&["ca", "status"]);
    assert!(
        table.contains("ws-old"),
        "the table does not name ws-old:\n{table}"
    );

    // retire: ca1 gone; ws-both still in, ws-old refused.
    gw.ok(&["ca", "retire", "-y"]);
    assert_eq!(gw.ca_lines(), [two[1].clone()]);
    let status = gw.ca_status();
    assert!(
        !matches!(
            state(&status, "ca1").as_deref(),
            Some("active" | "next" | "previous")
        ),
        "{status}"
    );
    works("ws-both", "after retire");
    let signed_before = certificates(&gw, "alice", "ws-old").len();
    let ran = relayed("ws-old");
    assert_keyport_failure(
        &ran,
        &[
            "refused keyport's certificate",
            "TrustedUserCAKeys",
            &ws.name,
        ],
        "ws-old after retire",
    );
    let after = cas_of(&certificates(&gw, "alice", "ws-old")[signed_before..]);
    assert!(
        after.iter().all(|ca| ca == "ca2"),
        "signed with a retired CA: {after:?}"
    );
    assert_eq!(accepted_certificates(&old.sshd.log()).len(), 3);
}
