//! The validation rules for secrets, as design.md states them, as pure functions.
//!
//! The server checks these on every change and the CLI checks them first, so both give the same
//! answer. Every rejection is a [`Violation`] naming the field and the rule it broke. Rules about
//! one value live in `check_*`; rules about a user's whole set of secrets (uniqueness, per-user
//! limits) live in [`check_set`], which sees the state *after* the change.

use std::fmt;

use serde::Serialize;

/// Longest secret name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// Longest env name, in characters.
pub const MAX_ENV_NAME_LEN: usize = 256;
/// Longest file path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest single value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Env names no secret may take, compared case-insensitively: the session's base environment and
/// variables that change how shells, linkers and tools behave.
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "PATH", "HOME", "SHELL", "USER", "LOGNAME", "PWD", "OLDPWD", "LANG", "TERM", "IFS", "CDPATH",
    "ENV", "BASH_ENV", "TMPDIR", "TMP", "TEMP", "HOSTNAME", "MAIL", "EDITOR", "VISUAL", "PAGER",
];

/// Env name prefixes no secret may take, compared case-insensitively. `KEYPORT_`, `SSH_` and
/// `GIT_` are keyport's own (`SSH_AUTH_SOCK`, `GIT_SSH_COMMAND`); the rest alter every process.
pub const RESERVED_ENV_PREFIXES: &[&str] =
    &["XDG_", "KEYPORT_", "SSH_", "GIT_", "LD_", "LC_", "DYLD_"];

/// One broken rule: which field, and what the rule is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Violation {
    /// The field, as named in the API and on the command line (`name`, `env`, `file`, …).
    pub field: std::borrow::Cow<'static, str>,
    /// The rule, in words a user can act on.
    pub detail: String,
}

impl Violation {
    pub(crate) fn new(field: &'static str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

/// Per-user limits; the defaults are design.md's and an operator can change them in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most secrets one user may have.
    pub max_secrets: usize,
    /// Most bytes of values one user may store, summed over all their secrets.
    pub max_total_value_bytes: usize,
    /// Most bytes injected as environment, summed as `NAME=VALUE` over enabled env secrets.
    pub max_env_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_secrets: 100,
            max_total_value_bytes: 1024 * 1024,
            max_env_bytes: 128 * 1024,
        }
    }
}

/// `name`: 1–64 characters `[A-Za-z0-9][A-Za-z0-9._-]*`.
pub fn check_name(name: &str) -> Result<(), Violation> {
    check_identifier("name", name)
}

/// User names follow the secret-name rule, and `me` is taken by the API's `users/me`.
pub fn check_user_name(name: &str) -> Result<(), Violation> {
    check_identifier("user", name)?;
    if name == "me" {
        return Err(Violation::new(
            "user",
            "'me' is reserved (it means \"yourself\" in the API)",
        ));
    }
    Ok(())
}

fn check_identifier(field: &'static str, name: &str) -> Result<(), Violation> {
    let rule =
        "1 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit";
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || name.len() > MAX_NAME_LEN {
        return Err(Violation::new(field, format!("must be {rule}")));
    }
    Ok(())
}

/// `env`: `[A-Za-z_][A-Za-z0-9_]*`, at most 256 characters, not a reserved name or prefix.
pub fn check_env_name(env: &str) -> Result<(), Violation> {
    let mut chars = env.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Violation::new(
            "env",
            "must match [A-Za-z_][A-Za-z0-9_]* (letters, digits and '_', not starting with a digit)",
        ));
    }
    if env.len() > MAX_ENV_NAME_LEN {
        return Err(Violation::new(
            "env",
            format!("must be at most {MAX_ENV_NAME_LEN} characters"),
        ));
    }
    let upper = env.to_ascii_uppercase();
    if RESERVED_ENV_NAMES.contains(&upper.as_str()) {
        return Err(Violation::new(
            "env",
            format!("{upper} is reserved for the session's own use"),
        ));
    }
    if let Some(prefix) = RESERVED_ENV_PREFIXES.iter().find(|p| upper.starts_with(*p)) {
        return Err(Violation::new(
            "env",
            format!("names starting with {prefix} are reserved"),
        ));
    }
    Ok(())
}

