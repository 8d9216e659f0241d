//! keyport as the workspaces' SSH user CA: the CAs (made, rotated, promoted and retired, each
//! sealed under the master key and opened only to sign), each workspace's auth setting, and
//! the certificates signed for relay mode's upstream logins — every one audited by serial,
//! so a workspace's sshd log and keyport's audit log join on it.
//!
//! At most three CAs exist: `active` signs; `next` (from `ca rotate`) is trusted by
//! workspaces being updated but does not sign yet; `previous` (the one `ca promote`
//! replaced) signs only when a workspace refuses the active one's certificate, until
//! `ca retire` drops it.

use std::fmt;
use std::str::FromStr;

use keyport_keys::cert::{self, CertRequest};
use keyport_keys::{Binding, KeyPair, KeyType, PublicKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Actor, SessionUser, Vault, VaultError, WorkspaceInfo};
use crate::secrets::Violation;
use crate::store::{NewUserCa, SealedKind, UserCaRecord};

/// How relay mode logs in to a workspace's sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAuth {
    /// The user's keyport key, listed in the workspace login's authorized_keys.
    #[default]
    Key,
    /// A per-connection certificate from keyport's user CA (`TrustedUserCAKeys`).
    Ca,
}

impl WorkspaceAuth {
    /// The stored and typed word.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceAuth::Key => "key",
            WorkspaceAuth::Ca => "ca",
        }
    }

    /// From the stored word (the schema allows only the two).
    pub(crate) fn stored(word: &str) -> Self {
        if word == "ca" {
            WorkspaceAuth::Ca
        } else {
            WorkspaceAuth::Key
        }
    }
}

impl FromStr for WorkspaceAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "key" => Ok(WorkspaceAuth::Key),
            "ca" => Ok(WorkspaceAuth::Ca),
            other => Err(format!("auth {other:?} must be key or ca")),
        }
    }
}

impl fmt::Display for WorkspaceAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user CA as `ca status` and `ca show` present it (the public half only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserCaInfo {
    /// `ca1`, `ca2`, …
    pub id: String,
    /// `active`, `next` or `previous`.
    pub state: String,
    /// `ed25519` or `ecdsa-p256`.
    #[serde(rename = "type")]
    pub algorithm: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The public key, without comment.
    pub public_key: String,
    /// ms since the epoch.
    pub created_at: i64,
    /// When it started signing, ms since the epoch.
    pub promoted_at: Option<i64>,
}

impl UserCaInfo {
    /// The line for a workspace's `TrustedUserCAKeys` file, its comment naming the gateway
    /// and the CA.
    pub fn trusted_line(&self, gateway: &str) -> String {
        format!("{} keyport-user-ca:{gateway}:{}", self.public_key, self.id)
    }
}

impl From<UserCaRecord> for UserCaInfo {
    fn from(r: UserCaRecord) -> Self {
        Self {
            id: r.id,
            state: r.state,
            algorithm: r.algorithm,
            fingerprint: r.fingerprint,
            public_key: r.public_key,
            created_at: r.created_at,
            promoted_at: r.promoted_at,
        }
    }
}

/// One workspace in `ca status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceCaStatus {
    /// Workspace name.
    pub name: String,
    /// `key` or `ca`.
    pub auth: WorkspaceAuth,
    /// The CA whose certificate its sshd last accepted (`null`: never).
    pub last_ca: Option<String>,
    /// When, ms since the epoch.
    pub last_ca_at: Option<i64>,
    /// Whether that was the active CA (false too when it never logged in with one).
    pub on_active: bool,
}

/// `keyport ca status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaStatus {
    /// The CAs: active, next, previous.
    pub cas: Vec<UserCaInfo>,
    /// Workspaces that log in with certificates.
    pub workspaces: Vec<WorkspaceCaStatus>,
}

/// Which CA signs an upstream login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// The active CA.
    Active,
    /// The previous CA, after the workspace refused the active one's certificate.
    Fallback,
}

/// A certificate to sign for one upstream login.
#[derive(Debug, Clone)]
pub struct CertOrder {
    /// Who it is for.
    pub user: SessionUser,
    /// The workspace's row id and name.
    pub workspace_id: i64,
    pub workspace: String,
    /// The workspace login: the certificate's one principal.
    pub login: String,
    /// The per-connection key it certifies.
    pub subject: PublicKey,
    /// Which CA.
    pub signing: Signing,
    /// Names this upstream connection in the key id.
    pub connection: String,
    /// `[ca]`.
    pub settings: crate::config::CaSettings,
    /// Unix seconds (the caller's clock).
    pub now: u64,
}

