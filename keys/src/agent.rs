//! The ssh-agent protocol (draft-miller-ssh-agent), both sides, as plain bytes in and out.
//!
//! keyport's agent socket answers requests ([`Request::parse`], [`Response::encode`]) and
//! relays some of them to the agent a client forwarded ([`Request::encode`],
//! [`Response::parse`]). Nothing here does I/O: a frame is a 4-byte big-endian length and
//! that many bytes of payload, at most [`MAX_FRAME`]; [`frame_len`] checks the header and
//! [`frame`] builds one. Every parser takes untrusted bytes and returns an error rather than
//! panic, whatever they hold.

use std::fmt;

use russh::keys::signature::Verifier;
use russh::keys::ssh_key::Signature;
use russh::keys::{HashAlg, PublicKey};

/// Largest frame payload either side accepts (OpenSSH's agent uses the same).
pub const MAX_FRAME: usize = 256 * 1024;

/// `SSH_AGENT_RSA_SHA2_256`: sign an RSA key with rsa-sha2-256.
pub const FLAG_RSA_SHA2_256: u32 = 2;
/// `SSH_AGENT_RSA_SHA2_512`: sign an RSA key with rsa-sha2-512.
pub const FLAG_RSA_SHA2_512: u32 = 4;

const FAILURE: u8 = 5;
const SUCCESS: u8 = 6;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const ADD_IDENTITY: u8 = 17;
const REMOVE_IDENTITY: u8 = 18;
const REMOVE_ALL_IDENTITIES: u8 = 19;
const ADD_SMARTCARD_KEY: u8 = 20;
const REMOVE_SMARTCARD_KEY: u8 = 21;
const LOCK: u8 = 22;
const UNLOCK: u8 = 23;
const ADD_ID_CONSTRAINED: u8 = 25;
const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
const EXTENSION: u8 = 27;
const EXTENSION_FAILURE: u8 = 28;

/// The extension `ssh` sends to tell the agent which host a connection is for.
pub const SESSION_BIND: &str = "session-bind@openssh.com";

/// Bytes that are not a well-formed agent message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The frame's length is zero or above [`MAX_FRAME`].
    #[error("agent frame of {0} bytes (allowed: 1 to {MAX_FRAME})")]
    FrameSize(usize),
    /// A field runs past the end of the message.
    #[error("agent message is truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("agent message has trailing bytes")]
    Trailing,
    /// A text field is not UTF-8.
    #[error("agent message holds a name that is not UTF-8")]
    Utf8,
    /// A message type this side does not expect.
    #[error("unexpected agent message type {0}")]
    UnexpectedType(u8),
    /// The session-bind signature does not verify with the host key it names.
    #[error("session-bind signature does not verify")]
    BadBinding,
}

/// The payload length a frame header announces, if allowed.
pub fn frame_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtocolError::FrameSize(len));
    }
    Ok(len)
}

/// `payload` with its length header.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    put_u32(&mut out, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A request from an agent client.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// `SSH_AGENTC_REQUEST_IDENTITIES`.
    Identities,
    /// `SSH_AGENTC_SIGN_REQUEST`.
    Sign {
        /// The public key blob to sign with.
        key: Vec<u8>,
        /// What to sign.
        data: Vec<u8>,
        /// `FLAG_RSA_*` bits.
        flags: u32,
    },
    /// The `session-bind@openssh.com` extension.
    SessionBind(SessionBind),
    /// Any other extension, by name.
    Extension(String),
    /// A request that changes the agent (add, remove, lock, unlock, smartcards): keyport's
    /// agent holds exactly the keys it was given, and refuses these.
    Change(u8),
    /// A type the protocol does not define.
    Unknown(u8),
}

impl fmt::Debug for Request {
    /// Names the request and its sizes, never the bytes to be signed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identities => f.write_str("Identities"),
            Self::Sign { key, data, flags } => f
                .debug_struct("Sign")
                .field("key_len", &key.len())
                .field("data_len", &data.len())
                .field("flags", flags)
                .finish(),
            Self::SessionBind(bind) => f.debug_tuple("SessionBind").field(bind).finish(),
            Self::Extension(name) => f.debug_tuple("Extension").field(name).finish(),
            Self::Change(kind) => f.debug_tuple("Change").field(kind).finish(),
            Self::Unknown(kind) => f.debug_tuple("Unknown").field(kind).finish(),
        }
    }
}

/// What `ssh` tells its agent about the connection a signature is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBind {
    /// The destination's host key blob.
    pub host_key: Vec<u8>,
    /// The SSH session identifier (exchange hash).
    pub session_id: Vec<u8>,
    /// The host's signature over `session_id`.
    pub signature: Vec<u8>,
    /// Whether this connection forwards the agent further.
    pub forwarding: bool,
}

impl SessionBind {
    /// The host key, once the host's signature over the session id verifies with it.
    pub fn verified_host_key(&self) -> Result<PublicKey, ProtocolError> {
        let key = PublicKey::from_bytes(&self.host_key).map_err(|_| ProtocolError::BadBinding)?;
        let signature = Signature::try_from(self.signature.as_slice())
            .map_err(|_| ProtocolError::BadBinding)?;
        Verifier::verify(&key, &self.session_id, &signature)
            .map_err(|_| ProtocolError::BadBinding)?;
        Ok(key)
    }