/// `file`: starts with `~/` or `/`, at most 4096 bytes, no NUL, no `.`, `..` or empty
/// components, and names a file rather than a directory.
pub fn check_file_path(path: &str) -> Result<(), Violation> {
    if path.len() > MAX_PATH_BYTES {
        return Err(Violation::new(
            "file",
            format!("must be at most {MAX_PATH_BYTES} bytes"),
        ));
    }
    if path.contains('\0') {
        return Err(Violation::new("file", "must not contain a NUL byte"));
    }
    let rest = if let Some(rest) = path.strip_prefix("~/") {
        rest
    } else if let Some(rest) = path.strip_prefix('/') {
        rest
    } else {
        return Err(Violation::new("file", "must start with ~/ or /"));
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err(Violation::new("file", "must name a file, not a directory"));
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Violation::new(
            "file",
            "must not contain '.', '..' or empty components",
        ));
    }
    Ok(())
}

/// Resolves `~/` against the OS user's home; absolute paths are returned as they are.
/// `path` must have passed [`check_file_path`].
pub fn resolve_file_path(path: &str, home: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("{}/{rest}", home.trim_end_matches('/')),
        None => path.to_string(),
    }
}

/// `value`: 1 to 64 KiB; no NUL when it goes into the environment (file values may be binary).
pub fn check_value(value: &[u8], env_target: bool) -> Result<(), Violation> {
    if value.is_empty() {
        return Err(Violation::new("value", "is required (1 to 65536 bytes)"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(Violation::new(
            "value",
            format!(
                "must be at most {MAX_VALUE_BYTES} bytes (64 KiB), got {}",
                value.len()
            ),
        ));
    }
    if env_target && value.contains(&0) {
        return Err(Violation::new(
            "value",
            "must not contain a NUL byte when injected as an env var (use a file target for binary values)",
        ));
    }
    Ok(())
}

/// `description`: at most 1024 bytes, no NUL or other control characters but tab.
pub fn check_description(description: &str) -> Result<(), Violation> {
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(Violation::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    if description.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Violation::new(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Every rule about one new secret on its own: name, description, env, file, value.
pub fn check_spec(spec: &super::SecretSpec) -> Vec<Violation> {
    let mut found = Vec::new();
    found.extend(check_name(&spec.name).err());
    found.extend(check_description(&spec.description).err());
    found.extend(spec.env.as_deref().and_then(|e| check_env_name(e).err()));
    found.extend(spec.file.as_deref().and_then(|f| check_file_path(f).err()));
    if spec.source.is_none() {
        found.extend(check_value(spec.value.expose(), spec.env.is_some()).err());
    } else if !spec.value.is_empty() {
        found.push(Violation::new(
            "source",
            "give a value or a source, not both",
        ));
    }
    found
}

/// Every rule about a patch on its own: at least one field, and each field it sets (the
/// merged result is checked by [`check_set`] and, for the value's NUL rule, by the caller).
pub fn check_patch(patch: &super::SecretPatch) -> Vec<Violation> {
    if patch.is_empty() {
        return vec![Violation::new(
            "body",
            "give at least one of value, source, description, env, file, enabled, kind, \
             rotate_after, mask, required",
        )];
    }
    let mut found = Vec::new();
    if patch.value.is_some() && patch.source.is_some() {
        found.push(Violation::new(
            "source",
            "give a value or a source, not both",
        ));
    }
    found.extend(
        patch
            .description
            .as_deref()
            .and_then(|d| check_description(d).err()),
    );
    found.extend(super::sets(&patch.env).and_then(|e| check_env_name(e).err()));
    found.extend(super::sets(&patch.file).and_then(|f| check_file_path(f).err()));
    found.extend(
        patch
            .value
            .as_ref()
            .and_then(|v| check_value(v.expose(), false).err()),
    );
    found
}

/// One secret as the set-level rules see it (its value only by length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretShape {
    /// Secret name.
    pub name: String,
    /// Env target, if any.
    pub env: Option<String>,
    /// File target as given (`~/…` or absolute), if any.
    pub file: Option<String>,
    /// File target with `~` resolved against the OS user's home.
    pub file_resolved: Option<String>,
    /// Whether it is injected.
    pub enabled: bool,
    /// Value length in bytes.
    pub value_len: usize,
}

impl SecretShape {
    fn env_bytes(&self) -> usize {
        match (&self.env, self.enabled) {
            (Some(env), true) => env.len() + 1 + self.value_len,
            _ => 0,
        }
    }
}

/// What the set-level check found: conflicts with another secret, or broken rules and limits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetProblems {
    /// Another secret already has this name, env name or file (HTTP 409).
    pub conflicts: Vec<Violation>,
    /// Rules and limits broken (HTTP 400).
    pub invalid: Vec<Violation>,
}

/// Checks `candidate` (a new or updated secret) against the user's `others` (every other
/// secret, not including the candidate's old version): enabled ⇒ target, uniqueness of name,
/// env (case-insensitive) and resolved file, files that would be each other's directory, and
/// the per-user limits on the state after the change.
pub fn check_set(candidate: &SecretShape, others: &[SecretShape], limits: &Limits) -> SetProblems {
    let mut found = SetProblems::default();
    if candidate.enabled && candidate.env.is_none() && candidate.file.is_none() {
        found.invalid.push(Violation::new(
            "enabled",
            "an enabled secret needs an env or file target (disable it, or give --env or --file)",
        ));
    }
    if others.iter().any(|o| o.name == candidate.name) {
        found.conflicts.push(Violation::new(
            "name",
            format!("a secret named {} already exists", candidate.name),
        ));
    }
    let same_env = |o: &&SecretShape| {
        let both = o.env.as_deref().zip(candidate.env.as_deref());
        both.is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    if let Some(o) = others.iter().find(same_env) {
        found.conflicts.push(Violation::new(
            "env",
            format!(
                "{} is already used by secret {} (env names are compared case-insensitively)",
                candidate.env.as_deref().unwrap_or_default(),
                o.name
            ),
        ));
    }
    if let Some(path) = &candidate.file_resolved {
        for o in others {
            let Some(other) = &o.file_resolved else {
                continue;
            };
            let detail = if other == path {
                format!("{path} is already the file of secret {}", o.name)
            } else if is_inside(other, path) {
                format!(
                    "{path} would have to be a directory for secret {}'s file {other}",
                    o.name
                )
            } else if is_inside(path, other) {
                format!("{path} is inside {other}, the file of secret {}", o.name)
            } else {
                continue;
            };
            found.conflicts.push(Violation::new("file", detail));
            break;
        }
    }
    if others.len() + 1 > limits.max_secrets {
        found.invalid.push(Violation::new(
            "name",
            format!(
                "limit reached: at most {} secrets per user",
                limits.max_secrets
            ),
        ));
    }
    let total: usize = others.iter().map(|o| o.value_len).sum::<usize>() + candidate.value_len;
    if total > limits.max_total_value_bytes {
        found.invalid.push(Violation::new(
            "value",
            format!(
                "limit reached: at most {} bytes of values per user (this change makes {total})",
                limits.max_total_value_bytes
            ),
        ));
    }
    let env_total: usize =
        others.iter().map(SecretShape::env_bytes).sum::<usize>() + candidate.env_bytes();
    if env_total > limits.max_env_bytes {
        found.invalid.push(Violation::new(
            "env",
            format!(
                "limit reached: at most {} bytes injected as env per user, counted as NAME=VALUE \
                 (this change makes {env_total})",
                limits.max_env_bytes
            ),
        ));
    }
    found
}

/// Whether `inner` lies below the directory `outer`.
fn is_inside(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