/// A signed certificate and the CA that signed it.
#[derive(Debug, Clone)]
pub struct SignedCert {
    /// The certificate.
    pub certificate: russh::keys::Certificate,
    /// Its serial.
    pub serial: u64,
    /// Its key id.
    pub key_id: String,
    /// The CA's id and fingerprint.
    pub ca: String,
    pub ca_fingerprint: String,
}

fn ca_binding(fingerprint: &str) -> Binding<'_> {
    Binding {
        purpose: SealedKind::UserCa.purpose(),
        owner: "keyport",
        item: fingerprint,
    }
}

fn ca_conflict(detail: impl Into<String>) -> VaultError {
    VaultError::Conflict(vec![Violation::new("ca", detail)])
}

impl Vault {
    /// The user CAs: active, next, previous.
    pub fn user_cas(&self) -> Result<Vec<UserCaInfo>, VaultError> {
        Ok(self
            .store
            .user_cas()?
            .into_iter()
            .map(UserCaInfo::from)
            .collect())
    }

    /// The user CAs, after making an ed25519 one if there is none; and whether it was made.
    pub fn ensure_user_ca(&mut self, actor: &Actor) -> Result<(Vec<UserCaInfo>, bool), VaultError> {
        if self.store.user_ca_in("active")?.is_some() {
            return Ok((self.user_cas()?, false));
        }
        let made = match self.make_user_ca(actor, KeyType::Ed25519, "active") {
            Ok(_) => true,
            // Made meanwhile by another process: that one is used.
            Err(VaultError::Conflict(_)) => false,
            Err(e) => return Err(e),
        };
        Ok((self.user_cas()?, made))
    }

    /// Makes the first user CA, of `kind`; conflict if there is one.
    pub fn init_user_ca(&mut self, actor: &Actor, kind: KeyType) -> Result<UserCaInfo, VaultError> {
        if let Some(active) = self.store.user_ca_in("active")? {
            return Err(ca_conflict(format!(
                "keyport already has a user CA ({}); keyport ca rotate makes the next one",
                active.id
            )));
        }
        self.make_user_ca(actor, kind, "active")
    }

    /// Makes the next user CA, of `kind`, trusted by no one yet and not signing.
    pub fn rotate_user_ca(
        &mut self,
        actor: &Actor,
        kind: KeyType,
    ) -> Result<UserCaInfo, VaultError> {
        if self.store.user_ca_in("active")?.is_none() {
            return Err(ca_conflict(
                "keyport has no user CA yet; keyport ca init makes the first",
            ));
        }
        if let Some(next) = self.store.user_ca_in("next")? {
            return Err(ca_conflict(format!(
                "the next user CA {} exists already; promote it (keyport ca promote) or \
                 retire it (keyport ca retire {})",
                next.id, next.id
            )));
        }
        self.make_user_ca(actor, kind, "next")
    }

    fn make_user_ca(
        &mut self,
        actor: &Actor,
        kind: KeyType,
        state: &str,
    ) -> Result<UserCaInfo, VaultError> {
        let pair = KeyPair::generate(kind, "")?;
        let fingerprint = pair.fingerprint();
        let bytes = pair.to_secret_bytes()?;
        let ca = NewUserCa {
            algorithm: kind.as_str().into(),
            public_key: pair.public_line()?.trim().to_string(),
            private_sealed: self
                .master()
                .seal(ca_binding(&fingerprint), bytes.expose())?,
            fingerprint: fingerprint.clone(),
        };
        let action = if state == "active" {
            "ca.create"
        } else {
            "ca.rotate"
        };
        let audit = Self::audit(
            actor,
            "",
            action,
            None,
            json!({ "type": kind.as_str(), "fingerprint": fingerprint, "state": state }),
        );
        Ok(self.store.insert_user_ca(&ca, state, &audit)?.into())
    }

    /// The next CA starts signing; the active one becomes the fallback.
    pub fn promote_user_ca(&mut self, actor: &Actor) -> Result<Vec<UserCaInfo>, VaultError> {
        let cas = self.store.user_cas()?;
        let id = |state: &str| cas.iter().find(|c| c.state == state).map(|c| c.id.clone());
        let audit = Self::audit(
            actor,
            "",
            "ca.promote",
            None,
            json!({ "active": id("next"), "previous": id("active") }),
        );
        self.store.promote_user_ca(&audit)?;
        self.user_cas()
    }

