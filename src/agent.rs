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
//! It serves any byte stream: a session socket's connection (who may connect is
//! `ssh::sessiondir`'s business), or an upstream workspace's `auth-agent@openssh.com` channel
//! in relay mode.

use std::sync::Arc;
use std::time::Duration;

use keyport_keys::agent::{self, Identity, MAX_FRAME, Request, Response, SessionBind};
use keyport_keys::{KeyPair, PublicKey};
use russh::ChannelStream;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::server::{Handle, Msg};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::metrics::DaemonMetrics;
use crate::shared::VaultHandle;
use crate::vault::{Actor, SessionUser};

/// How long a forwarded agent may take to sign (it may be asking its user to confirm).
const FORWARD_SIGN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a forwarded agent may take to list its keys or take a binding: a stuck client must
/// not hold up every `ssh` that only wants the keyport key.
const FORWARD_QUICK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most `session-bind@openssh.com` bindings one connection records (OpenSSH's agent: 16).
const MAX_BINDINGS: usize = 16;

/// One session's agent.
pub struct SessionAgent {
    /// The daemon's vault.
    pub vault: VaultHandle,
    /// Counters.
    pub metrics: Arc<DaemonMetrics>,
    /// The session's user.
    pub user: SessionUser,
    /// The session id the audit log names (`KEYPORT_SESSION`).
    pub session: u64,
    /// The SSH connection, when the client forwarded its agent.
    pub forward: Option<Handle>,
    /// How fast the session may sign.
    pub limit: SignLimit,
}

/// A session's signature rate: a bucket of `per_minute` signatures, refilled evenly. A
/// signature over the rate is refused (not made, so never unaudited) and counted; the count
/// is audited once when the session ends.
pub struct SignLimit {
    per_minute: u32,
    bucket: std::sync::Mutex<(f64, std::time::Instant)>,
    refused: std::sync::atomic::AtomicU64,
}

impl SignLimit {
    /// A full bucket of `per_minute`.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            bucket: std::sync::Mutex::new((f64::from(per_minute), std::time::Instant::now())),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes one signature from the bucket, if there is one.
    fn take(&self) -> bool {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, since) = &mut *bucket;
        let full = f64::from(self.per_minute);
        *tokens = (*tokens + since.elapsed().as_secs_f64() * full / 60.0).min(full);
        *since = std::time::Instant::now();
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            false
        }
    }
}

impl Drop for SessionAgent {
    /// The session is over: its refused signatures, if any, in one audit row.
    fn drop(&mut self) {
        let refused = self
            .limit
            .refused
            .load(std::sync::atomic::Ordering::Relaxed);
        if refused == 0 {
            return;
        }
        let (vault, user, session) = (self.vault.clone(), self.user.name.clone(), self.session);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let detail = serde_json::json!({ "session": session, "refused": refused });
                let _ = vault
                    .call(move |v| {
                        v.record_use(
                            &Actor::User(user.clone()),
                            &user,
                            "key.sign-refused",
                            detail.clone(),
                        )
                    })
                    .await;
            });
        }
    }
}

/// The process (or the workspace) on the other end of an agent connection, as the audit log
/// names it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its pid (a local session's process).
    pub pid: Option<i32>,
    /// Its executable (a local session's process).
    pub exe: Option<String>,
    /// The workspace whose sshd forwarded the request (relay mode).
    pub workspace: Option<String>,
}

/// What one local connection has learnt.
#[derive(Default)]
struct ConnState {
    /// Verified `session-bind@openssh.com` bindings: session id, host key fingerprint, and
    /// whether the connection forwards the agent on.
    bindings: Vec<(Vec<u8>, String, bool)>,
    /// Its agent channel to the client, once opened.
    forwarded: Option<ChannelStream<Msg>>,
    /// Whether that channel failed to open or to answer (then it is not tried again).
    forward_failed: bool,
}

