//! The in-memory ssh-agent behind every session's `SSH_AUTH_SOCK`.
//!
//! It lists the user's keyport key and signs with it; the private key is unsealed inside the
//! daemon for each signature and zeroized right after, so `keyport key regenerate` counts from
//! the next signature on. When the client forwarded its own agent (`ssh -A`), the same socket
//! also lists the client's keys and relays their sign requests over an `auth-agent@openssh.com`
//! channel (one per local connection, opened on first need). Add, remove, lock and unlock are
//! refused. Every signature is audited with the requesting process and, when `ssh` sent
//! `session-bind@openssh.com`, the verified host key it was for.
//!
//! Peers are checked with `SO_PEERCRED`: only the session's uid (and the daemon's own) may
//! connect, on top of the socket's 0700 directory.

use std::sync::Arc;
use std::time::Duration;

use keyport_keys::agent::{self, Identity, MAX_FRAME, Request, Response};
use keyport_keys::{KeyPair, PublicKey};
use russh::ChannelStream;
use russh::server::{Handle, Msg};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::DaemonMetrics;
use crate::shared::VaultHandle;
use crate::vault::Actor;

/// How long a forwarded agent may take to answer (it may be asking its user to confirm).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// One session's agent.
pub struct SessionAgent {
    /// The daemon's vault.
    pub vault: VaultHandle,
    /// Counters.
    pub metrics: Arc<DaemonMetrics>,
    /// keyport user.
    pub user: String,
    /// The session id the audit log names (`KEYPORT_SESSION`).
    pub session: u64,
    /// The OS uid the session runs as.
    pub uid: u32,
    /// The SSH connection, when the client forwarded its agent.
    pub forward: Option<Handle>,
}

/// Serves `listener` until `stop` is cancelled, each allowed connection in its own task.
pub async fn serve(listener: UnixListener, agent: Arc<SessionAgent>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = accept_peer(&listener, agent.uid) => accepted,
        };
        let (agent, stop) = (agent.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = agent.serve_connection(stream) => {}
            }
        });
    }
}

