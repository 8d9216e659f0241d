//! `[rotation]` and `[[required]]`: when each kind of secret is due for rotation, and the
//! secrets the operator requires users to have (warned about, or blocking sessions).

use serde::{Deserialize, Serialize};

use crate::secrets::lifecycle::{RotateAfter, SecretKind};

/// How long a value of each kind may stay unchanged before it is due for rotation
/// (`"90d"`, `"12h"`, `"never"`); a secret's own `rotate_after` overrides its kind's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationSettings {
    pub token: String,
    pub password: String,
    pub key: String,
    pub certificate: String,
    pub config: String,
    pub other: String,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            token: "90d".into(),
            password: "180d".into(),
            key: "365d".into(),
            certificate: "never".into(),
            config: "never".into(),
            other: "never".into(),
        }
    }
}

impl RotationSettings {
    /// `kind`'s rotation age (a setting that does not parse counts as never; [`check`]
    /// refuses those at load).
    ///
    /// [`check`]: RotationSettings::check
    pub fn for_kind(&self, kind: SecretKind) -> RotateAfter {
        let text = match kind {
            SecretKind::Token => &self.token,
            SecretKind::Password => &self.password,
            SecretKind::Key => &self.key,
            SecretKind::Certificate => &self.certificate,
            SecretKind::Config => &self.config,
            SecretKind::Other => &self.other,
        };
        RotateAfter::parse(text).unwrap_or(RotateAfter::Never)
    }

    /// The setting that does not parse, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, text) in [
            ("rotation.token", &self.token),
            ("rotation.password", &self.password),
            ("rotation.key", &self.key),
            ("rotation.certificate", &self.certificate),
            ("rotation.config", &self.config),
            ("rotation.other", &self.other),
        ] {
            RotateAfter::parse(text).map_err(|rule| (field, rule))?;
        }
        Ok(())
    }
}

/// What a requirement does when a user lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequiredMode {
    /// A notice before interactive sessions, `secret check` fails.
    #[default]
    Warn,
    /// Sessions are refused (exit 1 with the reason), and audited.
    Block,
}

/// One `[[required]]` entry: a secret every user in scope must have, as an env var and/or
/// a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The env var an enabled secret must set.
    #[serde(default)]
    pub env: Option<String>,
    /// The file an enabled secret must write (`~/…` or absolute, as the secret gives it).
    #[serde(default)]
    pub file: Option<String>,
    /// What it is for, shown with the notice.
    #[serde(default)]
    pub description: String,
    /// keyport users it applies to (empty: everyone in `groups`, or everyone).
    #[serde(default)]
    pub users: Vec<String>,
    /// OS groups (of the user's OS account) it applies to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Workspaces whose relayed sessions need it (empty: every session, local or relayed).
    #[serde(default)]
    pub workspaces: Vec<String>,
    /// `warn` (default) or `block`.
    #[serde(default)]
    pub mode: RequiredMode,
}

impl Requirement {
    /// The rule this entry breaks, if any.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.env.is_none() && self.file.is_none() {
            return Err((
                "required",
                "each [[required]] needs env, file or both".into(),
            ));
        }
        if let Some(env) = &self.env {
            crate::secrets::validate::check_env_name(env)
                .map_err(|v| ("required.env", format!("{env:?}: {}", v.detail)))?;
        }
        if let Some(file) = &self.file
            && !(file.starts_with("~/") || file.starts_with('/'))
        {
            return Err((
                "required.file",
                format!("{file:?}: must start with ~/ or /"),
            ));
        }
        if self.description.len() > 1024 {
            return Err(("required.description", "at most 1024 bytes".into()));
        }
        Ok(())
    }
}
