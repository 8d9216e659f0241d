//! The rules a workspace's fields follow (names, `HOST:PORT` addresses, logins, host key
//! lines), each broken rule a [`Violation`] naming the field.

use std::net::Ipv6Addr;

use russh::keys::{HashAlg, PublicKey};

use crate::secrets::{Violation, validate};

/// Longest login name on a workspace: the traditional `UT_NAMESIZE` of utmp, which OpenSSH's
/// `login` records and `useradd` keep to.
pub const MAX_LOGIN_LEN: usize = 32;

/// Workspace names follow the user-name rule (1–64 of `[A-Za-z0-9._-]`, starting with a letter
/// or digit), so `user:workspace` in an SSH login splits at its one `:`.
pub fn check_workspace_name(name: &str) -> Result<(), Violation> {
    validate::check_name(name)
}

/// `HOST:PORT`: a host name, an IPv4 address or a bracketed IPv6 address, and a port from 1 to
/// 65535.
pub fn check_address(address: &str) -> Result<(), Violation> {
    let bad = |detail: String| Err(Violation::new("address", detail));
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("must be HOST:PORT (for example dev1.internal:22)".into());
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return bad("the port must be a number from 1 to 65535 (HOST:PORT)".into());
    }
    if !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return bad(format!("port {port} is out of range: must be 1 to 65535"));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_err() {
            return bad(format!("[{inner}] is not an IPv6 address"));
        }
        return Ok(());
    }
    if host.contains(':') {
        return bad("an IPv6 address goes in brackets: [2001:db8::1]:22".into());
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !host_ok {
        return bad(
            "the host must be a host name or an IP address (letters, digits, '-', '.', '_'; \
             at most 253 characters)"
                .into(),
        );
    }
    Ok(())
}

/// A login on a workspace: 1–32 characters of `[A-Za-z0-9._-]`, not starting with `-` (it
/// would read as an option) and not all digits (it would read as a uid).
pub fn check_login(login: &str) -> Result<(), Violation> {
    let chars_ok = login
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if login.is_empty()
        || login.len() > MAX_LOGIN_LEN
        || !chars_ok
        || login.starts_with('-')
        || login.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Violation::new(
            "os-user",
            format!(
                "must be a login name: 1 to {MAX_LOGIN_LEN} characters, letters, digits, '.', \
                 '_' or '-', not starting with '-' and not all digits"
            ),
        ));
    }
    Ok(())
}

/// Parses one host key line (`TYPE BASE64 [COMMENT]`, as in a `.pub` file or after the host
/// names of a known_hosts line) into its canonical line (no comment) and `SHA256:` fingerprint.
pub fn parse_host_key(line: &str) -> Result<(String, String), Violation> {
    let bad = |detail: String| Err(Violation::new("host-key", detail));
    let line = line.trim();
    if line.is_empty() {
        return bad("is empty (expected a line like `ssh-ed25519 AAAA…`)".into());
    }
    if line.contains("PRIVATE KEY") {
        return bad("is a private key; give the public key line".into());
    }
    let key = match PublicKey::from_openssh(line) {
        Ok(key) => key,
        Err(e) => {
            // `ssh-keyscan` and known_hosts lines start with the host names.
            let second = line.split_whitespace().nth(1).unwrap_or("");
            let hint = if second.starts_with("ssh-") || second.starts_with("ecdsa-") {
                "; drop the host name in front of the key type (a known_hosts line)"
            } else {
                " (expected a line like `ssh-ed25519 AAAA…`)"
            };
            return bad(format!("is not an OpenSSH public key: {e}{hint}"));
        }
    };
    let mut canonical = key.clone();
    canonical.set_comment("");
    let public_key = match canonical.to_openssh() {
        Ok(text) => text.trim_end().to_string(),
        Err(e) => return bad(format!("cannot be encoded: {e}")),
    };
    Ok((public_key, key.fingerprint(HashAlg::Sha256).to_string()))
}
