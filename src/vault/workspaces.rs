//! Relay-mode workspaces: the rules for their names, addresses, logins and host keys, the
//! admin operations on them (each audited, names and fingerprints only; re-pinning replaces the
//! host keys of a workspace whose sshd was rebuilt), what a user may see of them, and the
//! [`Route`] the relay follows for `ssh alice:dev1@gateway`.
//!
//! A workspace the user has no grant for is reported exactly like one that does not exist, so
//! neither the relay nor the API lets a user learn which workspaces exist.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::instrument;

use super::{Actor, Vault, VaultError, WorkspaceAuth};
use crate::secrets::Violation;
use crate::store::{
    NewWorkspace, NewWorkspaceHostKey, UserRecord, WorkspaceGrantRecord, WorkspaceHostKeyRecord,
    WorkspaceRecord,
};

/// Where a relayed login goes: a workspace the user may use, with the login in effect for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The workspace's row id.
    pub workspace_id: i64,
    /// The workspace's name.
    pub workspace: String,
    /// HOST:PORT of its sshd.
    pub address: String,
    /// The login on the workspace in effect for this user (their grant's os_user, else the
    /// workspace's).
    pub os_user: String,
    /// Pinned host keys, canonical openssh lines ("ssh-ed25519 AAAA…").
    pub host_keys: Vec<String>,
    /// How keyport logs in there.
    pub auth: WorkspaceAuth,
}

/// How a host key came to be pinned, as stored in `workspace_host_keys.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeySource {
    /// Given by an admin (`--host-key`, the API's `host_keys`).
    Pinned,
    /// Read from the sshd by `--scan` and confirmed by the admin.
    Scan,
    /// Announced by the upstream (`hostkeys-00@openssh.com`) and proved (`hostkeys-prove`).
    Announced,
}

impl HostKeySource {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKeySource::Pinned => "pinned",
            HostKeySource::Scan => "scan",
            HostKeySource::Announced => "announced",
        }
    }
}

/// A workspace to create.
#[derive(Debug, Clone)]
pub struct WorkspaceSpec {
    /// Name, unique.
    pub name: String,
    /// `HOST:PORT` of its sshd.
    pub address: String,
    /// The login on the workspace.
    pub os_user: String,
    /// Names of the users who own it (and so may use it); at least one.
    pub owners: Vec<String>,
    /// Host key lines to pin; at least one.
    pub host_keys: Vec<String>,
    /// Where the host keys came from.
    pub host_key_source: HostKeySource,
    /// How keyport logs in there.
    pub auth: WorkspaceAuth,
}

/// One user's grant, as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceGrant {
    /// keyport user name.
    pub user: String,
    /// Whether they own the workspace.
    pub owner: bool,
    /// Their own login on the workspace, when the grant sets one (else `null`).
    pub os_user: Option<String>,
    /// The login in effect for them: `os_user` when set, else the workspace's.
    pub login: String,
    /// When it was granted, ms since the epoch.
    pub created_at: i64,
}

/// A workspace as the API and `workspace show` present it. Admins see everything; a user sees a
/// workspace granted to them without its address and with only their own grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkspaceInfo {
    /// Workspace name.
    pub name: String,
    /// `HOST:PORT` of its sshd (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The workspace's login (a grant may override it; see `grants[].login`).
    pub os_user: String,
    /// Pinned host keys.
    pub host_keys: Vec<WorkspaceHostKeyRecord>,
    /// How keyport logs in there: `key` (the user's keyport key in its authorized_keys) or
    /// `ca` (a certificate from keyport's user CA).
    pub auth: WorkspaceAuth,
    /// Who may use it (for a user: only their own grant).
    pub grants: Vec<WorkspaceGrant>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Last change, ms since the epoch.
    pub updated_at: i64,
}

/// What re-pinning a workspace's host keys changed.
#[derive(Debug, Clone)]
pub struct HostKeyChange {
    /// The workspace as it is now, with only the new keys pinned.
    pub workspace: WorkspaceInfo,
    /// The keys pinned before, which it no longer trusts.
    pub replaced: Vec<WorkspaceHostKeyRecord>,
}

/// A change to one user's grant.
#[derive(Debug, Clone, Default)]
pub struct GrantSpec {
    /// Their own login on the workspace; `None` = the workspace's.
    pub os_user: Option<String>,
    /// Make them an owner (an owner stays one until revoked).
    pub owner: bool,
}

