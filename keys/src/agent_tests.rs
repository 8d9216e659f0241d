//! The agent codec: round trips both ways, every refusal class, bounded frames, signatures
//! that verify, session-bind checking, and property tests feeding it arbitrary and damaged bytes.

use proptest::prelude::*;
use russh::keys::signature::Verifier;
use russh::keys::ssh_key::Signature;

use super::*;
use crate::{KeyPair, KeyType};

fn sign_request(key: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
    Request::Sign {
        key: key.to_vec(),
        data: data.to_vec(),
        flags,
    }
    .encode()
}

#[test]
fn requests_round_trip() {
    let bind = SessionBind {
        host_key: vec![1, 2, 3],
        session_id: vec![4; 32],
        signature: vec![5; 10],
        forwarding: true,
    };
    for request in [
        Request::Identities,
        Request::Sign {
            key: vec![9; 51],
            data: b"to sign".to_vec(),
            flags: FLAG_RSA_SHA2_512,
        },
        Request::SessionBind(bind),
        Request::Extension("query".into()),
    ] {
        assert_eq!(Request::parse(&request.encode()), Ok(request));
    }
}

#[test]
fn changes_are_recognised_by_type() {
    for kind in [17u8, 18, 19, 20, 21, 22, 23, 25, 26] {
        // Whatever follows the type byte, a change is a change (and gets refused).
        assert_eq!(
            Request::parse(&[kind, 0, 0, 0, 9]),
            Ok(Request::Change(kind))
        );
    }
    assert_eq!(Request::parse(&[1]), Ok(Request::Unknown(1)));
    assert_eq!(Request::parse(&[200, 1, 2]), Ok(Request::Unknown(200)));
}

#[test]
fn malformed_requests_are_errors() {
    assert_eq!(Request::parse(&[]), Err(ProtocolError::Truncated));
    assert_eq!(Request::parse(&[11, 0]), Err(ProtocolError::Trailing));
    // A sign request whose key length runs past the end.
    assert_eq!(
        Request::parse(&[13, 0xff, 0xff, 0xff, 0xff, 1]),
        Err(ProtocolError::Truncated)
    );
    let mut request = sign_request(b"k", b"d", 0);
    request.pop();
    assert_eq!(Request::parse(&request), Err(ProtocolError::Truncated));
    assert_eq!(
        Request::parse(&[27, 0, 0, 0, 2, 0xff, 0xfe]),
        Err(ProtocolError::Utf8)
    );
}

#[test]
fn frame_sizes_are_bounded() {
    assert_eq!(frame_len([0, 0, 0, 0]), Err(ProtocolError::FrameSize(0)));
    assert_eq!(frame_len([0, 4, 0, 0]), Ok(MAX_FRAME));
    assert_eq!(
        frame_len([0, 4, 0, 1]),
        Err(ProtocolError::FrameSize(MAX_FRAME + 1))
    );
    assert_eq!(
        frame_len([0xff; 4]),
        Err(ProtocolError::FrameSize(u32::MAX as usize))
    );
    assert_eq!(frame(&[11]), vec![0, 0, 0, 1, 11]);
}

#[test]
fn responses_round_trip() {
    for response in [
        Response::Success,
        Response::Failure,
        Response::Identities(vec![]),
        Response::Identities(vec![
            Identity {
                key: vec![1; 51],
                comment: "keyport:alice".into(),
            },
            Identity {
                key: vec![2; 104],
                comment: String::new(),
            },
        ]),
        Response::Signature(vec![3; 83]),
    ] {
        assert_eq!(Response::parse(&response.encode()), Ok(response));
    }
    // Extension failure reads as failure; a request type is not an answer.
    assert_eq!(Response::parse(&[28]), Ok(Response::Failure));
    assert_eq!(
        Response::parse(&[11]),
        Err(ProtocolError::UnexpectedType(11))
    );
    // A huge identity count with nothing behind it is an error, not an allocation.
    assert_eq!(
        Response::parse(&[12, 0xff, 0xff, 0xff, 0xff]),
        Err(ProtocolError::Truncated)
    );
}

#[test]
fn signatures_verify_with_the_listed_key() {
    for kind in [KeyType::Ed25519, KeyType::EcdsaP256] {
        let pair = KeyPair::generate(kind, "t").unwrap();
        let blob = pair.public_blob().unwrap();
        let signature = pair.sign(b"session data").unwrap();
        let key = PublicKey::from_bytes(&blob).unwrap();
        let parsed = Signature::try_from(signature.as_slice()).unwrap();
        assert_eq!(parsed.algorithm(), key.algorithm());
        Verifier::verify(&key, b"session data", &parsed).unwrap();
        assert!(Verifier::verify(&key, b"other data", &parsed).is_err());
    }
}

#[test]
fn session_bind_is_verified() {
    let host = KeyPair::generate(KeyType::Ed25519, "host").unwrap();
    let session_id = vec![7u8; 32];
    let mut bind = SessionBind {
        host_key: host.public_blob().unwrap(),
        session_id: session_id.clone(),
        signature: host.sign(&session_id).unwrap(),
        forwarding: false,
    };
    assert_eq!(bind.host_fingerprint(), Ok(host.fingerprint()));
    bind.session_id[0] ^= 1;
    assert_eq!(bind.host_fingerprint(), Err(ProtocolError::BadBinding));
    bind.host_key = vec![0; 3];
    assert_eq!(bind.host_fingerprint(), Err(ProtocolError::BadBinding));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes at all: an answer or an error, never a panic.
    #[test]
    fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Request::parse(&bytes);
        let _ = Response::parse(&bytes);
    }

    /// Valid requests with a corrupted byte or a cut tail: never a panic; a sign request cut
    /// short is never read as a shorter valid one.
    #[test]
    fn damaged_sign_requests(
        key in proptest::collection::vec(any::<u8>(), 0..80),
        data in proptest::collection::vec(any::<u8>(), 0..200),
        flags in any::<u32>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let bytes = sign_request(&key, &data, flags);
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(Request::parse(short).is_err() || short.is_empty());
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= xor;
        let _ = Request::parse(&flipped);
        prop_assert_eq!(
            Request::parse(&bytes),
            Ok(Request::Sign { key, data, flags })
        );
    }

    /// Identity lists round-trip for any keys and comments.
    #[test]
    fn identity_lists_round_trip(
        ids in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..64), "[ -~]{0,20}"), 0..8),
    ) {
        let response = Response::Identities(
            ids.into_iter().map(|(key, comment)| Identity { key, comment }).collect(),
        );
        prop_assert_eq!(Response::parse(&response.encode()), Ok(response));
    }
}
