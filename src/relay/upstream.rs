//! The upstream leg: one russh client connection to a workspace's sshd per client
//! connection, logged in as the workspace login with the user's keyport key (signed inside
//! the daemon's vault, never handed to the workspace) or, for an `--auth ca` workspace, with a
//! per-connection certificate (`certlogin`), the host key checked against the pins.
//!
//! Host keys the sshd announces after login (`hostkeys-00@openssh.com`, OpenSSH's
//! `UpdateHostKeys`) are pinned only once the sshd proved it holds them (`hostkeys-prove`).
//! The sshd's `auth-agent@openssh.com` channels are served from the user's in-memory agent,
//! and only once keyport asked for agent forwarding on this connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use russh::client::{self, AuthResult, ChannelOpenHandle, Msg, Session};
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::RelayError;
use super::certlogin::{self, CertLogin};
use crate::agent::{Peer, SessionAgent};
use crate::shared::VaultHandle;
use crate::vault::{Route, SessionUser, WorkspaceAuth};

/// A logged-in connection to a workspace's sshd.
pub struct Upstream {
    /// The russh client handle (channels are opened on it).
    pub handle: client::Handle<Leg>,
    /// The fingerprint of the host key the sshd proved (`SHA256:…`).
    pub host_key: String,
    /// Serves the sshd's agent channels once forwarding was asked for.
    pub agent: Arc<AgentGate>,
}

/// Whether, and with which agent, the sshd's agent channels are served.
#[derive(Default)]
pub struct AgentGate {
    /// Set when keyport sent `auth-agent-req@openssh.com` on a channel of this connection.
    requested: AtomicBool,
    /// The agent, made for the connection's first relayed session.
    agent: OnceLock<Arc<SessionAgent>>,
}

impl AgentGate {
    /// Agent channels may now be opened; `make` gives the agent that serves them (used once).
    /// Returns whether forwarding is still to be asked for on this connection: OpenSSH's sshd
    /// takes `auth-agent-req@openssh.com` once per connection (session.c) and refuses it
    /// after, while every later session of the connection gets the same `SSH_AUTH_SOCK`.
    pub fn allow(&self, make: impl FnOnce() -> SessionAgent) -> bool {
        let _ = self.agent.get_or_init(|| Arc::new(make()));
        !self.requested.swap(true, Ordering::AcqRel)
    }
}

/// The client-side russh handler of the upstream leg.
pub struct Leg {
    pins: Vec<PublicKey>,
    /// The key the sshd presented (kept for the message when it is not pinned).
    offered: Arc<Mutex<Option<PublicKey>>>,
    /// Announced keys that are not pinned yet, for the task that asks for their proof.
    announced: mpsc::Sender<Vec<PublicKey>>,
    agent: Arc<AgentGate>,
    workspace: String,
    /// The daemon's tasks: each agent channel is one.
    tasks: tokio_util::task::TaskTracker,
}

impl client::Handler for Leg {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates are not pinned keys.
            return Ok(false);
        };
        if let Ok(mut offered) = self.offered.lock() {
            *offered = Some(key.clone());
        }
        Ok(self.pins.iter().any(|pin| pin.key_data() == key.key_data()))
    }

    async fn openssh_ext_host_keys_announced(
        &mut self,
        keys: Vec<PublicKey>,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let new: Vec<PublicKey> = keys
            .into_iter()
            .filter(|k| !self.pins.iter().any(|p| p.key_data() == k.key_data()))
            .collect();
        if !new.is_empty() {
            // Proved from another task: a proof awaited here would stall the session loop.
            let _ = self.announced.try_send(new);
        }
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let agent = self
            .agent
            .requested
            .load(Ordering::Acquire)
            .then(|| self.agent.agent.get().cloned())
            .flatten();
        let Some(agent) = agent else {
            // Not asked for: a workspace does not get an agent it was not offered.
            debug!(workspace = %self.workspace, "refused an agent channel keyport did not ask for");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let peer = Peer {
            workspace: Some(self.workspace.clone()),
            ..Peer::default()
        };
        // One task per agent channel (russh.md §6: never inside the callback).
        self.tasks
            .spawn(async move { agent.serve_stream((channel.into_stream(), peer)).await });
        Ok(())
    }
}

