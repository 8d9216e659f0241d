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
    /// Secrets whose source gave no fresh value.
    pub sources: Vec<SourceNote>,
}

/// A secret whose source gave no fresh value at a session start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceNote {
    /// The secret.
    pub name: String,
    /// Its reference.
    pub reference: String,
    /// Whether the session is refused without it.
    pub required: bool,
    /// Why the source gave nothing.
    pub reason: String,
    /// How old the last good value standing in is; `None`: nothing stood in.
    pub stale_secs: Option<u64>,
}

impl SourceNote {
    /// The line for the user (without `keyport: `).
    pub fn notice(&self) -> String {
        let (name, reference, reason) = (&self.name, &self.reference, &self.reason);
        match self.stale_secs {
            Some(secs) => format!(
                "secret {name}: {reference} could not be resolved ({reason}); using the value \
                 from {} ago",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            ),
            None if self.required => {
                format!("secret {name} is required but {reference} could not be resolved: {reason}")
            }
            None => format!("secret {name} skipped: {reference} could not be resolved ({reason})"),
        }
    }

    fn blocks(&self) -> bool {
        self.required && self.stale_secs.is_none()
    }
}

impl SessionChecks {
    /// The lines for an interactive session's stderr (without `keyport: `).
    pub fn notices(&self) -> Vec<String> {
        let mut out: Vec<String> = self.missing.iter().map(Missing::notice).collect();
        out.extend(lifecycle::stale_notice(&self.stale));
        out.extend(self.sources.iter().map(SourceNote::notice));
        out
    }

    /// What the blocking requirements it lacks ask for (`GITHUB_TOKEN`, `~/.npmrc`), for the
    /// audit log.
    pub fn blocking(&self) -> Vec<String> {
        self.missing
            .iter()
            .filter(|m| m.mode == RequiredMode::Block)
            .map(Missing::label)
            .chain(
                self.sources
                    .iter()
                    .filter(|n| n.blocks())
                    .map(|n| n.name.clone()),
            )
            .collect()
    }

    /// The reason to refuse the session, if a blocking requirement is missing.
    pub fn blocked(&self) -> Option<String> {
        let blocking: Vec<&Missing> = self
            .missing
            .iter()
            .filter(|m| m.mode == RequiredMode::Block)
            .collect();
        let unresolved = self.sources.iter().filter(|n| n.blocks());
        let lines: Vec<String> = blocking
            .iter()
            .map(|m| m.notice())
            .chain(unresolved.map(SourceNote::notice))
            .collect();
        if lines.is_empty() {
            return None;
        }
        Some(format!("{}; nothing was run", lines.join("; ")))
    }
}

/// Enabled secrets' env names, and their file paths in every form a requirement may name them:
/// as given, resolved, and under `~/` when they are in the home (`home`: the OS account's).
fn targets<'a>(secrets: &'a [SecretRecord], home: Option<&str>) -> (Vec<&'a str>, Vec<String>) {
    let enabled = || secrets.iter().filter(|s| s.enabled);
    let mut files = Vec::new();
    for s in enabled() {
        files.extend(s.file_path.clone());
        files.extend(s.file_resolved.clone());
        let in_home = home.and_then(|h| {
            let resolved = s.file_resolved.as_deref()?;
            resolved.strip_prefix(&format!("{}/", h.trim_end_matches('/')))
        });
        files.extend(in_home.map(|rest| format!("~/{rest}")));
    }
    (
        enabled().filter_map(|s| s.env_name.as_deref()).collect(),
        files,
    )
}

/// The home `~/` paths of `secrets` resolve against: seen in one that uses `~/`, else looked
/// up (only when a requirement names a file).
fn home_of(
    owner: &UserRecord,
    secrets: &[SecretRecord],
    required: &[Requirement],
) -> Option<String> {
    if required.iter().all(|r| r.file.is_none()) {
        return None;
    }
    let seen = secrets.iter().find_map(|s| {
        let rest = s.file_path.as_deref()?.strip_prefix("~/")?;
        let resolved = s.file_resolved.as_deref()?;
        Some(
            resolved
                .strip_suffix(rest)?
                .trim_end_matches('/')
                .to_string(),
        )
    });
    seen.or_else(|| crate::osuser::lookup(&owner.os_user).ok().map(|os| os.home))
}

impl Vault {
    /// Every requirement that applies to `user` (whatever the workspace), and whether they
    /// meet it.
    pub fn required_for(&self, user: &str) -> Result<Vec<RequiredStatus>, VaultError> {
        let owner = self.store.user(user)?;
        let secrets = self.store.secrets(owner.id)?;
        let home = home_of(&owner, &secrets, &self.policy.required);
        let (envs, files) = targets(&secrets, home.as_deref());
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let groups = self.groups_for(&owner);
        let granted: Vec<String> = self
            .store
            .granted_workspaces(owner.id)?
            .into_iter()
            .map(|(w, _)| w.name)
            .collect();
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
                // Workspace-scoped ones count where the user may go: listed with their places.
                let anywhere = Requirement {
                    workspaces: Vec::new(),
                    ..(*r).clone()
                };
                let reachable =
                    r.workspaces.is_empty() || r.workspaces.iter().any(|w| granted.contains(w));
                reachable && lifecycle::applies(&anywhere, &subject)
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

    /// What a session of `user` (relayed to `workspace`, if any) is told or refused for;
    /// `groups` are the OS groups of their account, looked up by the caller outside the vault
    /// (see [`super::Policy::needs_groups`]: a directory service may be slow).
    pub fn session_checks(
        &self,
        user: &str,
        workspace: Option<&str>,
        groups: &[String],
    ) -> Result<SessionChecks, VaultError> {
        let owner = self.store.user(user)?;
        let secrets = self.store.secrets(owner.id)?;
        Ok(self.checks(&owner, &secrets, workspace, groups))
    }

    /// [`Vault::session_checks`] on `owner`'s secrets as read (only the enabled ones count).
    pub(super) fn checks(
        &self,
        owner: &UserRecord,
        secrets: &[SecretRecord],
        workspace: Option<&str>,
        groups: &[String],
    ) -> SessionChecks {
        let user = owner.name.as_str();
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
            let home = home_of(owner, secrets, &self.policy.required);
            let (envs, files) = targets(secrets, home.as_deref());
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            let subject = Subject {
                user,
                groups,
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
        SessionChecks {
            stale,
            missing,
            sources: Vec::new(),
        }
    }

    /// The OS groups of the user's OS account, only when some requirement names groups.
    fn groups_for(&self, owner: &UserRecord) -> Vec<String> {
        if !self.policy.needs_groups() {
            return Vec::new();
        }
        crate::osuser::lookup(&owner.os_user)
            .map(|os| crate::osuser::group_names(&os))
            .unwrap_or_default()
    }
}
