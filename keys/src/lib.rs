//! keyport-keys: key custody for keyport.
//!
//! Everything that touches private key material or sealed values lives here, so the rest of
//! keyport only ever holds public keys, sealed blobs, and the redacting [`SecretBytes`] wrapper.
//! No SQL, no SSH server, no HTTP.
//!
//! # Layout
//! - [`secret`]: [`SecretBytes`], bytes whose `Debug` redacts and whose memory is zeroized on drop.
//! - [`userkey`]: generating key pairs (ed25519, ECDSA P-256) for users and the host, OpenSSH public key lines and
//!   `SHA256:` fingerprints, parsing public keys users log in with.
//! - [`agent`]: the ssh-agent protocol's messages, parsed from and encoded to bytes, both sides.
//! - [`cert`]: OpenSSH user certificates signed as the workspaces' user CA (relay `--auth ca`).
//! - [`jwt`]: ES256 JWTs keyport signs per user for Vault/OpenBao's JWT auth.
//! - [`seal`]: AES-256-GCM sealing under a 32-byte master key, with the key's id in the blob and
//!   associated data that binds a blob to its owner and purpose.

pub mod agent;
pub mod cert;
pub mod jwt;
pub mod seal;
pub mod secret;
pub mod userkey;

pub use seal::{Binding, MasterKey, SealError};
pub use secret::SecretBytes;
pub use userkey::{KeyError, KeyPair, KeyType, LoginKey};

/// Re-exported so dependants use the same `ssh-key` version russh uses.
pub use russh::keys::{PrivateKey, PublicKey};
