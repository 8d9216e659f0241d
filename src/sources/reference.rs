//! A secret's reference to a value kept elsewhere, as users write it: `vault://MOUNT/PATH#FIELD`
//! (a KV v2 field), `vault-dyn://PATH[?k=v&…]#FIELD` (a leased secret: read, or written with
//! those parameters), `exec://PROVIDER/KEY` (an operator-configured command). Parsing checks
//! the shape only; whether the provider is configured is the vault's check.

use std::fmt;

/// The longest reference accepted.
pub const MAX_REFERENCE_BYTES: usize = 2048;

/// The provider `vault://` and `vault-dyn://` references use (`[sources.vault]`).
pub const VAULT_PROVIDER: &str = "vault";

/// A parsed reference. Its text (`Display`) is what is stored and shown; it is not secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A KV v2 field: `GET /v1/MOUNT/data/PATH`, `data.data.FIELD`.
    Kv {
        /// The KV v2 mount (`secret`).
        mount: String,
        /// The path below it (`team/gh`).
        path: String,
        /// The field (`token`).
        field: String,
    },
    /// A leased secret: `GET /v1/PATH` (or a write with `params`), `data.FIELD`.
    Dynamic {
        /// The whole path (`database/creds/readonly`).
        path: String,
        /// Parameters of a write (`common_name=…`); none: a read.
        params: Vec<(String, String)>,
        /// The field (`password`).
        field: String,
    },
    /// An exec provider's key: `KEY` on the command's stdin.
    Exec {
        /// The provider's name (`[sources.NAME]`).
        provider: String,
        /// What it is asked for.
        key: String,
    },
}

impl Reference {
    /// Parses `text`; the error is the rule it breaks (for the `source` field).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_REFERENCE_BYTES {
            return Err(format!("must be at most {MAX_REFERENCE_BYTES} bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        if let Some(rest) = text.strip_prefix("vault://") {
            let (path, field) = fragment(rest, "vault://MOUNT/PATH#FIELD")?;
            let segments = vault_path(path)?;
            if segments.len() < 2 {
                return Err("needs a mount and a path: vault://MOUNT/PATH#FIELD".into());
            }
            Ok(Reference::Kv {
                mount: segments[0].to_string(),
                path: segments[1..].join("/"),
                field,
            })
        } else if let Some(rest) = text.strip_prefix("vault-dyn://") {
            let (rest, field) = fragment(rest, "vault-dyn://PATH#FIELD")?;
            let (path, query) = match rest.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (rest, None),
            };
            let segments = vault_path(path)?;
            if segments.len() < 2 {
                return Err("needs an engine and a path: vault-dyn://ENGINE/PATH#FIELD".into());
            }
            let params = match query {
                Some(query) => parameters(query)?,
                None => Vec::new(),
            };
            Ok(Reference::Dynamic {
                path: segments.join("/"),
                params,
                field,
            })
        } else if let Some(rest) = text.strip_prefix("exec://") {
            let (provider, key) = rest
                .split_once('/')
                .ok_or("needs a provider and a key: exec://PROVIDER/KEY")?;
            check_provider_name(provider)?;
            if key.is_empty() {
                return Err("needs a key after the provider: exec://PROVIDER/KEY".into());
            }
            Ok(Reference::Exec {
                provider: provider.to_string(),
                key: key.to_string(),
            })
        } else {
            Err("must start with vault://, vault-dyn:// or exec://".into())
        }
    }

    /// The provider that resolves it (`vault`, or an exec provider's name).
    pub fn provider(&self) -> &str {
        match self {
            Reference::Kv { .. } | Reference::Dynamic { .. } => VAULT_PROVIDER,
            Reference::Exec { provider, .. } => provider,
        }
    }

    /// Whether its values come with a lease.
    pub fn leased(&self) -> bool {
        matches!(self, Reference::Dynamic { .. })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Kv { mount, path, field } => write!(f, "vault://{mount}/{path}#{field}"),
            Reference::Dynamic {
                path,
                params,
                field,
            } => {
                write!(f, "vault-dyn://{path}")?;
                for (i, (k, v)) in params.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
                }
                write!(f, "#{field}")
            }
            Reference::Exec { provider, key } => write!(f, "exec://{provider}/{key}"),
        }
    }
}

