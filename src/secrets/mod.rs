//! Secrets: what a user asks for (spec and patch), what they get back (metadata, never a value),
//! the validation rules both the server and the CLI apply, import parsing, and the composition
//! of a session's environment.

pub mod env;
pub mod import;
pub mod validate;

use keyport_keys::SecretBytes;
use serde::Serialize;

use crate::store::SecretRecord;
pub use validate::{Limits, Violation};

/// A secret to create.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    /// Name, unique per user.
    pub name: String,
    /// The value (bytes; binary allowed for file-only secrets).
    pub value: SecretBytes,
    /// Free text.
    pub description: String,
    /// Env var to inject it as.
    pub env: Option<String>,
    /// File to write it to (`~/…` or absolute).
    pub file: Option<String>,
    /// Whether to inject it; default: whether it has a target.
    pub enabled: Option<bool>,
}

/// A new secret as it arrives over the wire (the API's create body, a JSON import entry):
/// the value as UTF-8 `value` or as `value_base64`, exactly one of them.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// Name, unique per user.
    pub name: String,
    /// The value as UTF-8 text (give this or `value_base64`).
    pub value: Option<String>,
    /// The value as base64, for binary file secrets.
    pub value_base64: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Env var to inject it as.
    pub env: Option<String>,
    /// File to write it to (`~/…` or absolute).
    pub file: Option<String>,
    /// Inject it? Default: whether it has a target.
    pub enabled: Option<bool>,
}

impl SecretInput {
    /// The spec, once exactly one form of the value is given.
    pub fn into_spec(self) -> Result<SecretSpec, Violation> {
        let value = wire_value(self.value, self.value_base64)?
            .ok_or_else(|| Violation::new("value", "is required (give value or value_base64)"))?;
        Ok(SecretSpec {
            name: self.name,
            value,
            description: self.description,
            env: self.env,
            file: self.file,
            enabled: self.enabled,
        })
    }
}

/// A value given as UTF-8 text or as base64 (at most one of them).
pub fn wire_value(
    text: Option<String>,
    b64: Option<String>,
) -> Result<Option<SecretBytes>, Violation> {
    use base64::Engine as _;
    match (text, b64) {
        (None, None) => Ok(None),
        (Some(text), None) => Ok(Some(SecretBytes::new(text.into_bytes()))),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map(|v| Some(SecretBytes::new(v)))
            .map_err(|_| Violation::new("value_base64", "must be valid base64")),
        (Some(_), Some(_)) => Err(Violation::new(
            "value",
            "give value or value_base64, not both",
        )),
    }
}

/// A change to a secret. `None` leaves a field unchanged; for `description`, `env` and `file`
/// an empty string clears it.
#[derive(Debug, Clone, Default)]
pub struct SecretPatch {
    /// New value.
    pub value: Option<SecretBytes>,
    /// New description (`""` clears).
    pub description: Option<String>,
    /// New env target (`""` clears).
    pub env: Option<String>,
    /// New file target (`""` clears).
    pub file: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

impl SecretPatch {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.description.is_none()
            && self.env.is_none()
            && self.file.is_none()
            && self.enabled.is_none()
    }

    /// The names of the fields this patch sets, for the audit log.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("value", self.value.is_some()),
            ("description", self.description.is_some()),
            ("env", self.env.is_some()),
            ("file", self.file.is_some()),
            ("enabled", self.enabled.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// A patch field that sets something: present and not the "clear" empty string.
pub fn sets(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.is_empty())
}

/// A secret as users see it: metadata only. There is deliberately no value field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SecretMeta {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Env target.
    pub env: Option<String>,
    /// File target as given.
    pub file: Option<String>,
    /// Whether it is injected.
    pub enabled: bool,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

impl From<SecretRecord> for SecretMeta {
    fn from(r: SecretRecord) -> Self {
        Self {
            name: r.name,
            description: r.description,
            env: r.env_name,
            file: r.file_path,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<&SecretRecord> for validate::SecretShape {
    fn from(r: &SecretRecord) -> Self {
        Self {
            name: r.name.clone(),
            env: r.env_name.clone(),
            file: r.file_path.clone(),
            file_resolved: r.file_resolved.clone(),
            enabled: r.enabled,
            value_len: usize::try_from(r.value_len).unwrap_or(usize::MAX),
        }
    }
}

/// Replaces every double-quoted run in an error message (serde quotes the *input* there, e.g.
/// `invalid type: string "…", expected a boolean`, escaping quotes inside as `\"`) with
/// `"…"`, so no value is ever echoed.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        // Skip to the closing quote; a backslash escapes the character after it.
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_quoted_hides_input() {
        assert_eq!(
            super::redact_quoted(r#"invalid type: string "hunter2", expected a boolean at line 1"#),
            r#"invalid type: string "…", expected a boolean at line 1"#
        );
        assert_eq!(
            super::redact_quoted("unknown field `valeu`"),
            "unknown field `valeu`"
        );
        assert_eq!(
            super::redact_quoted(r#"string "a\"leak\\" here, "b" end"#),
            r#"string "…" here, "…" end"#
        );
        assert_eq!(super::redact_quoted(r#"cut "off\"leak"#), r#"cut "…""#);
    }
}
