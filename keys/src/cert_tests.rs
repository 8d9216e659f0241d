//! Unit tests of the certificate builder wrapper: what keyport signs and what it refuses to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::KeyType;

fn request() -> CertRequest {
    CertRequest {
        principal: "dev".into(),
        key_id: key_id("gw1", "alice", "dev1", "c7f3a2"),
        skew_secs: 300,
        extensions: vec!["permit-pty", "permit-agent-forwarding", "permit-user-rc"],
        source_address: None,
    }
}

#[test]
fn a_certificate_has_one_principal_a_window_around_now_and_only_known_options() {
    for kind in [KeyType::Ed25519, KeyType::EcdsaP256] {
        let ca = KeyPair::generate(kind, "ca").unwrap();
        let subject = KeyPair::generate(KeyType::Ed25519, "").unwrap();
        let now = 1_800_000_000;
        let issued = issue(&ca, subject.private().public_key(), &request(), now).unwrap();
        let cert = &issued.certificate;
        assert_eq!(cert.valid_principals(), ["dev".to_string()]);
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.key_id(), "keyport:gw1:alice:dev1:c7f3a2");
        assert_eq!(
            (cert.valid_after(), cert.valid_before()),
            (now - 300, now + 300)
        );
        assert_eq!(cert.serial(), issued.serial);
        assert!(
            cert.critical_options().is_empty(),
            "no critical option by default"
        );
        let ext: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
        assert_eq!(
            ext,
            ["permit-agent-forwarding", "permit-pty", "permit-user-rc"]
        );
        let fp = ca.private().public_key().fingerprint(Default::default());
        cert.validate_at(now, &[fp]).unwrap();
        assert!(cert.validate_at(now + 301, &[fp]).is_err(), "expired after");
        assert!(
            cert.validate_at(now - 301, &[fp]).is_err(),
            "not valid before"
        );
        // The subject is the key signed, not the CA.
        assert_eq!(cert.public_key(), subject.private().public_key().key_data());
    }
}

#[test]
fn serials_are_random() {
    let ca = KeyPair::generate(KeyType::Ed25519, "ca").unwrap();
    let subject = KeyPair::generate(KeyType::Ed25519, "").unwrap();
    let a = issue(&ca, subject.private().public_key(), &request(), 1).unwrap();
    let b = issue(&ca, subject.private().public_key(), &request(), 1).unwrap();
    assert_ne!(a.serial, b.serial);
}

#[test]
fn source_address_is_the_only_critical_option() {
    let ca = KeyPair::generate(KeyType::Ed25519, "ca").unwrap();
    let subject = KeyPair::generate(KeyType::Ed25519, "").unwrap();
    let mut req = request();
    req.source_address = Some("203.0.113.7/32,2001:db8::/48".into());
    assert!(check_cidrs("10.0.0.0/8,0.0.0.0/0,192.0.2.1,::/0").is_ok());
    let issued = issue(&ca, subject.private().public_key(), &req, 1000).unwrap();
    let options: Vec<(&String, &String)> = issued.certificate.critical_options().iter().collect();
    assert_eq!(
        options,
        [(
            &"source-address".to_string(),
            &"203.0.113.7/32,2001:db8::/48".to_string()
        )]
    );
}

#[test]
fn bad_requests_are_refused_naming_the_field() {
    let ca = KeyPair::generate(KeyType::Ed25519, "ca").unwrap();
    let subject = KeyPair::generate(KeyType::Ed25519, "").unwrap();
    let cases: Vec<(CertRequest, &str)> = vec![
        (
            CertRequest {
                principal: String::new(),
                ..request()
            },
            "principal",
        ),
        (
            CertRequest {
                principal: "a,b".into(),
                ..request()
            },
            "principal",
        ),
        (
            CertRequest {
                skew_secs: 0,
                ..request()
            },
            "skew",
        ),
        (
            CertRequest {
                skew_secs: MAX_SKEW_SECS + 1,
                ..request()
            },
            "skew",
        ),
        (
            CertRequest {
                key_id: "a b".into(),
                ..request()
            },
            "key id",
        ),
        (
            CertRequest {
                extensions: vec!["permit-X11-forwarding"],
                ..request()
            },
            "extension",
        ),
        (
            CertRequest {
                source_address: Some("10.0.0.0/33".into()),
                ..request()
            },
            "source-address",
        ),
        (
            CertRequest {
                source_address: Some("example.com".into()),
                ..request()
            },
            "source-address",
        ),
    ];
    for (req, field) in cases {
        let err = issue(&ca, subject.private().public_key(), &req, 1000).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("certificate {field}: ")),
            "{req:?}: {err}"
        );
    }
}

#[test]
fn key_id_parts_keep_only_what_sshd_logs_safely() {
    assert_eq!(
        key_id("gw 1", "al:ice", "dev1\n", "c1"),
        "keyport:gw_1:al_ice:dev1_:c1"
    );
}
