//! OpenSSH user certificates keyport signs as the workspaces' user CA (relay mode's `--auth
//! ca`): one principal, minutes of validity around an injected clock, a random serial, a key
//! id that names the person, a fixed set of extensions and no critical option but
//! `source-address`.
//!
//! What is signed is always a fresh per-connection key ([`KeyPair::generate`]), never a user's
//! own key: that one reaches workspaces through agent forwarding, where a certificate for it
//! could be replayed.

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::{Certificate, PublicKey};

use crate::{KeyError, KeyPair};

/// Extensions a certificate may carry: OpenSSH's permissions, nothing else (never X11).
pub const EXTENSIONS: [&str; 4] = [
    "permit-pty",
    "permit-agent-forwarding",
    "permit-user-rc",
    "permit-port-forwarding",
];

/// Longest validity margin on either side of now, in seconds (30 minutes).
pub const MAX_SKEW_SECS: u64 = 1800;

/// What one certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// The one login it is valid for (the workspace login).
    pub principal: String,
    /// Logged by sshd as `ID …`: see [`key_id`].
    pub key_id: String,
    /// Valid from `now - skew_secs` to `now + skew_secs`.
    pub skew_secs: u64,
    /// From [`EXTENSIONS`].
    pub extensions: Vec<&'static str>,
    /// `source-address` (comma-separated CIDRs), when the operator sets it.
    pub source_address: Option<String>,
}

/// A signed certificate and what the audit log records of it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub certificate: Certificate,
    /// Its random serial, as sshd logs it.
    pub serial: u64,
    /// Unix seconds.
    pub valid_after: u64,
    /// Unix seconds.
    pub valid_before: u64,
}

/// Why a certificate was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The request breaks a rule (named).
    #[error("certificate {field}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        rule: String,
    },
    /// `ssh-key` refused to build or sign it.
    #[error("certificate signing failed: {0}")]
    Sign(String),
}

impl From<KeyError> for CertError {
    fn from(e: KeyError) -> Self {
        CertError::Sign(e.to_string())
    }
}

/// Characters sshd logs verbatim; anything else in a key id part becomes `_`.
fn key_id_char(c: char) -> char {
    if c.is_ascii_alphanumeric() || "._@-".contains(c) {
        c
    } else {
        '_'
    }
}

/// `keyport:<gateway>:<user>:<workspace>:<connection>`, each part limited to
/// `[A-Za-z0-9._@-]` (sshd writes the id into its log as it is).
pub fn key_id(gateway: &str, user: &str, workspace: &str, connection: &str) -> String {
    let parts: Vec<String> = [gateway, user, workspace, connection]
        .iter()
        .map(|p| p.chars().map(key_id_char).collect())
        .collect();
    format!("keyport:{}", parts.join(":"))
}

fn invalid(field: &'static str, rule: impl Into<String>) -> CertError {
    CertError::Invalid {
        field,
        rule: rule.into(),
    }
}

impl CertRequest {
    /// Every rule a certificate keyport signs keeps: a principal, a bounded validity, known
    /// extensions only, and a `source-address` of CIDRs.
    pub fn check(&self) -> Result<(), CertError> {
        if self.principal.is_empty() || self.principal.contains([',', ' ']) {
            return Err(invalid("principal", "must be one login name"));
        }
        if !(1..=MAX_SKEW_SECS).contains(&self.skew_secs) {
            return Err(invalid(
                "skew",
                format!("must be 1 to {MAX_SKEW_SECS} seconds"),
            ));
        }
        if self.key_id.is_empty() || self.key_id.chars().any(|c| key_id_char(c) != c && c != ':') {
            return Err(invalid("key id", "must be [A-Za-z0-9._@:-], not empty"));
        }
        if let Some(bad) = self.extensions.iter().find(|e| !EXTENSIONS.contains(e)) {
            return Err(invalid(
                "extension",
                format!("{bad} is not one keyport signs"),
            ));
        }
        if let Some(list) = &self.source_address {
            check_cidrs(list).map_err(|rule| invalid("source-address", rule))?;
        }
        Ok(())
    }
}

/// `203.0.113.7/32,2001:db8::/48`: addresses with an optional prefix length, comma-separated.
pub fn check_cidrs(list: &str) -> Result<(), String> {
    if list.is_empty() {
        return Err("must list at least one address".into());
    }
    for item in list.split(',') {
        let (addr, bits) = match item.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (item, None),
        };
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{item:?} is not an address or CIDR"))?;
        let max: u32 = if ip.is_ipv4() { 32 } else { 128 };
        let Some(bits) = bits else { continue };
        // As sshd's addr_pton_cidr: digits only, within the address's width, and no host bits
        // set (sshd refuses the whole certificate otherwise).
        let len = Some(bits)
            .filter(|b| !b.is_empty() && b.len() <= 3 && b.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|b| b.parse::<u32>().ok())
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?;
        let host_bits = match ip {
            std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)) & mask(32, len),
            std::net::IpAddr::V6(v6) => u128::from(v6) & mask(128, len),
        };
        if host_bits != 0 {
            return Err(format!(
                "{item:?}: bits past the /{len} prefix are set (sshd refuses it); give the \
                 network address"
            ));
        }
    }
    Ok(())
}

/// The host part of a `width`-bit address with a `len`-bit prefix, as a bit mask.
fn mask(width: u32, len: u32) -> u128 {
    let host = width - len;
    if host == 0 {
        0
    } else {
        u128::MAX >> (128 - host)
    }
}

/// Signs a user certificate for `subject` with `ca`, valid around `now` (Unix seconds): the
/// clock is the caller's, so tests can sign for a skewed one.
pub fn issue(
    ca: &KeyPair,
    subject: &PublicKey,
    request: &CertRequest,
    now: u64,
) -> Result<Issued, CertError> {
    request.check()?;
    let mut nonce = [0u8; 32];
    let mut serial = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| CertError::Sign(e.to_string()))?;
    getrandom::fill(&mut serial).map_err(|e| CertError::Sign(e.to_string()))?;
    let serial = u64::from_be_bytes(serial);
    let valid_after = now.saturating_sub(request.skew_secs);
    let valid_before = now.saturating_add(request.skew_secs);
    let sign = |e: russh::keys::ssh_key::Error| CertError::Sign(e.to_string());
    let mut builder = Builder::new(
        nonce.to_vec(),
        subject.key_data().clone(),
        valid_after,
        valid_before,
    )
    .map_err(sign)?;
    builder
        .serial(serial)
        .and_then(|b| b.cert_type(CertType::User))
        .and_then(|b| b.key_id(request.key_id.clone()))
        .and_then(|b| b.valid_principal(request.principal.clone()))
        .map_err(sign)?;
    for name in &request.extensions {
        builder.extension(*name, "").map_err(sign)?;
    }
    if let Some(list) = &request.source_address {
        builder
            .critical_option("source-address", list.clone())
            .map_err(sign)?;
    }
    let certificate = builder.sign(ca.private()).map_err(sign)?;
    Ok(Issued {
        certificate,
        serial,
        valid_after,
        valid_before,
    })
}

#[cfg(test)]
#[path = "cert_tests.rs"]
mod tests;