/// Signs the upstream login inside the vault: the private key never leaves its thread.
struct VaultSigner {
    vault: VaultHandle,
    user: SessionUser,
}

/// Why the vault did not sign.
#[derive(Debug, thiserror::Error)]
enum SignFailed {
    #[error("the session loop is gone")]
    Send(#[from] russh::SendError),
    #[error("{0}")]
    Vault(String),
}

impl russh::Signer for VaultSigner {
    type Error = SignFailed;

    async fn auth_sign(
        &mut self,
        _key: &russh::keys::agent::AgentIdentity,
        _hash_alg: Option<HashAlg>,
        to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, Self::Error> {
        let who = self.user.clone();
        let data = to_sign.clone();
        let signature = self
            .vault
            .call(move |v| {
                v.session_user(&who)?;
                Ok(v.open_user_key(&who.name)?.sign(&data)?)
            })
            .await
            .map_err(|e| SignFailed::Vault(e.to_string()))?;
        // What russh sends (as with an agent's answer): the signed data, then the signature
        // blob as an SSH string.
        let mut out = to_sign;
        out.extend_from_slice(&u32::try_from(signature.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

/// How the upstream leg runs.
pub struct Dial<'a> {
    pub vault: &'a VaultHandle,
    pub route: &'a Route,
    pub user: &'a SessionUser,
    pub timeout: Duration,
    pub keepalive: Option<Duration>,
    pub window: u32,
    pub tasks: tokio_util::task::TaskTracker,
    pub ca: &'a crate::config::CaSettings,
}

/// Host keys the sshd announced that are not pinned yet, for [`learn_host_keys`].
pub type Announced = mpsc::Receiver<Vec<PublicKey>>;

/// Connects to `route`'s sshd, checks its host key and logs in with the user's key.
pub async fn connect(dial: Dial<'_>) -> Result<(Upstream, Announced), RelayError> {
    let Dial {
        vault,
        route,
        user,
        timeout,
        keepalive,
        window,
        tasks,
        ca,
    } = dial;
    let pins: Vec<PublicKey> = route
        .host_keys
        .iter()
        .filter_map(|line| PublicKey::from_openssh(line).ok())
        .collect();
    let pinned: Vec<String> = pins.iter().map(super::scan::fingerprint).collect();
    let address = route.address.clone();
    let deadline = tokio::time::Instant::now() + timeout;
    let unreachable = |why: String| RelayError::Unreachable {
        address: address.clone(),
        why,
    };
    let stream = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let offered = Arc::new(Mutex::new(None));
    let (announced, proofs) = mpsc::channel(4);
    let agent = Arc::new(AgentGate::default());
    let leg = Leg {
        pins,
        offered: offered.clone(),
        announced,
        agent: agent.clone(),
        workspace: route.workspace.clone(),
        tasks,
    };
    let config = Arc::new(client::Config {
        // Consumption-gated on both legs (vendor/russh/README.md): the client's window is
        // the same size as the one keyport gives its own clients.
        window_size: window,
        maximum_packet_size: 65535,
        keepalive_interval: keepalive,
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        // AES-GCM first: with AES-NI it costs keyport and the workspace's sshd far less per
        // byte than ChaCha20-Poly1305 (the client's own leg is the client's choice).
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_GCM,
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            ..russh::Preferred::default()
        },
        ..client::Config::default()
    });
    let handshake = client::connect_stream(config, stream, leg);
    let mut handle = match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => return Err(unreachable(format!("no SSH handshake within {timeout:?}"))),
        Ok(Ok(handle)) => handle,
        Ok(Err(russh::Error::UnknownKey)) => {
            let offered = offered
                .lock()
                .ok()
                .and_then(|k| k.as_ref().map(super::scan::fingerprint))
                .unwrap_or_else(|| "a host certificate".into());
            return Err(RelayError::HostKey {
                workspace: route.workspace.clone(),
                pinned,
                offered,
            });
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
    };
    let host_key = offered
        .lock()
        .ok()
        .and_then(|k| k.as_ref().map(super::scan::fingerprint))
        .unwrap_or_default();
    if route.auth == WorkspaceAuth::Ca {
        let login = CertLogin {
            vault,
            route,
            user,
            settings: ca,
        };
        tokio::time::timeout_at(deadline, certlogin::log_in(&mut handle, login))
            .await
            .map_err(|_| unreachable(format!("no login answer within {timeout:?}")))??;
    } else {
        key_login(&mut handle, vault, route, user, deadline, timeout).await?;
    }
    info!(user = %user.name, workspace = %route.workspace, upstream = %route.address, "upstream login");
    let upstream = Upstream {
        handle,
        host_key,
        agent,
    };
    Ok((upstream, proofs))
}

/// Proves and pins the host keys the sshd announces, for as long as the connection lives.
///
/// Holds the connection weakly: it must not keep alive a connection its client has left.
pub async fn learn_host_keys(
    upstream: std::sync::Weak<Upstream>,
    mut proofs: Announced,
    vault: VaultHandle,
    workspace_id: i64,
) {
    while let Some(keys) = proofs.recv().await {
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        if let Err(e) = upstream.handle.hostkeys_prove(keys.clone()).await {
            debug!(workspace_id, error = %e, "announced host keys not proved: not pinned");
            continue;
        }
        for key in keys {
            let Ok(line) = key.to_openssh() else { continue };
            let vouched_by = upstream.host_key.clone();
            let added = vault
                .call(move |v| v.add_workspace_host_key(workspace_id, &line, &vouched_by))
                .await;
            if let Ok(true) = added {
                info!(workspace_id, fingerprint = %super::scan::fingerprint(&key), "pinned a proved host key");
            }
        }
    }
}

/// Logs `handle` in with the user's keyport key, signed in the vault.
async fn key_login(
    handle: &mut client::Handle<Leg>,
    vault: &VaultHandle,
    route: &Route,
    user: &SessionUser,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), RelayError> {
    let unreachable = |why: String| RelayError::Unreachable {
        address: route.address.clone(),
        why,
    };
    let (public, line) = user_public_key(vault, user).await?;
    let mut signer = VaultSigner {
        vault: vault.clone(),
        user: user.clone(),
    };
    let login =
        handle.authenticate_publickey_with(route.os_user.clone(), public, None, &mut signer);
    match tokio::time::timeout_at(deadline, login).await {
        Err(_) => return Err(unreachable(format!("no login answer within {timeout:?}"))),
        Ok(Err(e)) => return Err(RelayError::Other(format!("cannot sign the login: {e}"))),
        Ok(Ok(AuthResult::Success)) => {}
        Ok(Ok(AuthResult::Failure { .. })) => {
            return Err(RelayError::Refused {
                login: route.os_user.clone(),
                address: route.address.clone(),
                key_line: line,
            });
        }
    }
    Ok(())
}

/// The user's keyport public key, and its line for an `authorized_keys` file.
async fn user_public_key(
    vault: &VaultHandle,
    user: &SessionUser,
) -> Result<(PublicKey, String), RelayError> {
    let who = user.clone();
    let info = vault
        .call(move |v| {
            v.session_user(&who)?;
            v.user_key(&who.name)
        })
        .await
        .map_err(|e| RelayError::Other(format!("cannot read your key: {e}")))?;
    let key = PublicKey::from_openssh(&info.public_key)
        .map_err(|e| RelayError::Other(format!("cannot read your key: {e}")))?;
    // Type and key only: the comment names the user the way `keyport key show` does.
    let bare: Vec<&str> = info.public_key.split_whitespace().take(2).collect();
    let line = format!("{} keyport:{}", bare.join(" "), user.name);
    Ok((key, line))
}
