//! The lifecycle rules applied to one user: which of their secrets are due for rotation and
//! which required secrets they lack, for `secret check`, the API and the notices (or refusal)
//! before a session.

use serde::{Deserialize, Serialize};

use super::{Vault, VaultError};
use crate::config::{RequiredMode, Requirement};
use crate::secrets::lifecycle::{self, Missing, SecretKind, Subject};
use crate::store::{SecretRecord, UserRecord, now_ms};

/// A requirement as it stands for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequiredStatus {
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
    /// Whether an enabled secret of theirs meets it.
    pub satisfied: bool,
    /// The command that creates it.
    pub fix: String,
}

/// What a session's user is told before it starts, or why it is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChecks {
    /// Enabled secrets due for rotation: (name, age in days).
    pub stale: Vec<(String, i64)>,
    /// Required secrets they lack.
    pub missing: Vec<Missing>,
}

impl SessionChecks {
    /// The lines for an interactive session's stderr (without `keyport: `).
    pub fn notices(&self) -> Vec<String> {
        let mut out: Vec<String> = self.missing.iter().map(Missing::notice).collect();
        out.extend(lifecycle::stale_notice(&self.stale));
        out
    }

    /// The reason to refuse the session, if a blocking requirement is missing.
    pub fn blocked(&self) -> Option<String> {
        let blocking: Vec<&Missing> = self
            .missing
            .iter()
            .filter(|m| m.mode == RequiredMode::Block)
            .collect();
        if blocking.is_empty() {
            return None;
        }
        let lines: Vec<String> = blocking.iter().map(|m| m.notice()).collect();
        Some(format!("{}; nothing was run", lines.join("; ")))
    }
}

/// Enabled secrets' env names and file paths, as requirements compare them.
fn targets(secrets: &[SecretRecord]) -> (Vec<&str>, Vec<&str>) {
    let enabled = || secrets.iter().filter(|s| s.enabled);
    (
        enabled().filter_map(|s| s.env_name.as_deref()).collect(),
        enabled().filter_map(|s| s.file_path.as_deref()).collect(),
    )
}

impl Vault {
    /// Every requirement that applies to `user` (whatever the workspace), and whether they
    /// meet it.
    pub fn required_for(&self, user: &str) -> Result<Vec<RequiredStatus>, VaultError> {
        let owner = self.store.user(user)?;
        let secrets = self.store.secrets(owner.id)?;
        let (envs, files) = targets(&secrets);
        let groups = self.groups_for(&owner);
        let subject = Subject {
            user,
            groups: &groups,
            workspace: None,
        };
        Ok(self
            .policy
            .required
            .iter()
            .filter(|r| {
                // Workspace-scoped ones count wherever they apply: listed with their places.
                let anywhere = Requirement {
                    workspaces: Vec::new(),
                    ..(*r).clone()
                };
                lifecycle::applies(&anywhere, &subject)
            })
            .map(|r| {
                let missing = Missing::of(r);
                RequiredStatus {
                    satisfied: lifecycle::satisfied(r, &envs, &files),
                    fix: missing.fix(),
                    env: missing.env,
                    file: missing.file,
                    description: missing.description,
                    mode: missing.mode,
                    workspaces: missing.workspaces,
                }
            })
            .collect())
    }

    /// What a session of `user` (relayed to `workspace`, if any) is told or refused for.
    pub fn session_checks(
        &self,
        user: &str,
        workspace: Option<&str>,
    ) -> Result<SessionChecks, VaultError> {
        let owner = self.store.user(user)?;
        let secrets = self.store.secrets(owner.id)?;
        let now = now_ms();
        let stale = secrets
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| {
                let kind = SecretKind::stored(&s.kind);
                let r = lifecycle::rotation(
                    &self.policy.rotation,
                    kind,
                    s.rotate_after_secs,
                    s.value_updated_at,
                    now,
                );
                r.stale.then(|| (s.name.clone(), r.age_days))
            })
            .collect();
        let mut missing = Vec::new();
        if !self.policy.required.is_empty() {
            let (envs, files) = targets(&secrets);
            let groups = self.groups_for(&owner);
            let subject = Subject {
                user,
                groups: &groups,
                workspace,
            };
            missing = self
                .policy
                .required
                .iter()
                .filter(|r| lifecycle::applies(r, &subject))
                .filter(|r| !lifecycle::satisfied(r, &envs, &files))
                .map(Missing::of)
                .collect();
        }
        Ok(SessionChecks { stale, missing })
    }

    /// The OS groups of the user's OS account, only when some requirement names groups.
    fn groups_for(&self, owner: &UserRecord) -> Vec<String> {
        if self.policy.required.iter().all(|r| r.groups.is_empty()) {
            return Vec::new();
        }
        crate::osuser::lookup(&owner.os_user)
            .map(|os| crate::osuser::group_names(&os))
            .unwrap_or_default()
    }
}
