//! User key pairs keyport generates, and public keys users log in with.
//!
//! The public key line is what `ssh-keygen -y` would print and the fingerprint is what
//! `ssh-keygen -l` prints for it (`SHA256:` + unpadded base64), so users can paste either into
//! GitHub or an upstream's `authorized_keys` and compare.

use std::fmt;
use std::str::FromStr;

use russh::keys::signature::Signer;
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, HashAlg, Signature};
use russh::keys::{PrivateKey, PublicKey};

use crate::SecretBytes;

/// Why a key could not be generated, parsed or encoded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key type name is not one keyport generates.
    #[error("key type '{0}' is not supported (expected ed25519 or ecdsa-p256)")]
    UnknownType(String),
    /// The text is not a single OpenSSH public key line.
    #[error("not an OpenSSH public key line ({0})")]
    BadPublicKey(String),
    /// The text is a private key, which keyport never accepts as a login key.
    #[error("this is a private key; give the public key (the .pub file) instead")]
    PrivateKeyGiven,
    /// The key algorithm is not accepted for logins.
    #[error("key algorithm {0} is not accepted (use ed25519, ecdsa or rsa)")]
    UnsupportedAlgorithm(String),
    /// Key generation or encoding failed inside `ssh-key`.
    #[error("key encoding failed")]
    Encoding,
}

/// The algorithms keyport generates user keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// Ed25519 (the default).
    #[default]
    Ed25519,
    /// ECDSA on NIST P-256, for remotes that do not accept ed25519.
    EcdsaP256,
}

impl KeyType {
    /// The name used on the command line, in the API and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            KeyType::Ed25519 => Algorithm::Ed25519,
            KeyType::EcdsaP256 => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        }
    }
}

impl FromStr for KeyType {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "ed25519" => Ok(KeyType::Ed25519),
            "ecdsa-p256" | "ecdsa" => Ok(KeyType::EcdsaP256),
            other => Err(KeyError::UnknownType(other.to_string())),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key pair (a user key or the host key). The private half zeroizes on drop and `Debug` shows only the public side.
pub struct KeyPair {
    kind: KeyType,
    private: PrivateKey,
}

impl KeyPair {
    /// Generates a fresh key pair; `comment` ends the public key line (e.g. `keyport:alice`).
    pub fn generate(kind: KeyType, comment: &str) -> Result<Self, KeyError> {
        let mut rng = russh::keys::key::safe_rng();
        let mut private =
            PrivateKey::random(&mut rng, kind.algorithm()).map_err(|_| KeyError::Encoding)?;
        private.set_comment(comment);
        Ok(Self { kind, private })
    }

    /// Decodes key material produced by [`KeyPair::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &SecretBytes) -> Result<Self, KeyError> {
        let private = PrivateKey::from_bytes(bytes.expose()).map_err(|_| KeyError::Encoding)?;
        let kind = match private.algorithm() {
            Algorithm::Ed25519 => KeyType::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            } => KeyType::EcdsaP256,
            other => return Err(KeyError::UnsupportedAlgorithm(other.to_string())),
        };
        Ok(Self { kind, private })
    }

    /// The private key in OpenSSH binary form, for sealing. Never store this unsealed.
    pub fn to_secret_bytes(&self) -> Result<SecretBytes, KeyError> {
        let bytes = self.private.to_bytes().map_err(|_| KeyError::Encoding)?;
        Ok(SecretBytes::new(bytes.to_vec()))
    }

    /// The algorithm.
    pub fn kind(&self) -> KeyType {
        self.kind
    }

    /// The OpenSSH public key line, e.g. `ssh-ed25519 AAAA… keyport:alice`.
    pub fn public_line(&self) -> Result<String, KeyError> {
        self.private
            .public_key()
            .to_openssh()
            .map_err(|_| KeyError::Encoding)
    }

    /// The `SHA256:` fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.private.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The private key, for a login that needs it whole (a per-connection certificate key).
    pub fn into_private(self) -> PrivateKey {
        self.private
    }

    /// The private key, for signing inside the daemon.
    pub fn private(&self) -> &PrivateKey {
        &self.private
    }

    /// The public key blob (SSH wire form), as agents list it.
    pub fn public_blob(&self) -> Result<Vec<u8>, KeyError> {
        self.private
            .public_key()
            .to_bytes()
            .map_err(|_| KeyError::Encoding)
    }

    /// Signs `data` the way an agent answers a sign request: the SSH signature blob
    /// (algorithm name, then the signature). ed25519 and P-256 have one algorithm each, so
    /// the request's RSA flags do not apply.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signature: Signature =
            Signer::try_sign(&self.private, data).map_err(|_| KeyError::Encoding)?;
        Vec::try_from(signature).map_err(|_| KeyError::Encoding)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kind", &self.kind)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A public key a user logs in with, parsed from an `authorized_keys`-style line.