/// A provider name: `[a-z0-9_-]`, 1 to 64, as in `[sources.NAME]`.
pub fn check_provider_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "provider name `{name}` must be 1 to 64 of a-z, 0-9, _ and -"
        ))
    }
}

/// `rest` split at its `#FIELD`.
fn fragment<'a>(rest: &'a str, shape: &str) -> Result<(&'a str, String), String> {
    let (path, field) = rest
        .rsplit_once('#')
        .ok_or_else(|| format!("needs a field after #: {shape}"))?;
    if field.is_empty() || !field.bytes().all(plain) {
        return Err(format!(
            "field `{field}` must be 1 or more of A-Z, a-z, 0-9, . _ -"
        ));
    }
    Ok((path, field.to_string()))
}

/// A Vault path's segments: none empty, `.` or `..`, each of [`plain`] bytes.
fn vault_path(path: &str) -> Result<Vec<&str>, String> {
    let segments: Vec<&str> = path.split('/').collect();
    for s in &segments {
        if s.is_empty() || *s == "." || *s == ".." {
            return Err("path must not have empty, . or .. segments".into());
        }
        if !s
            .bytes()
            .all(|b| plain(b) || b == b'@' || b == b'+' || b == b'=')
        {
            return Err(format!(
                "path segment `{s}` must be of A-Z, a-z, 0-9 and . _ - @ + ="
            ));
        }
    }
    Ok(segments)
}

/// `k=v&k2=v2`: names of [`plain`] bytes, values of printable ASCII but `&` and `#`.
fn parameters(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("parameter `{pair}` must be NAME=VALUE"))?;
        if k.is_empty() || !k.bytes().all(plain) {
            return Err(format!(
                "parameter name `{k}` must be of A-Z, a-z, 0-9, . _ -"
            ));
        }
        if !v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(format!("parameter {k} must be printable ASCII"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn references_parse_and_print_back() {
        for text in [
            "vault://secret/team/gh#token",
            "vault://kv/a#b",
            "vault-dyn://database/creds/readonly#password",
            "vault-dyn://pki/issue/web?common_name=a.example.com&ttl=1h#certificate",
            "exec://aws/prod/db-password",
            "exec://op/op://Private/GitHub/token",
        ] {
            let r = Reference::parse(text).unwrap();
            assert_eq!(r.to_string(), text);
        }
        let kv = Reference::parse("vault://secret/team/gh#token").unwrap();
        assert_eq!(
            kv,
            Reference::Kv {
                mount: "secret".into(),
                path: "team/gh".into(),
                field: "token".into()
            }
        );
        assert_eq!(kv.provider(), "vault");
        let exec = Reference::parse("exec://aws/x").unwrap();
        assert_eq!(exec.provider(), "aws");
        assert!(!exec.leased());
        assert!(
            Reference::parse("vault-dyn://database/creds/ro#password")
                .unwrap()
                .leased()
        );
    }

    #[test]
    fn bad_references_say_which_rule() {
        for (text, rule) in [
            ("http://x/y#z", "must start with"),
            ("vault://secret#token", "needs a mount and a path"),
            ("vault://secret/gh", "needs a field"),
            ("vault://secret/gh#", "field"),
            ("vault://secret//gh#t", "empty"),
            ("vault://secret/../gh#t", ". or .."),
            ("vault://secret/g h#t", "path segment"),
            ("vault-dyn://pki/issue/web?cn#certificate", "NAME=VALUE"),
            ("vault-dyn://database#password", "needs an engine"),
            ("exec://aws", "needs a provider and a key"),
            ("exec://aws/", "needs a key"),
            ("exec://AWS/k", "provider name"),
            ("vault://secret/gh#t\n", "control"),
        ] {
            let err = Reference::parse(text).unwrap_err();
            assert!(err.contains(rule), "{text}: {err}");
        }
        assert!(Reference::parse(&format!("exec://a/{}", "k".repeat(3000))).is_err());
    }
}