impl Vault {
    /// Registers a workspace with its pinned host keys and its owners. Every broken rule is
    /// reported at once; nothing is stored unless all hold.
    #[instrument(skip_all, fields(workspace = %spec.name))]
    pub fn add_workspace(
        &mut self,
        actor: &Actor,
        spec: &WorkspaceSpec,
    ) -> Result<WorkspaceInfo, VaultError> {
        let (keys, owners) = self.check_spec(spec, true)?;
        if spec.auth == WorkspaceAuth::Ca {
            self.ensure_user_ca(actor)?;
        }
        let mut owner_names: Vec<&str> = owners.iter().map(|u| u.name.as_str()).collect();
        owner_names.sort_unstable();
        owner_names.dedup();
        let fingerprints: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
        let audit = Self::audit(
            actor,
            "",
            "workspace.add",
            None,
            json!({ "workspace": spec.name, "address": spec.address, "os_user": spec.os_user,
                    "owners": owner_names, "host_keys": fingerprints,
                    "source": spec.host_key_source.as_str(), "auth": spec.auth.as_str() }),
        );
        let workspace = NewWorkspace {
            name: spec.name.clone(),
            address: spec.address.clone(),
            os_user: spec.os_user.clone(),
            auth: spec.auth.as_str().into(),
        };
        let owner_ids: Vec<i64> = owners.iter().map(|u| u.id).collect();
        let record = self
            .store
            .create_workspace(&workspace, &keys, &owner_ids, &audit)?;
        self.workspace_info(record)
    }