    /// Drops CA `id` (default: the previous one); never the active one.
    pub fn retire_user_ca(
        &mut self,
        actor: &Actor,
        id: Option<&str>,
    ) -> Result<UserCaInfo, VaultError> {
        let cas = self.store.user_cas()?;
        let found = match id {
            Some(id) => cas.into_iter().find(|c| c.id == id),
            None => cas.into_iter().find(|c| c.state == "previous"),
        };
        let Some(ca) = found else {
            return Err(VaultError::not_found(
                "user CA",
                id.unwrap_or("previous (keyport ca status lists them)"),
            ));
        };
        if ca.state == "active" {
            return Err(ca_conflict(format!(
                "{} is the active user CA; rotate and promote another before retiring it",
                ca.id
            )));
        }
        let audit = Self::audit(
            actor,
            "",
            "ca.retire",
            None,
            json!({ "ca": ca.id, "fingerprint": ca.fingerprint, "state": ca.state }),
        );
        self.store.remove_user_ca(&ca.id, &audit)?;
        Ok(ca.into())
    }

    /// The CAs and, for every workspace that logs in with certificates, the CA its sshd last
    /// accepted.
    pub fn ca_status(&self) -> Result<CaStatus, VaultError> {
        let cas = self.user_cas()?;
        let active = cas
            .iter()
            .find(|c| c.state == "active")
            .map(|c| c.id.clone());
        let workspaces = self
            .store
            .workspace_cas()?
            .into_iter()
            .filter(|w| w.auth == "ca")
            .map(|w| WorkspaceCaStatus {
                on_active: w.last_ca.is_some() && w.last_ca == active,
                name: w.name,
                auth: WorkspaceAuth::Ca,
                last_ca: w.last_ca,
                last_ca_at: w.last_ca_at,
            })
            .collect();
        Ok(CaStatus { cas, workspaces })
    }

    /// Sets how keyport logs in to workspace `name`; a user CA is made first if `ca` needs one.
    pub fn set_workspace_auth(
        &mut self,
        actor: &Actor,
        name: &str,
        auth: WorkspaceAuth,
    ) -> Result<WorkspaceInfo, VaultError> {
        self.store.workspace(name)?;
        if auth == WorkspaceAuth::Ca {
            self.ensure_user_ca(actor)?;
        }
        let audit = Self::audit(
            actor,
            "",
            "workspace.auth",
            None,
            json!({ "workspace": name, "auth": auth.as_str() }),
        );
        self.store.set_workspace_auth(name, auth.as_str(), &audit)?;
        self.workspace(name)
    }

    /// Signs a certificate for one upstream login, audited as `ca.certificate`; `None` when
    /// there is no CA for `order.signing` (no previous CA to fall back to).
    pub fn sign_upstream_certificate(
        &mut self,
        order: &CertOrder,
    ) -> Result<Option<SignedCert>, VaultError> {
        let user = self.session_user(&order.user)?;
        let state = match order.signing {
            Signing::Active => "active",
            Signing::Fallback => "previous",
        };
        let Some(record) = self.store.user_ca_in(state)? else {
            return Ok(None);
        };
        let opened = self
            .master()
            .unseal(ca_binding(&record.fingerprint), &record.private_sealed)?;
        let ca = KeyPair::from_secret_bytes(&opened)?;
        let settings = &order.settings;
        let request = CertRequest {
            principal: order.login.clone(),
            key_id: cert::key_id(
                &settings.gateway_name(),
                &user.name,
                &order.workspace,
                &order.connection,
            ),
            skew_secs: settings.validity_skew_secs,
            // No port forwarding: relayed logins are refused forwarding.
            extensions: vec!["permit-pty", "permit-agent-forwarding", "permit-user-rc"],
            source_address: settings.source_address_option(),
        };
        let issued = cert::issue(&ca, &order.subject, &request, order.now)
            .map_err(|e| VaultError::Invalid(vec![Violation::new("ca", e.to_string())]))?;
        let audit = Self::audit(
            &Actor::System,
            &user.name,
            "ca.certificate",
            None,
            json!({
                "workspace": order.workspace,
                "login": order.login,
                "serial": issued.serial.to_string(),
                "key_id": request.key_id,
                "valid_after": issued.valid_after,
                "valid_before": issued.valid_before,
                "ca": record.id,
                "ca_fingerprint": record.fingerprint,
                "connection": order.connection,
                "signing": state,
            }),
        );
        self.store.record(&audit)?;
        Ok(Some(SignedCert {
            certificate: issued.certificate,
            serial: issued.serial,
            key_id: request.key_id,
            ca: record.id,
            ca_fingerprint: record.fingerprint,
        }))
    }

    /// Notes that workspace `workspace_id`'s sshd accepted CA `ca`'s certificate.
    pub fn note_workspace_ca(&mut self, workspace_id: i64, ca: &str) -> Result<(), VaultError> {
        Ok(self.store.note_workspace_ca(workspace_id, ca)?)
    }
}
