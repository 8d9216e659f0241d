//! `keyport workspace add --scan`: one connection to a workspace's sshd that reads the host
//! key it presents and goes no further (no authentication is attempted), so an admin can pin it
//! after checking the fingerprint — as a first `ssh` asks before it trusts a host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PublicKey};

/// The host key `address` (HOST:PORT) presents, or why it could not be read.
pub async fn host_key(address: &str, timeout: Duration) -> Result<PublicKey, String> {
    let seen = Arc::new(Mutex::new(None));
    let handler = Recorder(seen.clone());
    let config = Arc::new(client::Config::default());
    // The handler refuses the key, so the handshake ends as soon as the key is seen.
    let connect = client::connect(config, address, handler);
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => return Err(format!("{address}: no SSH answer within {timeout:?}")),
        Ok(Err(russh::Error::UnknownKey)) | Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            if seen.lock().map(|s| s.is_none()).unwrap_or(true) {
                return Err(format!("{address}: {e}"));
            }
        }
    }
    let key = seen
        .lock()
        .map_err(|_| "host key recorder poisoned".to_string())?
        .take();
    key.ok_or_else(|| format!("{address}: the server presented no host key"))
}

/// `SHA256:…`, as `ssh` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Records the key the server presents and refuses it.
struct Recorder(Arc<Mutex<Option<PublicKey>>>);

impl client::Handler for Recorder {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key
            && let Ok(mut seen) = self.0.lock()
        {
            *seen = Some(key.clone());
        }
        Ok(false)
    }
}
