//! What sshd refuses of keyport's certificates, through the daemon: a workspace that trusts
//! another CA, a `[ca] source_address` the gateway is not behind, a principal sshd does not
//! list for the login — each exits 255 with keyport's message naming the certificate, the
//! login and `TrustedUserCAKeys`, and sshd's log says why. A certificate sshd accepts holds
//! exactly what keyport audited of it. `workspace set --auth key|ca` switches a workspace
//! between the two ways in.

use crate::common::ca::{CaGateway, CaSshd, NO_HOLD, certificates};
use crate::common::relay::{Account, run};
use crate::common::relay::{assert_keyport_failure, stranger_host_key};

/// The fragments of keyport's refusal for `login`.
fn refusal(login: &str) -> [&str; 3] {
    ["refused keyport's certificate", "TrustedUserCAKeys", login]
}

/// Asserts the certificate in `shown` (an `ExposeAuthInfo` file: `publickey TYPE BASE64`) is
/// what keyport signs and `event` (its `ca.certificate`) says: a user certificate from the CA
/// `ca_line` for `login` alone, the audited key id, serial and validity, keyport's three
/// extensions and no critical option, certifying a key that is not `user_line` (the user's
/// own keyport key).
fn assert_certificate_is_as_audited(
    shown: &str,
    event: &serde_json::Value,
    login: &str,
    (ca_line, user_line): (&str, &str),
) {
    let text = shown
        .lines()
        .find_map(|l| l.strip_prefix("publickey "))
        .unwrap_or_else(|| panic!("no publickey line in {shown}"));
    let cert = russh::keys::Certificate::from_openssh(text).unwrap();
    let d = &event["detail"];
    assert_eq!(
        cert.cert_type(),
        russh::keys::ssh_key::certificate::CertType::User
    );
    assert_eq!(cert.valid_principals(), [login.to_string()]);
    assert_eq!(cert.key_id(), d["key_id"].as_str().unwrap(), "{event}");
    assert_eq!(
        cert.serial().to_string(),
        d["serial"].as_str().unwrap(),
        "{event}"
    );
    assert_eq!(
        Some(cert.valid_after()),
        d["valid_after"].as_u64(),
        "{event}"
    );
    assert_eq!(
        Some(cert.valid_before()),
        d["valid_before"].as_u64(),
        "{event}"
    );
    let extensions: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
    assert_eq!(
        extensions,
        ["permit-agent-forwarding", "permit-pty", "permit-user-rc"]
    );
    assert!(
        cert.critical_options().is_empty(),
        "{:?}",
        cert.critical_options()
    );
    let ca = russh::keys::PublicKey::from_openssh(ca_line).unwrap();
    assert_eq!(cert.signature_key(), ca.key_data());
    // The certified key is a fresh ed25519 one: not alice's, and not the CA.
    assert_eq!(cert.algorithm().as_str(), "ssh-ed25519");
    assert_ne!(cert.public_key(), ca.key_data());
    let user = russh::keys::PublicKey::from_openssh(user_line).unwrap();
    assert_ne!(cert.public_key(), user.key_data());
}