impl SessionAgent {
    /// Answers agent requests on `stream` until it ends.
    pub async fn serve_stream<S>(&self, (mut stream, peer): (S, Peer))
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
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
            Request::Sign { .. } if !self.limit.take() => {
                self.metrics
                    .signatures_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(user = %self.user.name, session = self.session, "signature refused: rate exceeded");
                Response::Failure
            }
            Request::Sign { key, data, flags } => {
                let destination = state.destination_of(&data);
                match self.sign_own(&key, &data, peer, destination.clone()).await {
                    Ok(Some(signature)) => Response::Signature(signature),
                    Ok(None) => {
                        let request = (key, data, flags);
                        self.sign_forwarded(request, peer, destination, state).await
                    }
                    Err(e) => {
                        debug!(user = %self.user.name, error = %e, "agent signature failed");
                        Response::Failure
                    }
                }
            }
            Request::SessionBind(bind) => self.bind(bind, state).await,
            Request::Extension(_) | Request::Change(_) | Request::Unknown(_) => Response::Failure,
        }
    }

    /// The keyport key, then the client's keys when it forwarded its agent. The keyport key
    /// is always first (`keyport gitssh` relies on it).
    async fn identities(&self, state: &mut ConnState) -> Response {
        let who = self.user.clone();
        let listed = self.vault.call(move |v| {
            v.session_user(&who)?;
            v.user_key(&who.name)
        });
        let own = match listed.await {
            Ok(info) => PublicKey::from_openssh(&info.public_key)
                .ok()
                .and_then(|key| key.to_bytes().ok())
                .map(|key| Identity {
                    key,
                    comment: format!("keyport:{}", self.user.name),
                }),
            Err(e) => {
                debug!(user = %self.user.name, error = %e, "cannot read the user key");
                None
            }
        };
        let mut ids: Vec<Identity> = own.into_iter().collect();
        let theirs = self
            .relay(Request::Identities, FORWARD_QUICK_TIMEOUT, state)
            .await;
        if let Some(Response::Identities(theirs)) = theirs {
            for id in theirs {
                if !ids.iter().any(|known| known.key == id.key) {
                    ids.push(id);
                }
            }
        }
        Response::Identities(ids)
    }

    /// Signs with the keyport key if `key` is it (`None` otherwise), and audits it. Nothing
    /// is handed out that the audit log does not hold.
    async fn sign_own(
        &self,
        key: &[u8],
        data: &[u8],
        peer: &Peer,
        destination: Option<String>,
    ) -> Result<Option<Vec<u8>>, String> {
        let (who, key, data) = (self.user.clone(), key.to_vec(), data.to_vec());
        let (session, peer) = (self.session, peer.clone());
        let signed = self
            .vault
            .call(move |v| {
                v.session_user(&who)?;
                let pair: KeyPair = v.open_user_key(&who.name)?;
                if pair.public_blob()? != key {
                    return Ok(None);
                }
                let signature = pair.sign(&data)?;
                let kind = key_type(&pair.private().algorithm());
                let detail = sign_detail(
                    session,
                    &pair.fingerprint(),
                    kind,
                    "keyport",
                    &peer,
                    destination.as_deref(),
                );
                let actor = Actor::User(who.name.clone());
                v.record_use(&actor, &who.name, "key.sign", detail)?;
                Ok(Some((signature, kind)))
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(signed.map(|(signature, kind)| {
            self.metrics.count_signature(kind);
            signature
        }))
    }

    /// Relays a sign request for another key to the client's agent, and audits a signature.
    async fn sign_forwarded(
        &self,
        (key, data, flags): (Vec<u8>, Vec<u8>, u32),
        peer: &Peer,
        destination: Option<String>,
        state: &mut ConnState,
    ) -> Response {
        let public = PublicKey::from_bytes(&key).ok();
        let request = Request::Sign { key, data, flags };
        let relayed = self.relay(request, FORWARD_SIGN_TIMEOUT, state).await;
        let Some(Response::Signature(signature)) = relayed else {
            return Response::Failure;
        };
        let (fingerprint, kind) = public.map_or_else(
            || ("unknown".to_string(), "other"),
            |k| {
                let fingerprint = k.fingerprint(HashAlg::Sha256).to_string();
                (fingerprint, key_type(&k.algorithm()))
            },
        );
        self.metrics.count_signature(kind);
        let detail = sign_detail(
            self.session,
            &fingerprint,
            kind,
            "forwarded",
            peer,
            destination.as_deref(),
        );
        let user = self.user.name.clone();
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

    /// Records a verified binding (and passes it on to the client's agent, which may hold
    /// destination-constrained keys). Like OpenSSH's agent: once bound for authentication
    /// (not forwarding), a connection takes no further binding.
    async fn bind(&self, bind: SessionBind, state: &mut ConnState) -> Response {
        let Ok(fingerprint) = bind.host_fingerprint() else {
            return Response::Failure;
        };
        let bound_for_auth = state.bindings.iter().any(|(_, _, forwarding)| !forwarding);
        if bound_for_auth || state.bindings.len() >= MAX_BINDINGS {
            return Response::Failure;
        }
        state
            .bindings
            .push((bind.session_id.clone(), fingerprint, bind.forwarding));
        let request = Request::SessionBind(bind);
        let _ = self.relay(request, FORWARD_QUICK_TIMEOUT, state).await;
        Response::Success
    }

    /// One request to the client's agent over this connection's agent channel (opened on
    /// first need); `None` when the client forwarded no agent or it did not answer in time.
    async fn relay(
        &self,
        request: Request,
        limit: Duration,
        state: &mut ConnState,
    ) -> Option<Response> {
        let handle = self.forward.as_ref()?;
        if state.forward_failed {
            return None;
        }
        if state.forwarded.is_none() {
            let open = handle.channel_open_agent();
            match tokio::time::timeout(FORWARD_QUICK_TIMEOUT, open).await {
                Ok(Ok(channel)) => state.forwarded = Some(channel.into_stream()),
                _ => {
                    debug!(user = %self.user.name, "the client refused an agent channel");
                    state.forward_failed = true;
                    return None;
                }
            }
        }
        let stream = state.forwarded.as_mut()?;
        let exchange = async {
            write_frame(stream, &request.encode()).await?;
            read_frame(stream).await
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(Some(payload))) => Response::parse(&payload).ok(),
            _ => {
                // Out of step or stuck: not used again by this connection.
                state.forwarded = None;
                state.forward_failed = true;
                None
            }
        }
    }
}

impl ConnState {
    /// The bound destination `data` is for: a user-authentication request (RFC 4252) starts
    /// with the id of the session it was made in. Data of another shape, or from a session
    /// that was not bound on this connection, has none.
    fn destination_of(&self, data: &[u8]) -> Option<String> {
        const USERAUTH_REQUEST: u8 = 50;
        let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
        let end = 4usize.checked_add(len)?;
        let session_id = data.get(4..end)?;
        if data.get(end) != Some(&USERAUTH_REQUEST) {
            return None;
        }
        self.bindings
            .iter()
            .find(|(id, _, _)| id == session_id)
            .map(|(_, fingerprint, _)| fingerprint.clone())
    }
}

/// The metrics label for a key algorithm: a fixed set, so no client can mint new series.
fn key_type(algorithm: &Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ed25519 => "ssh-ed25519",
        Algorithm::Ecdsa { curve } => match curve {
            EcdsaCurve::NistP256 => "ecdsa-sha2-nistp256",
            EcdsaCurve::NistP384 => "ecdsa-sha2-nistp384",
            EcdsaCurve::NistP521 => "ecdsa-sha2-nistp521",
        },
        Algorithm::Rsa { .. } => "ssh-rsa",
        Algorithm::SkEd25519 => "sk-ssh-ed25519",
        Algorithm::SkEcdsaSha2NistP256 => "sk-ecdsa-sha2-nistp256",
        _ => "other",
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
        "key_source": source, "pid": peer.pid, "exe": peer.exe, "workspace": peer.workspace,
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

#[cfg(test)]
mod tests {
    use super::ConnState;

    /// A userauth request as `ssh` signs it: session id, then message 50, then the rest.
    fn userauth(session_id: &[u8]) -> Vec<u8> {
        let mut data = (session_id.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(session_id);
        data.push(50);
        data.extend_from_slice(b"\0\0\0\x03git");
        data
    }

    #[test]
    fn a_signature_names_only_the_destination_its_own_session_was_bound_to() {
        let state = ConnState {
            bindings: vec![(vec![1; 32], "SHA256:host-x".into(), false)],
            ..ConnState::default()
        };
        assert_eq!(
            state.destination_of(&userauth(&[1; 32])).as_deref(),
            Some("SHA256:host-x")
        );
        // Another session's userauth data, data of another shape, truncated data: nothing.
        assert_eq!(state.destination_of(&userauth(&[2; 32])), None);
        let mut other = userauth(&[1; 32]);
        other[36] = 51;
        assert_eq!(state.destination_of(&other), None);
        assert_eq!(state.destination_of(&[0, 0, 0, 32, 1, 1]), None);
        assert_eq!(state.destination_of(&[0xff; 4]), None);
        assert_eq!(state.destination_of(&[]), None);
    }
}