    /// The `SHA256:` fingerprint of the host key, once verified.
    pub fn host_fingerprint(&self) -> Result<String, ProtocolError> {
        Ok(self
            .verified_host_key()?
            .fingerprint(HashAlg::Sha256)
            .to_string())
    }
}

impl Request {
    /// Parses one frame's payload.
    pub fn parse(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader(payload);
        let request = match r.byte()? {
            REQUEST_IDENTITIES => Self::Identities,
            SIGN_REQUEST => Self::Sign {
                key: r.string()?.to_vec(),
                data: r.string()?.to_vec(),
                flags: r.u32()?,
            },
            EXTENSION => {
                let name = std::str::from_utf8(r.string()?).map_err(|_| ProtocolError::Utf8)?;
                if name != SESSION_BIND {
                    // The contents are the extension's own; nothing more to check.
                    return Ok(Self::Extension(name.to_string()));
                }
                Self::SessionBind(SessionBind {
                    host_key: r.string()?.to_vec(),
                    session_id: r.string()?.to_vec(),
                    signature: r.string()?.to_vec(),
                    forwarding: r.byte()? != 0,
                })
            }
            kind @ (ADD_IDENTITY
            | REMOVE_IDENTITY
            | REMOVE_ALL_IDENTITIES
            | ADD_SMARTCARD_KEY
            | REMOVE_SMARTCARD_KEY
            | LOCK
            | UNLOCK
            | ADD_ID_CONSTRAINED
            | ADD_SMARTCARD_KEY_CONSTRAINED) => return Ok(Self::Change(kind)),
            kind => return Ok(Self::Unknown(kind)),
        };
        r.end()?;
        Ok(request)
    }

    /// The payload for this request (the client side, relaying to a forwarded agent).
    /// `Change` and `Unknown` encode as their bare type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Identities => out.push(REQUEST_IDENTITIES),
            Self::Sign { key, data, flags } => {
                out.push(SIGN_REQUEST);
                put_string(&mut out, key);
                put_string(&mut out, data);
                put_u32(&mut out, *flags as usize);
            }
            Self::SessionBind(bind) => {
                out.push(EXTENSION);
                put_string(&mut out, SESSION_BIND.as_bytes());
                put_string(&mut out, &bind.host_key);
                put_string(&mut out, &bind.session_id);
                put_string(&mut out, &bind.signature);
                out.push(u8::from(bind.forwarding));
            }
            Self::Extension(name) => {
                out.push(EXTENSION);
                put_string(&mut out, name.as_bytes());
            }
            Self::Change(kind) | Self::Unknown(kind) => out.push(*kind),
        }
        out
    }
}

/// One key an agent lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The public key blob.
    pub key: Vec<u8>,
    /// Its comment.
    pub comment: String,
}

/// An agent's answer.
#[derive(Clone, PartialEq, Eq)]
pub enum Response {
    /// `SSH_AGENT_SUCCESS`.
    Success,
    /// `SSH_AGENT_FAILURE` (and `SSH_AGENT_EXTENSION_FAILURE`, read as the same).
    Failure,
    /// `SSH_AGENT_IDENTITIES_ANSWER`.
    Identities(Vec<Identity>),
    /// `SSH_AGENT_SIGN_RESPONSE`: the signature blob.
    Signature(Vec<u8>),
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("Success"),
            Self::Failure => f.write_str("Failure"),
            Self::Identities(ids) => f.debug_tuple("Identities").field(&ids.len()).finish(),
            Self::Signature(sig) => f.debug_tuple("Signature").field(&sig.len()).finish(),
        }
    }
}

impl Response {
    /// The payload for this answer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Success => out.push(SUCCESS),
            Self::Failure => out.push(FAILURE),
            Self::Identities(ids) => {
                out.push(IDENTITIES_ANSWER);
                put_u32(&mut out, ids.len());
                for id in ids {
                    put_string(&mut out, &id.key);
                    put_string(&mut out, id.comment.as_bytes());
                }
            }
            Self::Signature(sig) => {
                out.push(SIGN_RESPONSE);
                put_string(&mut out, sig);
            }
        }
        out
    }

    /// Parses an agent's answer (the client side).
    pub fn parse(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader(payload);
        let response = match r.byte()? {
            SUCCESS => Self::Success,
            FAILURE | EXTENSION_FAILURE => return Ok(Self::Failure),
            IDENTITIES_ANSWER => {
                let count = r.u32()? as usize;
                // Each identity takes at least 8 bytes: a bogus count cannot reserve memory.
                let mut ids = Vec::with_capacity(count.min(r.0.len() / 8));
                for _ in 0..count {
                    let key = r.string()?.to_vec();
                    let comment = String::from_utf8_lossy(r.string()?).into_owned();
                    ids.push(Identity { key, comment });
                }
                Self::Identities(ids)
            }
            SIGN_RESPONSE => Self::Signature(r.string()?.to_vec()),
            other => return Err(ProtocolError::UnexpectedType(other)),
        };
        r.end()?;
        Ok(response)
    }
}

/// A cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn end(&self) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Trailing)
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Every length here is bounded by MAX_FRAME or by a u32 read from the wire.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