#[derive(Debug, Clone)]
pub struct LoginKey {
    key: PublicKey,
}

impl LoginKey {
    /// Parses one OpenSSH public key line (`TYPE BASE64 [COMMENT]`).
    pub fn parse(line: &str) -> Result<Self, KeyError> {
        let line = line.trim();
        if line.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKeyGiven);
        }
        let key =
            PublicKey::from_openssh(line).map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        match key.algorithm() {
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => {}
            other => return Err(KeyError::UnsupportedAlgorithm(other.to_string())),
        }
        Ok(Self { key })
    }

    /// Wraps an already parsed key (e.g. one a client offered).
    pub fn from_public(key: PublicKey) -> Self {
        Self { key }
    }

    /// The algorithm name as it appears in the key line (`ssh-ed25519`, …).
    pub fn algorithm(&self) -> String {
        self.key.algorithm().to_string()
    }

    /// The key line without its comment, the canonical form keyport stores and compares.
    pub fn canonical_line(&self) -> Result<String, KeyError> {
        let mut key = self.key.clone();
        key.set_comment("");
        key.to_openssh()
            .map(|s| s.trim_end().to_string())
            .map_err(|_| KeyError::Encoding)
    }

    /// The comment from the key line (often `user@host`).
    pub fn comment(&self) -> String {
        self.key.comment().to_string()
    }

    /// The `SHA256:` fingerprint.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The parsed key.
    pub fn public(&self) -> &PublicKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_both_types_with_matching_fingerprints() {
        for kind in [KeyType::Ed25519, KeyType::EcdsaP256] {
            let key = KeyPair::generate(kind, "keyport:alice").unwrap();
            let line = key.public_line().unwrap();
            let prefix = match kind {
                KeyType::Ed25519 => "ssh-ed25519 ",
                KeyType::EcdsaP256 => "ecdsa-sha2-nistp256 ",
            };
            assert!(line.starts_with(prefix), "{line}");
            assert!(line.ends_with(" keyport:alice"), "{line}");
            assert!(key.fingerprint().starts_with("SHA256:"));
            // The login-key parser computes the same fingerprint from the line alone.
            assert_eq!(
                LoginKey::parse(&line).unwrap().fingerprint(),
                key.fingerprint()
            );
            // Round trip through the bytes that get sealed.
            let bytes = key.to_secret_bytes().unwrap();
            let back = KeyPair::from_secret_bytes(&bytes).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.fingerprint(), key.fingerprint());
            assert!(!format!("{key:?}").contains("PRIVATE"));
        }
    }

    #[test]
    fn two_generations_differ() {
        let a = KeyPair::generate(KeyType::Ed25519, "").unwrap();
        let b = KeyPair::generate(KeyType::Ed25519, "").unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn key_type_names() {
        assert_eq!("ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert_eq!("ecdsa-p256".parse::<KeyType>().unwrap(), KeyType::EcdsaP256);
        assert!("rsa".parse::<KeyType>().is_err());
    }

    #[test]
    fn login_key_rejects_private_and_garbage() {
        let key = KeyPair::generate(KeyType::Ed25519, "").unwrap();
        let pem = key
            .private()
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap();
        assert!(matches!(
            LoginKey::parse(&pem),
            Err(KeyError::PrivateKeyGiven)
        ));
        assert!(matches!(
            LoginKey::parse("ssh-ed25519 AAAA"),
            Err(KeyError::BadPublicKey(_))
        ));
        assert!(matches!(
            LoginKey::parse(""),
            Err(KeyError::BadPublicKey(_))
        ));
    }

    #[test]
    fn canonical_line_drops_the_comment() {
        let key = KeyPair::generate(KeyType::Ed25519, "me@laptop").unwrap();
        let login = LoginKey::parse(&key.public_line().unwrap()).unwrap();
        assert_eq!(login.comment(), "me@laptop");
        assert!(!login.canonical_line().unwrap().contains("me@laptop"));
    }
}
