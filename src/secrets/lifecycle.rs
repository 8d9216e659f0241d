//! A secret's lifecycle: its kind, when its value is due for rotation, whether pty output
//! masks it, and the requirements an operator declares — the rules and the notices, shared by
//! the vault, the API, the CLI and both kinds of session.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{RequiredMode, Requirement, RotationSettings};

/// What a secret is. It decides the default rotation age and masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    /// An API token (`ghp_…`, `npm_…`).
    Token,
    /// A password.
    Password,
    /// A private key.
    Key,
    /// A certificate.
    Certificate,
    /// A configuration file.
    Config,
    /// Anything else (the default).
    #[default]
    Other,
}

/// Every kind, in the order the CLI lists them.
pub const KINDS: [SecretKind; 6] = [
    SecretKind::Token,
    SecretKind::Password,
    SecretKind::Key,
    SecretKind::Certificate,
    SecretKind::Config,
    SecretKind::Other,
];

impl SecretKind {
    /// The stored and typed word.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Token => "token",
            SecretKind::Password => "password",
            SecretKind::Key => "key",
            SecretKind::Certificate => "certificate",
            SecretKind::Config => "config",
            SecretKind::Other => "other",
        }
    }

    /// From the stored word (the schema allows only the six).
    pub fn stored(word: &str) -> Self {
        word.parse().unwrap_or_default()
    }

    /// Whether pty output masks a value of this kind, `len` bytes long, with the secret's own
    /// choice `own`: its choice, else the kind's; never under [`super::MASK_MIN_LEN`].
    pub fn masks(self, own: Option<bool>, len: usize) -> bool {
        own.unwrap_or(self.masked_by_default()) && len >= super::MASK_MIN_LEN
    }

    /// Whether pty output masks values of this kind unless the secret says otherwise.
    pub fn masked_by_default(self) -> bool {
        matches!(
            self,
            SecretKind::Token | SecretKind::Password | SecretKind::Key
        )
    }
}

impl FromStr for SecretKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KINDS.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = KINDS.iter().map(|k| k.as_str()).collect();
            format!("must be one of {}", all.join(", "))
        })
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a value may stay unchanged before it is due for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateAfter {
    /// Never due.
    Never,
    /// Due this many seconds after the value last changed.
    Secs(i64),
}

/// Shortest rotation age (an hour) and longest (ten years).
const MIN_SECS: i64 = 3600;
const MAX_SECS: i64 = 10 * 366 * 86_400;

impl RotateAfter {
    /// `"never"`, or a duration such as `"90d"`, `"12h"`, `"2w"` (an hour to ten years).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "never" {
            return Ok(RotateAfter::Never);
        }
        let rule = || format!("{text:?} must be never or a duration like 90d or 12h (1h to 10y)");
        let secs = humantime::parse_duration(text)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .ok_or_else(rule)?;
        if !(MIN_SECS..=MAX_SECS).contains(&secs) {
            return Err(rule());
        }
        Ok(RotateAfter::Secs(secs))
    }

    /// As stored: 0 is never.
    pub fn from_stored(secs: i64) -> Self {
        if secs <= 0 {
            RotateAfter::Never
        } else {
            RotateAfter::Secs(secs)
        }
    }

    /// As stored: 0 is never.
    pub fn stored(self) -> i64 {
        match self {
            RotateAfter::Never => 0,
            RotateAfter::Secs(s) => s,
        }
    }
}

impl fmt::Display for RotateAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RotateAfter::Never => f.write_str("never"),
            RotateAfter::Secs(s) if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            RotateAfter::Secs(s) if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            RotateAfter::Secs(s) => write!(f, "{s}s"),
        }
    }
}

/// A secret's rotation: the age in force and whether it is overdue at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The secret's own setting, else its kind's.
    pub after: RotateAfter,
    /// Whether the value is older than that.
    pub stale: bool,
    /// The value's age in whole days.
    pub age_days: i64,
}