/// The next connection from `uid` (or the daemon's own uid); others are closed unanswered.
pub async fn accept_peer(listener: &UnixListener, uid: u32) -> (UnixStream, Peer) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match stream.peer_cred() {
                Ok(cred) if cred.uid() == uid || cred.uid() == nix::unistd::geteuid().as_raw() => {
                    let peer = Peer::from_pid(cred.pid());
                    return (stream, peer);
                }
                Ok(cred) => debug!(uid = cred.uid(), "refused a session socket peer"),
                Err(e) => debug!(error = %e, "no peer credentials"),
            },
            // Out of descriptors, most likely: let some close.
            Err(e) => {
                debug!(error = %e, "session socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The process on the other end of a socket.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its pid.
    pub pid: Option<i32>,
    /// Its executable.
    pub exe: Option<String>,
}

impl Peer {
    fn from_pid(pid: Option<i32>) -> Self {
        let exe = pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .map(|p| p.display().to_string());
        Self { pid, exe }
    }
}

/// What one local connection has learnt.
#[derive(Default)]
struct ConnState {
    /// The verified destination host key (`session-bind@openssh.com`).
    destination: Option<String>,
    /// Its agent channel to the client, once opened.
    forwarded: Option<ChannelStream<Msg>>,
    /// Whether opening that channel failed (then it is not tried again).
    forward_failed: bool,
}

impl SessionAgent {
    async fn serve_connection(&self, (mut stream, peer): (UnixStream, Peer)) {
        let mut state = ConnState::default();
        loop {
            let payload = match read_frame(&mut stream).await {
                Ok(Some(payload)) => payload,
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "agent connection closed");
                    return;
                }
            };
            let response = match Request::parse(&payload) {
                Ok(request) => self.answer(request, &peer, &mut state).await,
                Err(e) => {
                    debug!(error = %e, "malformed agent request");
                    Response::Failure
                }
            };
            if write_frame(&mut stream, &response.encode()).await.is_err() {
                return;
            }
        }
    }

    async fn answer(&self, request: Request, peer: &Peer, state: &mut ConnState) -> Response {
        match request {
            Request::Identities => self.identities(state).await,
            Request::Sign { key, data, flags } => {
                match self.sign_own(&key, &data, peer, state).await {
                    Ok(Some(signature)) => Response::Signature(signature),
                    Ok(None) => self.sign_forwarded(key, data, flags, peer, state).await,
                    Err(e) => {
                        debug!(user = %self.user, error = %e, "agent signature failed");
                        Response::Failure
                    }
                }
            }
            Request::SessionBind(bind) => match bind.host_fingerprint() {
                Ok(fingerprint) => {
                    state.destination = Some(fingerprint);
                    if self.forward.is_some() {
                        // The client's agent may hold destination-constrained keys.
                        let _ = self.relay(Request::SessionBind(bind), state).await;
                    }
                    Response::Success
                }
                Err(_) => Response::Failure,
            },
            Request::Extension(_) | Request::Change(_) | Request::Unknown(_) => Response::Failure,
        }
    }

    /// The keyport key, then the client's keys when it forwarded its agent. The keyport key
    /// is always first (`keyport gitssh` relies on it).
    async fn identities(&self, state: &mut ConnState) -> Response {
        let user = self.user.clone();
        let own = match self.vault.call(move |v| v.user_key(&user)).await {
            Ok(info) => PublicKey::from_openssh(&info.public_key)
                .ok()
                .and_then(|key| key.to_bytes().ok())
                .map(|key| Identity {
                    key,
                    comment: format!("keyport:{}", self.user),
                }),
            Err(e) => {
                debug!(user = %self.user, error = %e, "cannot read the user key");
                None
            }
        };
        let mut ids: Vec<Identity> = own.into_iter().collect();
        if self.forward.is_some()
            && let Some(Response::Identities(theirs)) = self.relay(Request::Identities, state).await
        {
            for id in theirs {
                if !ids.iter().any(|known| known.key == id.key) {
                    ids.push(id);
                }
            }
        }
        Response::Identities(ids)
    }

    /// Signs with the keyport key if `key` is it (`None` otherwise), and audits it.
    async fn sign_own(
        &self,
        key: &[u8],
        data: &[u8],
        peer: &Peer,
        state: &ConnState,
    ) -> Result<Option<Vec<u8>>, String> {
        let (user, key, data) = (self.user.clone(), key.to_vec(), data.to_vec());
        let (session, peer, destination) = (self.session, peer.clone(), state.destination.clone());
        let signed = self
            .vault
            .call(move |v| {
                let pair: KeyPair = v.open_user_key(&user)?;
                if pair.public_blob()? != key {
                    return Ok(None);
                }
                let signature = pair.sign(&data)?;
                let kind = pair.private().algorithm().as_str().to_string();
                let detail = sign_detail(
                    session,
                    &pair.fingerprint(),
                    &kind,
                    "keyport",
                    &peer,
                    destination.as_deref(),
                );
                v.record_use(&Actor::User(user.clone()), &user, "key.sign", detail)?;
                Ok(Some((signature, kind)))
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(signed.map(|(signature, kind)| {
            self.metrics.count_signature(&kind);
            signature
        }))
    }

    /// Relays a sign request for another key to the client's agent, and audits a signature.
    async fn sign_forwarded(
        &self,
        key: Vec<u8>,
        data: Vec<u8>,
        flags: u32,
        peer: &Peer,
        state: &mut ConnState,
    ) -> Response {
        if self.forward.is_none() {
            return Response::Failure;
        }
        let public = PublicKey::from_bytes(&key).ok();
        let request = Request::Sign { key, data, flags };
        let Some(Response::Signature(signature)) = self.relay(request, state).await else {
            return Response::Failure;
        };
        let (fingerprint, kind) = public.map_or_else(
            || ("unknown".to_string(), "unknown".to_string()),
            |k| {
                (
                    k.fingerprint(russh::keys::HashAlg::Sha256).to_string(),
                    k.algorithm().as_str().to_string(),
                )
            },
        );
        self.metrics.count_signature(&kind);
        let detail = sign_detail(
            self.session,
            &fingerprint,
            &kind,
            "forwarded",
            peer,
            state.destination.as_deref(),
        );
        let user = self.user.clone();
        let recorded = self
            .vault
            .call(move |v| {
                v.record_use(
                    &Actor::User(user.clone()),
                    &user,
                    "key.sign",
                    detail.clone(),
                )
            })
            .await;
        match recorded {
            Ok(()) => Response::Signature(signature),
            // Unaudited signatures are not handed out.
            Err(e) => {
                debug!(error = %e, "cannot audit a forwarded signature");
                Response::Failure
            }
        }
    }

    /// One request to the client's agent, over this connection's agent channel.
    async fn relay(&self, request: Request, state: &mut ConnState) -> Option<Response> {
        let handle = self.forward.as_ref()?;
        if state.forwarded.is_none() && !state.forward_failed {
            match tokio::time::timeout(FORWARD_TIMEOUT, handle.channel_open_agent()).await {
                Ok(Ok(channel)) => state.forwarded = Some(channel.into_stream()),
                _ => {
                    debug!(user = %self.user, "the client refused an agent channel");
                    state.forward_failed = true;
                }
            }
        }
        let stream = state.forwarded.as_mut()?;
        let exchange = async {
            write_frame(stream, &request.encode()).await?;
            read_frame(stream).await
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
            Ok(Ok(Some(payload))) => Response::parse(&payload).ok(),
            _ => {
                // A channel that failed once is not trusted to be in step again.
                state.forwarded = None;
                None
            }
        }
    }
}

fn sign_detail(
    session: u64,
    fingerprint: &str,
    key_type: &str,
    source: &str,
    peer: &Peer,
    destination: Option<&str>,
) -> serde_json::Value {
    json!({
        "session": session, "key_fingerprint": fingerprint, "key_type": key_type,
        "key_source": source, "pid": peer.pid, "exe": peer.exe,
        "destination_host_key": destination,
    })
}

/// Reads one frame's payload; `None` at a clean end of stream.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = agent::frame_len(header).map_err(std::io::Error::other)?;
    debug_assert!(len <= MAX_FRAME);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(&agent::frame(payload)).await?;
    stream.flush().await
}