#[test]
fn another_cas_line_or_a_principal_not_listed_is_refused_with_keyports_message() {
    let Some(gw) = CaGateway::start("", NO_HOLD) else {
        return;
    };
    gw.ok(&["ca", "init"]);
    let ours = gw.ca_lines();
    let alice = gw.member("alice");
    let ws = Account::create("kpw");

    // Trusts another CA only.
    let foreign = CaSshd::start(
        &gw.sb,
        "foreign",
        &ws.name,
        &[stranger_host_key(&gw.sb, "foreign_ca")],
        &[],
    );
    gw.add_ca_workspace("foreign", &foreign.sshd, &ws.name, "alice");
    let ran = run(gw.ssh("alice", "foreign", &alice.login).arg("true"));
    assert_keyport_failure(&ran, &refusal(&ws.name), "another CA");
    assert!(
        !foreign.sshd.log().contains("Accepted publickey"),
        "{}",
        foreign.sshd.log()
    );

    // Trusts keyport's CA, but lists only another principal for the login.
    let principals = gw.sb.dir.path().join("principals");
    std::fs::write(&principals, "someone-else\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&principals, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let listed = format!("AuthorizedPrincipalsFile {}", principals.display());
    // ExposeAuthInfo: the session sees the certificate it was let in with.
    let unlisted = CaSshd::start(
        &gw.sb,
        "unlisted",
        &ws.name,
        &ours,
        &[&listed, "ExposeAuthInfo yes"],
    );
    gw.add_ca_workspace("unlisted", &unlisted.sshd, &ws.name, "alice");
    let ran = run(gw.ssh("alice", "unlisted", &alice.login).arg("true"));
    assert_keyport_failure(&ran, &refusal(&ws.name), "principal not listed");
    // OpenSSH 9.2 words it so with an AuthorizedPrincipalsFile (auth2-pubkey.c); without
    // one, "name is not a listed principal" (see skew.rs).
    assert!(
        unlisted
            .sshd
            .log()
            .contains("Certificate does not contain an authorized principal"),
        "{}",
        unlisted.sshd.log()
    );
    // Each was one signed certificate (one CA, nothing to fall back to), audited.
    for workspace in ["foreign", "unlisted"] {
        assert_eq!(
            certificates(&gw, "alice", workspace).len(),
            1,
            "{workspace}"
        );
    }

    // The same sshd with the principal listed lets the certificate in; set to `--auth key`,
    // the workspace is entered with alice's key (not in authorized_keys: refused as such),
    // and back to `--auth ca` with the certificate again.
    std::fs::write(&principals, format!("someone-else\n{}\n", ws.name)).unwrap();
    let shown = run(gw
        .ssh("alice", "unlisted", &alice.login)
        .arg("cat \"$SSH_USER_AUTH\""))
    .ok("principal listed");
    let event = certificates(&gw, "alice", "unlisted").pop().unwrap();
    assert_certificate_is_as_audited(&shown, &event, &ws.name, (&ours[0], &alice.public));
    // `workspace add` without --auth: key, as before.
    let host = unlisted.sshd.host_line();
    gw.add_workspace("plain", &unlisted.sshd.address(), &ws.name, "alice", host);
    assert_eq!(gw.workspace_auth("plain"), "key");
    let relayed = || run(gw.ssh("alice", "unlisted", &alice.login).arg("id -un"));
    gw.ok(&["workspace", "set", "unlisted", "--auth", "key"]);
    assert_eq!(gw.workspace_auth("unlisted"), "key");
    let before = certificates(&gw, "alice", "unlisted").len();
    assert_keyport_failure(
        &relayed(),
        &[&alice.public_blob(), "authorized_keys"],
        "--auth key",
    );
    assert_eq!(
        certificates(&gw, "alice", "unlisted").len(),
        before,
        "a certificate was signed for an --auth key workspace"
    );
    unlisted.sshd.authorize(&[&alice.public]);
    assert_eq!(relayed().ok("--auth key").trim(), ws.name);
    unlisted.sshd.authorize(&[]);
    gw.ok(&["workspace", "set", "unlisted", "--auth", "ca"]);
    assert_eq!(gw.workspace_auth("unlisted"), "ca");
    assert_eq!(relayed().ok("back to --auth ca").trim(), ws.name);
    assert_eq!(certificates(&gw, "alice", "unlisted").len(), before + 1);
}

#[test]
fn a_source_address_the_gateway_is_not_behind_is_refused_with_keyports_message() {
    let ca = "source_address = [\"10.9.9.9/32\"]\nvalidity_skew_secs = 120";
    let Some(gw) = CaGateway::start(ca, NO_HOLD) else {
        return;
    };
    gw.ok(&["ca", "init"]);
    let alice = gw.member("alice");
    let ws = Account::create("kpw");
    let w = CaSshd::start(&gw.sb, "ws", &ws.name, &gw.ca_lines(), &[]);
    gw.add_ca_workspace("dev1", &w.sshd, &ws.name, "alice");
    let ran = run(gw.ssh("alice", "dev1", &alice.login).arg("true"));
    assert_keyport_failure(&ran, &refusal(&ws.name), "source-address");
    assert!(
        w.sshd.log().contains("not from a permitted source address"),
        "{}",
        w.sshd.log()
    );
    assert!(
        !w.sshd.log().contains("Accepted publickey"),
        "{}",
        w.sshd.log()
    );
    let events = certificates(&gw, "alice", "dev1");
    assert_eq!(events.len(), 1, "{events:?}");
    // validity_skew_secs = 120: now ± 2 minutes.
    let d = &events[0]["detail"];
    let window = d["valid_before"].as_u64().unwrap() - d["valid_after"].as_u64().unwrap();
    assert_eq!(window, 240, "{d}");
}