/// The rotation of a value last changed at `value_updated_at` (ms), of `kind`, with the
/// secret's own setting `own` (stored seconds, 0 = never), under `policy`.
pub fn rotation(
    policy: &RotationSettings,
    kind: SecretKind,
    own: Option<i64>,
    value_updated_at: i64,
    now_ms: i64,
) -> Rotation {
    let after = own.map_or_else(|| policy.for_kind(kind), RotateAfter::from_stored);
    let age_ms = now_ms.saturating_sub(value_updated_at).max(0);
    let stale = match after {
        RotateAfter::Never => false,
        RotateAfter::Secs(s) => age_ms > s.saturating_mul(1000),
    };
    Rotation {
        after,
        stale,
        age_days: age_ms / 86_400_000,
    }
}

/// The one-line notice before an interactive shell: `keyport: 2 secrets are due for rotation:
/// gh (97 d), npm (120 d) — keyport secret list --stale`.
pub fn stale_notice(stale: &[(String, i64)]) -> Option<String> {
    if stale.is_empty() {
        return None;
    }
    let list: Vec<String> = stale
        .iter()
        .map(|(name, days)| format!("{name} ({days} d)"))
        .collect();
    let (count, verb) = if stale.len() == 1 {
        ("1 secret".to_string(), "is")
    } else {
        (format!("{} secrets", stale.len()), "are")
    };
    Some(format!(
        "{count} {verb} due for rotation: {} — keyport secret list --stale",
        list.join(", ")
    ))
}

/// Who a requirement is checked for.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    /// The keyport user.
    pub user: &'a str,
    /// The OS groups of their OS account (only looked up when a requirement names groups).
    pub groups: &'a [String],
    /// The workspace of a relayed session; `None` for a local session.
    pub workspace: Option<&'a str>,
}

/// Whether `req` applies to `subject`. With `workspace: None` (a local session, or
/// `secret check`) a workspace-scoped requirement does not apply.
pub fn applies(req: &Requirement, subject: &Subject<'_>) -> bool {
    let people = req.users.is_empty() && req.groups.is_empty()
        || req.users.iter().any(|u| u == subject.user)
        || req.groups.iter().any(|g| subject.groups.contains(g));
    let place = req.workspaces.is_empty()
        || subject
            .workspace
            .is_some_and(|w| req.workspaces.iter().any(|r| r == w));
    people && place
}

/// Whether the user's enabled secrets (their env names and file paths as given) meet `req`.
pub fn satisfied(req: &Requirement, envs: &[&str], files: &[&str]) -> bool {
    let env_ok = req
        .env
        .as_deref()
        .is_none_or(|e| envs.iter().any(|have| have.eq_ignore_ascii_case(e)));
    let file_ok = req.file.as_deref().is_none_or(|f| files.contains(&f));
    env_ok && file_ok
}

/// A requirement the user does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Missing {
    /// The env var required, if any.
    pub env: Option<String>,
    /// The file required, if any.
    pub file: Option<String>,
    /// What it is for.
    pub description: String,
    /// `warn` or `block`.
    pub mode: RequiredMode,
    /// The workspaces whose sessions need it (empty: every session).
    pub workspaces: Vec<String>,
}

impl Missing {
    /// From the requirement it fails.
    pub fn of(req: &Requirement) -> Self {
        Self {
            env: req.env.clone(),
            file: req.file.clone(),
            description: req.description.clone(),
            mode: req.mode,
            workspaces: req.workspaces.clone(),
        }
    }

    /// The command that creates it.
    pub fn fix(&self) -> String {
        let name = self
            .env
            .as_deref()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| "NAME".into());
        let mut cmd = format!("printf %s VALUE | keyport secret create {name}");
        if let Some(env) = &self.env {
            cmd.push_str(&format!(" --env {env}"));
        }
        if let Some(file) = &self.file {
            cmd.push_str(&format!(" --file {file}"));
        }
        cmd
    }

    /// What it asks for: `GITHUB_TOKEN`, `~/.npmrc`, or `NPM_TOKEN ~/.npmrc`.
    pub fn label(&self) -> String {
        [self.env.as_deref(), self.file.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One line for a session's stderr.
    pub fn notice(&self) -> String {
        let what = self.label();
        let about = if self.description.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.description)
        };
        let verb = match self.mode {
            RequiredMode::Warn => "required secret missing",
            RequiredMode::Block => "sessions here need a secret you have not set",
        };
        format!("{verb}: {what}{about} — {}", self.fix())
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