    /// Checks everything about a workspace to add except its host keys — the name is free, the
    /// owners exist — so `--scan` asks its question only about a workspace that can be added.
    pub fn check_new_workspace(&self, spec: &WorkspaceSpec) -> Result<(), VaultError> {
        self.check_spec(spec, false)?;
        match self.store.workspace(&spec.name) {
            Ok(_) => Err(VaultError::Conflict(vec![Violation::new(
                "name",
                format!("a workspace named {} already exists", spec.name),
            )])),
            Err(crate::store::StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every rule of a new workspace at once: its host keys (canonical, deduplicated) and its
    /// owners' records when all hold. Without `keys_required`, no host key is no violation.
    fn check_spec(
        &self,
        spec: &WorkspaceSpec,
        keys_required: bool,
    ) -> Result<(Vec<NewWorkspaceHostKey>, Vec<UserRecord>), VaultError> {
        let mut invalid = Vec::new();
        invalid.extend(check_workspace_name(&spec.name).err());
        invalid.extend(check_address(&spec.address).err());
        invalid.extend(check_login(&spec.os_user).err());
        if keys_required && spec.host_keys.is_empty() {
            invalid.push(no_host_key());
        }
        let keys = new_host_keys(&spec.host_keys, spec.host_key_source, &mut invalid);
        if spec.owners.is_empty() {
            invalid.push(Violation::new(
                "owner",
                "at least one owner is required (a keyport user)",
            ));
        }
        let mut owners: Vec<UserRecord> = Vec::new();
        for name in &spec.owners {
            match self.store.user(name) {
                Ok(user) => owners.push(user),
                Err(crate::store::StoreError::NotFound { .. }) => invalid.push(Violation::new(
                    "owner",
                    format!("there is no keyport user named {name}"),
                )),
                Err(e) => return Err(e.into()),
            }
        }
        if invalid.is_empty() {
            Ok((keys, owners))
        } else {
            Err(VaultError::Invalid(invalid))
        }
    }

    /// Replaces a workspace's pinned host keys with `host_keys` — its sshd was rebuilt and
    /// presents new ones — audited as `workspace.pinned` with the old and the new fingerprints.
    /// `source` says how the admin got them (`Pinned` or `Scan`). The keys are checked first:
    /// nothing changes unless every line is a public key.
    #[instrument(skip_all, fields(workspace = %name))]
    pub fn pin_workspace_host_keys(
        &mut self,
        actor: &Actor,
        name: &str,
        host_keys: &[String],
        source: HostKeySource,
    ) -> Result<HostKeyChange, VaultError> {
        let mut invalid = Vec::new();
        if host_keys.is_empty() {
            invalid.push(no_host_key());
        }
        let keys = new_host_keys(host_keys, source, &mut invalid);
        if !invalid.is_empty() {
            return Err(VaultError::Invalid(invalid));
        }
        let new: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
        let (record, replaced) = self.store.replace_workspace_host_keys(name, &keys, |old| {
            let old: Vec<&str> = old.iter().map(|k| k.fingerprint.as_str()).collect();
            Self::audit(
                actor,
                "",
                "workspace.pinned",
                None,
                json!({ "workspace": name, "old_host_keys": old, "new_host_keys": new,
                        "source": source.as_str() }),
            )
        })?;
        Ok(HostKeyChange {
            workspace: self.workspace_info(record)?,
            replaced,
        })
    }

    /// Every workspace with its host keys and grants, sorted by name (admins).
    pub fn workspaces(&self) -> Result<Vec<WorkspaceInfo>, VaultError> {
        self.store
            .workspaces()?
            .into_iter()
            .map(|w| self.workspace_info(w))
            .collect()
    }

    /// One workspace with its host keys and grants (admins).
    pub fn workspace(&self, name: &str) -> Result<WorkspaceInfo, VaultError> {
        let record = self.store.workspace(name)?;
        self.workspace_info(record)
    }

    /// The workspaces granted to `user`, as that user may see them.
    pub fn user_workspaces(&self, user: &str) -> Result<Vec<WorkspaceInfo>, VaultError> {
        let owner = self.store.user(user)?;
        let mut out = Vec::new();
        for (workspace, grant) in self.store.granted_workspaces(owner.id)? {
            let keys = self.store.workspace_host_keys(workspace.id)?;
            out.push(user_view(workspace, &grant, keys));
        }
        Ok(out)
    }

    /// One workspace as `user` may see it: not found — exactly as for a name that does not
    /// exist — unless it is granted to them.
    pub fn user_workspace(&self, user: &str, name: &str) -> Result<WorkspaceInfo, VaultError> {
        let owner = self.store.user(user)?;
        match self.store.workspace_for_user(owner.id, name)? {
            Some((workspace, grant, keys)) => Ok(user_view(workspace, &grant, keys)),
            None => Err(VaultError::not_found("workspace", name)),
        }
    }

    /// Removes a workspace with its host keys and grants.
    #[instrument(skip_all, fields(workspace = %name))]
    pub fn remove_workspace(&mut self, actor: &Actor, name: &str) -> Result<(), VaultError> {
        let audit = Self::audit(
            actor,
            "",
            "workspace.remove",
            None,
            json!({ "workspace": name }),
        );
        Ok(self.store.remove_workspace(name, &audit)?)
    }

    /// Lets `user` use the workspace, or changes their grant (their own login, ownership).
    /// Granting again without a login clears a login set before.
    #[instrument(skip_all, fields(workspace = %name, user = %user))]
    pub fn grant_workspace(
        &mut self,
        actor: &Actor,
        name: &str,
        user: &str,
        grant: &GrantSpec,
    ) -> Result<WorkspaceInfo, VaultError> {
        if let Some(login) = &grant.os_user {
            check_login(login).map_err(|v| VaultError::Invalid(vec![v]))?;
        }
        let workspace = self.store.workspace(name)?;
        let grantee = self.store.user(user)?;
        let audit = Self::audit(
            actor,
            user,
            "workspace.grant",
            None,
            json!({ "workspace": name, "os_user": grant.os_user, "owner": grant.owner }),
        );
        self.store.grant_workspace(
            workspace.id,
            grantee.id,
            grant.owner,
            grant.os_user.as_deref(),
            &audit,
        )?;
        self.workspace(name)
    }

    /// Ends `user`'s grant. The last owner's grant stays (remove the workspace instead).
    #[instrument(skip_all, fields(workspace = %name, user = %user))]
    pub fn revoke_workspace(
        &mut self,
        actor: &Actor,
        name: &str,
        user: &str,
    ) -> Result<(), VaultError> {
        let workspace = self.store.workspace(name)?;
        let grantee = self.store.user(user)?;
        let granted = self
            .store
            .workspace_grants(workspace.id)?
            .iter()
            .any(|g| g.user_id == grantee.id);
        if !granted {
            return Err(VaultError::not_found(
                "grant",
                format!("of workspace {name} to {user}"),
            ));
        }
        let audit = Self::audit(
            actor,
            user,
            "workspace.revoke",
            None,
            json!({ "workspace": name }),
        );
        Ok(self
            .store
            .revoke_workspace(workspace.id, grantee.id, &audit)?)
    }

    /// The workspace `workspace` as user `user_id` may use it; Ok(None) when it does not exist
    /// OR the user has no grant (the two must be indistinguishable to callers).
    pub fn workspace_route(
        &self,
        user_id: i64,
        workspace: &str,
    ) -> Result<Option<Route>, VaultError> {
        let Some((record, grant, keys)) = self.store.workspace_for_user(user_id, workspace)? else {
            return Ok(None);
        };
        Ok(Some(Route {
            workspace_id: record.id,
            os_user: grant.os_user.unwrap_or(record.os_user),
            workspace: record.name,
            address: record.address,
            host_keys: keys.into_iter().map(|k| k.public_key).collect(),
            auth: WorkspaceAuth::stored(&record.auth),
        }))
    }

    /// Adds a host key the upstream proved it holds (hostkeys-prove); audited as
    /// `workspace.host-key-added` (actor System, detail {workspace, fingerprint,
    /// source:"announced"}); Ok(false) when it was already pinned. Nothing else changes.
    ///
    /// `vouched_by` is the fingerprint of the pinned key the announcing connection verified
    /// the sshd with: if an admin re-pinned since (say, that key was compromised), nothing is
    /// added.
    pub fn add_workspace_host_key(
        &mut self,
        workspace_id: i64,
        public_key_line: &str,
        vouched_by: &str,
    ) -> Result<bool, VaultError> {
        let (public_key, fingerprint) =
            parse_host_key(public_key_line).map_err(|v| VaultError::Invalid(vec![v]))?;
        let workspace = self.store.workspace_by_id(workspace_id)?;
        let pinned = self.store.workspace_host_keys(workspace_id)?;
        if !pinned.iter().any(|k| k.fingerprint == vouched_by) {
            return Ok(false);
        }
        let source = HostKeySource::Announced.as_str();
        let audit = Self::audit(
            &Actor::System,
            "",
            "workspace.host-key-added",
            None,
            json!({ "workspace": workspace.name, "fingerprint": fingerprint, "source": source }),
        );
        let key = NewWorkspaceHostKey {
            public_key,
            fingerprint,
            source: source.into(),
        };
        Ok(self
            .store
            .add_workspace_host_key(workspace_id, &key, &audit)?)
    }

    fn workspace_info(&self, record: WorkspaceRecord) -> Result<WorkspaceInfo, VaultError> {
        let host_keys = self.store.workspace_host_keys(record.id)?;
        let grants = self
            .store
            .workspace_grants(record.id)?
            .iter()
            .map(|g| grant_view(g, &record.os_user))
            .collect();
        Ok(WorkspaceInfo {
            name: record.name,
            address: Some(record.address),
            os_user: record.os_user,
            host_keys,
            auth: WorkspaceAuth::stored(&record.auth),
            grants,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

/// A workspace must keep at least one pinned key: without one the relay could trust nothing.
fn no_host_key() -> Violation {
    Violation::new(
        "host-key",
        "at least one host key is required (pin it, or scan it and confirm)",
    )
}

/// The keys `lines` give, canonical and deduplicated by fingerprint, to pin with `source`; each
/// line that is not a public key adds its violation to `invalid`.
fn new_host_keys(
    lines: &[String],
    source: HostKeySource,
    invalid: &mut Vec<Violation>,
) -> Vec<NewWorkspaceHostKey> {
    let mut keys: Vec<NewWorkspaceHostKey> = Vec::new();
    for line in lines {
        match parse_host_key(line) {
            Ok((public_key, fingerprint)) => {
                if !keys.iter().any(|k| k.fingerprint == fingerprint) {
                    keys.push(NewWorkspaceHostKey {
                        public_key,
                        fingerprint,
                        source: source.as_str().into(),
                    });
                }
            }
            Err(v) => invalid.push(v),
        }
    }
    keys
}

fn grant_view(grant: &WorkspaceGrantRecord, workspace_login: &str) -> WorkspaceGrant {
    WorkspaceGrant {
        user: grant.user_name.clone(),
        owner: grant.owner,
        os_user: grant.os_user.clone(),
        login: grant
            .os_user
            .clone()
            .unwrap_or_else(|| workspace_login.to_string()),
        created_at: grant.created_at,
    }
}

/// What a user sees of a workspace granted to them: no address, no one else's grant.
fn user_view(
    record: WorkspaceRecord,
    grant: &WorkspaceGrantRecord,
    host_keys: Vec<WorkspaceHostKeyRecord>,
) -> WorkspaceInfo {
    WorkspaceInfo {
        grants: vec![grant_view(grant, &record.os_user)],
        name: record.name,
        address: None,
        os_user: record.os_user,
        host_keys,
        auth: WorkspaceAuth::stored(&record.auth),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

pub use super::workspace_rules::{
    check_address, check_login, check_workspace_name, parse_host_key,
};

#[cfg(test)]
#[path = "workspaces_tests.rs"]
mod tests;
