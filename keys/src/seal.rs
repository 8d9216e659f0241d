//! Sealing values at rest: AES-256-GCM under the 32-byte master key.
//!
//! A sealed blob is `version (1) ‖ key id (8) ‖ nonce (12) ‖ ciphertext+tag`. The key id lets
//! keyport tell "sealed under another master key" apart from "tampered with", and rotation find
//! what it has to re-seal. The associated data is the header plus a [`Binding`] naming the
//! blob's purpose, owner and item, so a blob copied into another user's row (or used for another
//! purpose) fails to open instead of decrypting to someone else's value.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::SecretBytes;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Why a master key could not be loaded or a blob could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The master key text is not base64 of exactly 32 bytes.
    #[error("master key must be base64 of exactly 32 bytes ({0})")]
    BadMasterKey(&'static str),
    /// The blob was sealed under a different master key.
    #[error("sealed under master key {blob}, but the loaded master key is {loaded}")]
    WrongKey {
        /// Id of the key the blob names.
        blob: String,
        /// Id of the key that was tried.
        loaded: String,
    },
    /// The blob is too short or has an unknown version.
    #[error("sealed value is malformed")]
    Malformed,
    /// Authentication failed: the blob was altered, or belongs to another owner or purpose.
    #[error("sealed value does not open: altered, or bound to another owner or purpose")]
    Unauthentic,
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
}

/// What a sealed blob is bound to: it opens only with the same binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// What the value is, e.g. `"secret"`, `"user-key"`, `"host-key"`, `"file-hash"`.
    pub purpose: &'a str,
    /// Who owns it, e.g. a user id.
    pub owner: &'a str,
    /// Which of the owner's items it is, e.g. a secret name; may be empty.
    pub item: &'a str,
}

impl Binding<'_> {
    fn aad(&self, header: &[u8]) -> Vec<u8> {
        // Length-prefix every part so ("a", "bc") and ("ab", "c") differ.
        let mut aad = Vec::with_capacity(header.len() + 64);
        aad.extend_from_slice(b"keyport-seal-v1");
        aad.extend_from_slice(header);
        for part in [self.purpose, self.owner, self.item] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// The 32-byte master key every value at rest is sealed under.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: [u8; KEY_ID_LEN],
}

impl MasterKey {
    /// Builds a master key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let key = Zeroizing::new(bytes);
        let digest = Sha256::new()
            .chain_update(b"keyport master key id")
            .chain_update(key.as_slice())
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { key, id }
    }

    /// A fresh random master key.
    pub fn generate() -> Result<Self, SealError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| SealError::Random)?;
        let key = Self::from_bytes(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    /// Parses base64 of exactly 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| SealError::BadMasterKey("not valid base64"))?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadMasterKey("wrong length"))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key as base64, for writing the key file. Zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.key.as_slice()))
    }

    /// The key's id: 16 hex digits derived from the key, safe to log and store.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// Seals `plaintext` bound to `binding`.
    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1..1 + KEY_ID_LEN].copy_from_slice(&self.id);
        getrandom::fill(&mut header[1 + KEY_ID_LEN..]).map_err(|_| SealError::Random)?;
        let nonce = Nonce::from_slice(&header[1 + KEY_ID_LEN..]);
        let aad = binding.aad(&header);
        let ciphertext = self
            .cipher()
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Unauthentic)?;
        let mut blob = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        blob.extend_from_slice(&header);
        blob.extend_from_slice(&ciphertext);
        Ok(blob)
    }

    /// Opens a blob sealed with [`MasterKey::seal`] under the same key and binding.
    pub fn unseal(&self, binding: Binding<'_>, blob: &[u8]) -> Result<SecretBytes, SealError> {
        if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != VERSION {
            return Err(SealError::Malformed);
        }
        if blob[1..1 + KEY_ID_LEN] != self.id {
            return Err(SealError::WrongKey {
                blob: blob_key_id(blob)?,
                loaded: self.id(),
            });
        }
        let (header, ciphertext) = blob.split_at(HEADER_LEN);
        let nonce = Nonce::from_slice(&header[1 + KEY_ID_LEN..]);
        let aad = binding.aad(header);
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(SecretBytes::new)
            .map_err(|_| SealError::Unauthentic)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.as_slice().into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// The id of the master key a blob was sealed under, without opening it.
pub fn blob_key_id(blob: &[u8]) -> Result<String, SealError> {
    if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != VERSION {
        return Err(SealError::Malformed);
    }
    Ok(hex(&blob[1..1 + KEY_ID_LEN]))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALICE: Binding<'static> = Binding {
        purpose: "secret",
        owner: "1",
        item: "GITHUB_TOKEN",
    };

    #[test]
    fn round_trip() {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(ALICE, b"ghp_value").unwrap();
        assert_eq!(key.unseal(ALICE, &blob).unwrap().expose(), b"ghp_value");
        assert!(!blob.windows(9).any(|w| w == b"ghp_value"));
    }

    #[test]
    fn nonce_is_fresh_each_time() {
        let key = MasterKey::generate().unwrap();
        assert_ne!(
            key.seal(ALICE, b"x").unwrap(),
            key.seal(ALICE, b"x").unwrap()
        );
    }

    #[test]
    fn wrong_key_is_named_not_mistaken_for_tampering() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        let blob = a.seal(ALICE, b"v").unwrap();
        assert_eq!(
            b.unseal(ALICE, &blob).unwrap_err(),
            SealError::WrongKey {
                blob: a.id(),
                loaded: b.id()
            }
        );
    }

    #[test]
    fn wrong_owner_purpose_or_item_fails() {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(ALICE, b"v").unwrap();
        for other in [
            Binding {
                owner: "2",
                ..ALICE
            },
            Binding {
                purpose: "user-key",
                ..ALICE
            },
            Binding {
                item: "OTHER",
                ..ALICE
            },
            // Length prefixes keep shifted boundaries apart.
            Binding {
                purpose: "secret1",
                owner: "",
                ..ALICE
            },
        ] {
            assert_eq!(
                key.unseal(other, &blob).unwrap_err(),
                SealError::Unauthentic
            );
        }
    }

    #[test]
    fn every_tampered_byte_fails() {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(ALICE, b"some value").unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                key.unseal(ALICE, &bad).is_err(),
                "byte {i} flipped still opened"
            );
        }
        assert_eq!(
            key.unseal(ALICE, &blob[..10]).unwrap_err(),
            SealError::Malformed
        );
    }

    #[test]
    fn master_key_base64_round_trip_and_errors() {
        let key = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&format!("{}\n", key.to_base64().as_str())).unwrap();
        assert_eq!(key.id(), again.id());
        assert_eq!(key.id().len(), 16);
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(SealError::BadMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_base64(&STANDARD.encode([0u8; 31])),
            Err(SealError::BadMasterKey("wrong length"))
        ));
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    }

    proptest! {
        #[test]
        fn seal_round_trips_any_bytes(value in proptest::collection::vec(any::<u8>(), 0..2048),
                                      owner in "[0-9]{1,4}") {
            let key = MasterKey::from_bytes([7u8; 32]);
            let binding = Binding { owner: &owner, ..ALICE };
            let blob = key.seal(binding, &value).unwrap();
            let opened = key.unseal(binding, &blob).unwrap();
            prop_assert_eq!(opened.expose(), &value[..]);
        }
    }
}
