//! Secrets: what a user asks for (spec and patch), what they get back (metadata, never a value),
//! the validation rules both the server and the CLI apply, import parsing, and the composition
//! of a session's environment.

pub mod env;
pub mod files;
pub mod import;
pub mod lifecycle;
pub mod mask;
pub mod validate;

use keyport_keys::SecretBytes;
use serde::Serialize;

use crate::sources::Reference;
use crate::store::SecretRecord;
pub use validate::{Limits, Violation};

/// Values shorter than this are never masked: short ones would blank ordinary output.
pub const MASK_MIN_LEN: usize = 8;

/// A secret to create.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    /// Name, unique per user.
    pub name: String,
    /// The value (bytes; binary allowed for file-only secrets); empty when `source` is set.
    pub value: SecretBytes,
    /// Where the value is resolved from at each session start, instead of `value`.
    pub source: Option<Reference>,
    /// Refuse a session when the value cannot be had (a source's; a stored one always can).
    pub required: bool,
    /// Free text.
    pub description: String,
    /// Env var to inject it as.
    pub env: Option<String>,
    /// File to write it to (`~/…` or absolute).
    pub file: Option<String>,
    /// Whether to inject it; default: whether it has a target.
    pub enabled: Option<bool>,
    /// Its kind, rotation age and masking.
    pub lifecycle: Lifecycle,
}

/// A secret's kind, and its own rotation age and masking choice (`None`: the kind's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// What it is.
    pub kind: lifecycle::SecretKind,
    /// Its own rotation age.
    pub rotate_after: Option<lifecycle::RotateAfter>,
    /// Its own masking choice.
    pub mask: Option<bool>,
}

/// A new secret as it arrives over the wire (the API's create body, a JSON import entry):
/// the value as UTF-8 `value` or as `value_base64`, exactly one of them.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// Name, unique per user.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// The value as UTF-8 text (give this, `value_base64` or `source`): 1 byte to 64 KiB.
    #[schema(min_length = 1, max_length = 65536)]
    pub value: Option<String>,
    /// The value as base64, for binary file secrets.
    #[schema(min_length = 1)]
    pub value_base64: Option<String>,
    /// Free text: at most 1024 bytes, no control characters but tab.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: String,
    /// Env var to inject it as (see the README for the names refused).
    #[schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")]
    pub env: Option<String>,
    /// File to write it to (`~/…` or absolute): at most 4096 bytes.
    #[schema(pattern = r"^(~/|/)", max_length = 4096)]
    pub file: Option<String>,
    /// Inject it? Default: whether it has a target.
    pub enabled: Option<bool>,
    /// `token`, `password`, `key`, `certificate`, `config` or `other` (default).
    pub kind: Option<lifecycle::SecretKind>,
    /// Its own rotation age (`90d`, `12h`, `never`); absent or `null`: its kind's (config
    /// `[rotation]`).
    pub rotate_after: Option<String>,
    /// Mask its value in pty output? Absent or `null`: yes for token, password and key.
    pub mask: Option<bool>,
    /// Resolve the value at each session start from `vault://MOUNT/PATH#FIELD`,
    /// `vault-dyn://PATH#FIELD` or `exec://PROVIDER/KEY`, instead of storing one.
    #[schema(max_length = 2048)]
    pub source: Option<String>,
    /// Refuse a session when the value cannot be had (default false: go on without it).
    pub required: Option<bool>,
}

/// `source` as given on the wire or the command line, parsed.
pub fn parse_source(text: &str) -> Result<Reference, Violation> {
    Reference::parse(text).map_err(|rule| Violation::new("source", rule))
}

/// `rotate_after` as given on the wire or the command line: `None` for absent, `default`
/// or empty (the kind's), else a rotation age.
pub fn own_rotate_after(text: Option<&str>) -> Result<Option<lifecycle::RotateAfter>, Violation> {
    match text.map(str::trim) {
        None | Some("" | "default") => Ok(None),
        Some(text) => lifecycle::RotateAfter::parse(text)
            .map(Some)
            .map_err(|rule| Violation::new("rotate_after", rule)),
    }
}

