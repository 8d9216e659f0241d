//! ES256 JWTs signed by hand for tests of JWT auth against a real OpenBao (what keyport will
//! do per user): a P-256 key pair made with `ssh-keygen -t ecdsa`, its SPKI PEM for
//! `jwt_validation_pubkeys`, and compact tokens signed with russh's key code.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};

use super::require_tool;

/// A P-256 key pair for signing ES256 JWTs by hand (what keyport will do per user), made with
/// `ssh-keygen -t ecdsa` and signed with russh's key code.
pub struct Es256Key {
    key: russh::keys::PrivateKey,
    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), for `jwt_validation_pubkeys`.
    pub public_pem: String,
}

impl Es256Key {
    /// A new key pair, its OpenSSH private key file at `path`.
    pub fn generate(path: &Path) -> Self {
        require_tool("ssh-keygen");
        let _ = std::fs::remove_file(path);
        let status = Command::new("ssh-keygen")
            .args([
                "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-C", "jwt", "-f",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "ssh-keygen -t ecdsa");
        let text = std::fs::read_to_string(path).unwrap();
        let key = russh::keys::PrivateKey::from_openssh(&text).unwrap();
        let point = key
            .public_key()
            .key_data()
            .ecdsa()
            .expect("an ECDSA key")
            .as_sec1_bytes()
            .to_vec();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        // SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } BIT STRING (the point).
        let mut der = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        der.extend_from_slice(&point);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let public_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        );
        Self { key, public_pem }
    }

    /// A compact JWS (`header.claims.signature`, base64url) of `claims`, header
    /// `{"alg":"ES256","typ":"JWT"}`, signature raw `r || s` as JWA wants (not DER).
    pub fn sign(&self, claims: &Value) -> String {
        use russh::keys::signature::Signer as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"ES256","typ":"JWT"}"#),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let signature = self.key.try_sign(input.as_bytes()).unwrap();
        // The SSH encoding: mpint r, mpint s (big-endian, a leading 0 when the top bit is set).
        let mut data = signature.as_bytes();
        let mut raw = Vec::with_capacity(64);
        for _ in 0..2 {
            let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            let int = &data[4..4 + len];
            let int = &int[int.iter().take_while(|b| **b == 0).count()..];
            assert!(int.len() <= 32, "a P-256 scalar");
            raw.extend(std::iter::repeat_n(0u8, 32 - int.len()));
            raw.extend_from_slice(int);
            data = &data[4 + len..];
        }
        format!("{input}.{}", b64(&raw))
    }
}

/// JWT claims for `sub`, audience `aud`, issued now and valid for `ttl`.
pub fn jwt_claims(sub: &str, aud: &str, ttl: Duration) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({ "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + ttl.as_secs() })
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
