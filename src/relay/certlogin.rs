//! The upstream login of an `--auth ca` workspace: a fresh ed25519 key per connection, made
//! here and dropped after the login (never written, never on an agent), certified by the
//! vault's active user CA; if the sshd refuses that certificate and a previous CA is still
//! kept (a rotation under way), a second one from it on the same connection.

use std::sync::Arc;

use keyport_keys::{KeyPair, KeyType};
use russh::client::{self, AuthResult};
use tracing::{debug, info};

use super::RelayError;
use super::upstream::Leg;
use crate::config::CaSettings;
use crate::shared::VaultHandle;
use crate::vault::{CertOrder, Route, SessionUser, Signing};

/// The certificate type keyport's per-connection keys log in with.
const CERT_ALGORITHM: &str = "ssh-ed25519-cert-v01@openssh.com";

/// What a certificate login needs.
pub struct CertLogin<'a> {
    pub vault: &'a VaultHandle,
    pub route: &'a Route,
    pub user: &'a SessionUser,
    pub settings: &'a CaSettings,
}

/// Eight random hex digits naming this upstream connection in the key id.
fn connection_id() -> String {
    let mut bytes = [0u8; 4];
    // Only a name: on the (never seen) failure of the OS's random source, zeros serve.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs `handle` in as the route's login with a certificate; the CA its sshd accepted is
/// noted for `keyport ca status`.
pub async fn log_in(
    handle: &mut client::Handle<Leg>,
    login: CertLogin<'_>,
) -> Result<(), RelayError> {
    let CertLogin {
        vault,
        route,
        user,
        settings,
    } = login;
    let connection = connection_id();
    let mut tried = Vec::new();
    let mut key_id = String::new();
    for signing in [Signing::Active, Signing::Fallback] {
        let subject = KeyPair::generate(KeyType::Ed25519, "")
            .map_err(|e| RelayError::Other(format!("cannot make a connection key: {e}")))?;
        let order = CertOrder {
            user: user.clone(),
            workspace_id: route.workspace_id,
            workspace: route.workspace.clone(),
            login: route.os_user.clone(),
            subject: subject.private().public_key().clone(),
            signing,
            connection: connection.clone(),
            settings: settings.clone(),
            now: unix_now(),
        };
        let signed = vault
            .call(move |v| v.sign_upstream_certificate(&order))
            .await
            .map_err(|e| RelayError::Other(format!("cannot sign a certificate: {e}")))?;
        let Some(signed) = signed else {
            if signing == Signing::Active {
                return Err(RelayError::Other(
                    "keyport has no user CA yet; an admin runs keyport ca init".into(),
                ));
            }
            break;
        };
        tried.push(format!("{} ({})", signed.ca, signed.ca_fingerprint));
        key_id.clone_from(&signed.key_id);
        let (ca, serial) = (signed.ca.clone(), signed.serial);
        let key = Arc::new(subject.into_private());
        let result = handle
            .authenticate_openssh_cert(route.os_user.clone(), key, signed.certificate)
            .await
            .map_err(|e| RelayError::Unreachable {
                address: route.address.clone(),
                why: e.to_string(),
            })?;
        match result {
            AuthResult::Success => {
                info!(user = %user.name, workspace = %route.workspace, %ca, serial, key_id = %key_id, "upstream login with a certificate");
                let workspace_id = route.workspace_id;
                if let Err(e) = vault
                    .call(move |v| v.note_workspace_ca(workspace_id, &ca))
                    .await
                {
                    debug!(error = %e, "could not note the CA the workspace accepted");
                }
                return Ok(());
            }
            AuthResult::Failure { .. } => {
                debug!(workspace = %route.workspace, %ca, serial, "certificate refused upstream");
            }
        }
    }
    Err(RelayError::CertRefused {
        workspace: route.workspace.clone(),
        login: route.os_user.clone(),
        address: route.address.clone(),
        tried,
        algorithm: CERT_ALGORITHM.into(),
        skew_secs: settings.validity_skew_secs,
        key_id,
    })
}
