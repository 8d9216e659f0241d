//! The certificates keyport's signer (`keyport_keys::cert::issue`) makes, against a real
//! sshd with no daemon in between: valid for `skew_secs` either side of the signer's clock, so
//! a gateway clock 4 minutes off either way still logs in and 6 minutes off does not (the
//! skew injected, the system clock untouched); a principal other than the login is refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyport_keys::cert::{CertRequest, issue, key_id};
use keyport_keys::{KeyPair, KeyType};

use crate::common::Sandbox;
use crate::common::ca::CaSshd;
use crate::common::relay::{Account, AnyHost};

/// Logs in to `port` as `login` with a fresh key certified by `ca` for `principal`, signed
/// as if the time were `now`; when let in, runs `id -un` and returns what it printed.
async fn certificate_login(
    port: u16,
    login: &str,
    ca: &KeyPair,
    principal: &str,
    now: u64,
) -> Option<String> {
    let subject = KeyPair::generate(KeyType::Ed25519, "per-connection").unwrap();
    let request = CertRequest {
        principal: principal.to_string(),
        key_id: key_id("gw1", "alice", "skew", &format!("n{now}")),
        skew_secs: 300,
        extensions: vec!["permit-pty", "permit-agent-forwarding", "permit-user-rc"],
        source_address: None,
    };
    let issued = issue(ca, subject.private().public_key(), &request, now).unwrap();
    assert_eq!(issued.valid_after, now - 300);
    assert_eq!(issued.valid_before, now + 300);
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, ("127.0.0.1", port), AnyHost)
        .await
        .unwrap();
    let auth = session
        .authenticate_openssh_cert(
            login,
            Arc::new(subject.private().clone()),
            issued.certificate,
        )
        .await
        .unwrap();
    if !auth.success() {
        return None;
    }
    let mut channel = session.channel_open_session().await.unwrap();
    channel.exec(true, "id -un").await.unwrap();
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, channel.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } => out.push_str(&String::from_utf8_lossy(&data)),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    Some(out)
}

#[test]
fn certificates_log_in_within_the_skew_and_only_for_their_principal() {
    if !keyport::testing::needs_root("an OS account behind a real sshd") {
        return;
    }
    let sb = Sandbox::new();
    let ws = Account::create("kpw");
    let ca = KeyPair::generate(KeyType::Ed25519, "test-user-ca").unwrap();
    let w = CaSshd::start(&sb, "ws", &ws.name, &[ca.public_line().unwrap()], &[]);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let login = |principal: &str, at: u64| {
        rt.block_on(certificate_login(w.sshd.port, &ws.name, &ca, principal, at))
    };

    for at in [now - 240, now + 240] {
        let out = login(&ws.name, at);
        assert_eq!(
            out.as_deref().map(str::trim),
            Some(ws.name.as_str()),
            "signed at now{:+}: {}",
            at as i64 - now as i64,
            w.sshd.log()
        );
    }
    for (at, why) in [(now - 360, "expired"), (now + 360, "not yet valid")] {
        let before = w.sshd.log();
        assert_eq!(
            login(&ws.name, at),
            None,
            "signed at now{:+}",
            at as i64 - now as i64
        );
        let said = w.sshd.log()[before.len()..].to_string();
        assert!(
            said.contains(&format!("Certificate invalid: {why}")),
            "{said}"
        );
    }
    let before = w.sshd.log();
    assert_eq!(login("someone-else", now), None, "another principal");
    let said = w.sshd.log()[before.len()..].to_string();
    assert!(
        said.contains("Certificate invalid: name is not a listed principal"),
        "{said}"
    );
    assert_eq!(w.sshd.log().matches("Accepted publickey").count(), 2);
}