impl SecretInput {
    /// The spec, once exactly one form of the value is given.
    pub fn into_spec(self) -> Result<SecretSpec, Violation> {
        let value = wire_value(self.value, self.value_base64)?;
        let source = self.source.as_deref().map(parse_source).transpose()?;
        let value = match (value, &source) {
            (Some(_), Some(_)) => {
                return Err(Violation::new(
                    "source",
                    "give value (or value_base64) or source, not both",
                ));
            }
            (Some(value), None) => value,
            (None, Some(_)) => SecretBytes::new(Vec::new()),
            (None, None) => {
                return Err(Violation::new(
                    "value",
                    "is required (give value, value_base64 or source)",
                ));
            }
        };
        let lifecycle = Lifecycle {
            kind: self.kind.unwrap_or_default(),
            rotate_after: own_rotate_after(self.rotate_after.as_deref())?,
            mask: self.mask,
        };
        Ok(SecretSpec {
            name: self.name,
            value,
            source,
            required: self.required.unwrap_or(false),
            description: self.description,
            env: self.env,
            file: self.file,
            enabled: self.enabled,
            lifecycle,
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
    /// New kind.
    pub kind: Option<lifecycle::SecretKind>,
    /// New rotation age of its own; `Some(None)` goes back to its kind's.
    pub rotate_after: Option<Option<lifecycle::RotateAfter>>,
    /// New masking choice of its own.
    pub mask: Option<bool>,
    /// Resolve the value from this reference from now on (instead of `value`).
    pub source: Option<Reference>,
    /// Refuse sessions when the value cannot be had?
    pub required: Option<bool>,
}

impl SecretPatch {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.description.is_none()
            && self.env.is_none()
            && self.file.is_none()
            && self.enabled.is_none()
            && self.kind.is_none()
            && self.rotate_after.is_none()
            && self.mask.is_none()
            && self.source.is_none()
            && self.required.is_none()
    }

    /// The names of the fields this patch sets, for the audit log.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("value", self.value.is_some()),
            ("description", self.description.is_some()),
            ("env", self.env.is_some()),
            ("file", self.file.is_some()),
            ("enabled", self.enabled.is_some()),
            ("kind", self.kind.is_some()),
            ("rotate_after", self.rotate_after.is_some()),
            ("mask", self.mask.is_some()),
            ("source", self.source.is_some()),
            ("required", self.required.is_some()),
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
    /// What it is.
    pub kind: lifecycle::SecretKind,
    /// Its own rotation age (`90d`, `never`); `null`: its kind's.
    pub rotate_after: Option<String>,
    /// Its own masking choice; `null`: its kind's.
    pub mask: Option<bool>,
    /// When the value last changed (not its description or targets), ms since the epoch.
    pub value_updated_at: i64,
    /// The reference the value is resolved from at each session start; `null`: a stored
    /// value.
    #[serde(default)]
    pub source: Option<String>,
    /// Whether a session is refused when the value cannot be had.
    #[serde(default)]
    pub required: bool,
    /// The rotation age in force: its own, else its kind's (read only).
    pub rotate_after_effective: String,
    /// Whether the value is older than that (read only).
    pub stale: bool,
    /// Whether pty output masks it (read only): its own choice, else its kind's, and only
    /// values of at least 8 bytes.
    pub masked: bool,
    /// A file secret's last delivery, per place it was delivered to (listings only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryMeta>,
}

/// Where a file secret last went, and how that went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeliveryMeta {
    /// The OS account, or `workspace:<id>:<login>` for a workspace login.
    pub place: String,
    /// The file there.
    pub path: String,
    /// `written`, `unchanged` or `failed`.
    pub outcome: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When, ms since the epoch.
    pub at: i64,
}

impl From<crate::store::DeliveryRecord> for DeliveryMeta {
    fn from(d: crate::store::DeliveryRecord) -> Self {
        Self {
            place: d.place,
            path: d.path,
            outcome: d.outcome,
            reason: d.reason,
            at: d.at,
        }
    }
}

impl SecretMeta {
    /// What users see of `r`, its rotation judged under `policy` at `now_ms`.
    pub fn new(r: SecretRecord, policy: &crate::config::RotationSettings, now_ms: i64) -> Self {
        let kind = lifecycle::SecretKind::stored(&r.kind);
        let rotation = lifecycle::rotation(
            policy,
            kind,
            r.rotate_after_secs,
            r.value_updated_at,
            now_ms,
        );
        Self {
            name: r.name,
            description: r.description,
            env: r.env_name,
            file: r.file_path,
            enabled: r.enabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
            kind,
            rotate_after: r
                .rotate_after_secs
                .map(|s| lifecycle::RotateAfter::from_stored(s).to_string()),
            mask: r.mask,
            value_updated_at: r.value_updated_at,
            // A source's value is not known here: masked if its kind masks, whatever its
            // length turns out to be (shorter ones are still left alone in the session).
            masked: match r.source {
                Some(_) => kind.masks(r.mask, MASK_MIN_LEN),
                None => kind.masks(r.mask, usize::try_from(r.value_len).unwrap_or(0)),
            },
            source: r.source,
            required: r.required,
            rotate_after_effective: rotation.after.to_string(),
            stale: rotation.stale,
            deliveries: Vec::new(),
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

/// `v` as a problem of one entry of a batch (`line 3`, `secret GH_TOKEN`, …).
pub fn about(label: &str, mut v: Violation) -> Violation {
    v.detail = format!("{label}: {}", v.detail);
    v
}

/// A serde error message rewritten so it can never echo request input. serde quotes input in
/// strings (`invalid type: string "…"`) and in backticks (`` integer `123456` ``); only what
/// is ours is kept: a missing field's name, an unknown field's name (when it is short and a
/// plain identifier), and what was expected.
pub fn safe_serde_message(message: &str) -> String {
    let ident = |s: &str| {
        s.len() <= 64 && !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let between = |s: &str, open: &str, close: char| -> Option<String> {
        let rest = s.split_once(open)?.1;
        Some(rest.split(close).next()?.to_string())
    };
    // "a.b: …" — axum puts the field path first.
    let (path, body) = match message.split_once(": ") {
        Some((path, body)) if ident(&path.replace(['.', '[', ']'], "")) => (Some(path), body),
        _ => (None, message),
    };
    let what = if body.starts_with("missing field `") {
        between(body, "`", '`').filter(|f| ident(f)).map_or_else(
            || "a required field is missing".into(),
            |f| format!("missing field `{f}`"),
        )
    } else if body.starts_with("unknown field `") {
        between(body, "`", '`').filter(|f| ident(f)).map_or_else(
            || "unknown field".into(),
            |f| format!("unknown field `{f}`"),
        )
    } else if body.starts_with("invalid type") || body.starts_with("invalid value") {
        match body.split_once(", expected ") {
            Some((_, expected)) => {
                let expected = expected.split(" at line ").next().unwrap_or(expected);
                format!("wrong type, expected {}", redact(expected))
            }
            None => "wrong type".into(),
        }
    } else {
        redact(body.split(" at line ").next().unwrap_or(body))
    };
    match path {
        Some(path) => format!("{path}: {what}"),
        None => what,
    }
}

/// Removes every quoted (`"…"`, with `\"` escapes) and backticked run.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push_str("\"…\"");
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
            '`' => {
                out.push_str("`…`");
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::safe_serde_message as safe;

    #[test]
    fn serde_messages_never_echo_input() {
        for (message, want) in [
            (
                r#"enabled: invalid type: string "hunter2", expected a boolean at line 1 column 9"#,
                "enabled: wrong type, expected a boolean",
            ),
            (
                "value: invalid type: integer `123456`, expected a string at line 1 column 20",
                "value: wrong type, expected a string",
            ),
            (
                "invalid type: floating point `3.14159`, expected a string",
                "wrong type, expected a string",
            ),
            (
                r#"format: unknown variant `secret\"x`, expected `dotenv` or `json`"#,
                "format: unknown variant `…`, expected `…` or `…`",
            ),
            (
                "unknown field `valeu`, expected one of `name`, `value`",
                "unknown field `valeu`",
            ),
            (
                "unknown field `ghp_not an ident`, expected `x`",
                "unknown field",
            ),
            (
                "missing field `name` at line 1 column 2",
                "missing field `name`",
            ),
            (r#"string "a\"leak" here"#, r#"string "…" here"#),
        ] {
            assert_eq!(safe(message), want, "{message}");
        }
    }
}
