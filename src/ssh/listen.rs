//! The accept loop. Before any cryptography a new connection must get a place at the gate
//! (`gate.rs`) and come from an address not turned away for failed logins; it then has the
//! login grace time to log in, and loses its place if a newer connection from its address
//! took it. Out of descriptors, the loop sheds what waits and backs off (`crate::accept`).
//! On shutdown it stops accepting, tells every client, and waits for every task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::Disconnect;
use russh::server::{self, Handle};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, info};

use super::{SshContext, handler, lock, quickack};
use crate::vault::Actor;

/// Serves SSH on `listener` until `ctx.shutdown` is cancelled, then disconnects every client
/// and waits for their tasks.
pub async fn run(listener: TcpListener, ctx: Arc<SshContext>, config: server::Config) {
    let config = Arc::new(config);
    let handles: Arc<Mutex<HashMap<u64, Handle>>> = Arc::default();
    ctx.tasks.spawn(super::revoke::watch(ctx.clone()));
    ctx.tasks.spawn(super::live::watch(ctx.clone()));
    ctx.tasks.spawn(audit_failures(ctx.clone()));
    ctx.tasks.spawn(super::trim::watch(ctx.clone()));
    let workers = super::workers::Workers::start(ctx.connection_threads);
    let mut reserve = crate::accept::Reserve::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    reserve.recover(&listener, &e, "ssh").await;
                    continue;
                }
            },
        };
        if ctx.failed.address_blocked(peer.ip()) {
            debug!(source = %peer, "turned away: too many failed logins");
            continue;
        }
        let Some(ticket) = ctx.gate.admit(peer.ip()) else {
            debug!(source = %peer, held = ctx.gate.held(), "dropped: too many unauthenticated connections");
            // As sshd says it, for whoever wonders why (never waits: the socket is new).
            let _ = stream.try_write(b"Exceeded MaxStartups\r\n");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        // Its thread's runtime takes the socket over (`workers.rs`).
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                debug!(source = %peer, error = %e, "dropped: cannot hand the connection over");
                continue;
            }
        };
        let (runtime, place) = workers.pick();
        let id = ctx.next_id();
        let evicted = ticket.evicted();
        let authenticated = Arc::new(AtomicBool::new(false));
        // Past the banner russh runs the session in a task of its own, which owns the stream:
        // cutting the stream is what ends it early (grace, eviction, revocation, shutdown).
        let cut = CancellationToken::new();
        let handler = handler::Connection::new(
            ctx.clone(),
            peer,
            local,
            id,
            handler::PreAuth {
                ticket,
                authenticated: authenticated.clone(),
                cut: cut.clone(),
            },
        );
        let (config, handles, grace) = (config.clone(), handles.clone(), ctx.grace);
        let shutdown = ctx.shutdown.clone();
        let connection = async move {
            let _place = place;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(connection = id, error = %e, "cannot take the connection over");
                    return;
                }
            };
            let stream = Cutoff::new(quickack::QuickAck::new(stream), cut.clone());
            let session = async {
                match server::run_stream(config, stream, handler).await {
                    Ok(running) => {
                        let _registered = Registered::new(&handles, id, running.handle());
                        if let Err(e) = running.await {
                            debug!(connection = id, error = %e, "connection ended with an error");
                        }
                    }
                    Err(e) => debug!(connection = id, error = %e, "ssh handshake failed"),
                }
            };
            tokio::pin!(session);
            let deadline = tokio::time::sleep(grace);
            tokio::pin!(deadline);
            let mut timing = true;
            let why = loop {
                tokio::select! {
                    () = &mut session => return,
                    () = evicted.cancelled(), if !authenticated.load(Ordering::Acquire) => {
                        // Logged in meanwhile (the guard was read before the login): stays.
                        if !authenticated.load(Ordering::Acquire) {
                            break "replaced by a newer connection from its address";
                        }
                    }
                    // (Guards are read when the select starts, which may be before the login:
                    // every branch looks again.)
                    () = shutdown.cancelled(), if !authenticated.load(Ordering::Acquire) => {
                        if !authenticated.load(Ordering::Acquire) {
                            break "shutting down";
                        }
                    }
                    () = &mut deadline, if timing => {
                        if !authenticated.load(Ordering::Acquire) {
                            break "login grace time over";
                        }
                        timing = false;
                    }
                }
            };
            debug!(
                connection = id,
                why, "closing an unauthenticated connection"
            );
            cut.cancel();
        };
        ctx.tasks.spawn_on(connection, &runtime);
    }
    info!("ssh: shutting down");
    // Tell every client at once; none may hold up the shutdown.
    let open: Vec<Handle> = lock(&handles).values().cloned().collect();
    let told: Vec<_> = open
        .into_iter()
        .map(|handle| {
            tokio::spawn(async move {
                let bye = handle.disconnect(
                    Disconnect::ByApplication,
                    "keyport is shutting down".into(),
                    "en".into(),
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
            })
        })
        .collect();
    for task in told {
        let _ = task.await;
    }
    ctx.tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), ctx.tasks.wait())
        .await
        .is_err()
    {
        debug!("ssh: some sessions did not end within 10 s");
    }
    // The failures of connections that ended while the daemon shut down too.
    for row in ctx.failed.flush() {
        audit_failure(&ctx, row).await;
    }
}

/// A stream that fails every read and write once its token is cancelled (waking a pending
/// read), so whoever owns it — russh's session task — ends and closes it.
struct Cutoff<S> {
    inner: S,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Cutoff<S> {
    fn new(inner: S, cut: CancellationToken) -> Self {
        Self {
            inner,
            cut: Box::pin(cut.cancelled_owned()),
        }
    }

    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        self.cut.as_mut().poll(cx).is_ready()
    }
}

fn cut_off() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by keyport",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Cutoff<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cutoff<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's handle in the shutdown list while it runs, however its task ends.
struct Registered<'a> {
    handles: &'a Mutex<HashMap<u64, Handle>>,
    id: u64,
}

impl<'a> Registered<'a> {
    fn new(handles: &'a Mutex<HashMap<u64, Handle>>, id: u64, handle: Handle) -> Self {
        lock(handles).insert(id, handle);
        Self { handles, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.handles).remove(&self.id);
    }
}

/// Writes the failed logins not audited yet, one row per address, every counting window (and
/// once more when every connection has ended, in [`run`]).
async fn audit_failures(ctx: Arc<SshContext>) {
    let mut tick = tokio::time::interval(ctx.failed.window());
    tick.tick().await;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for row in ctx.failed.flush() {
            audit_failure(&ctx, row).await;
        }
    }
}

/// One audit row of failed logins.
pub(super) async fn audit_failure(ctx: &SshContext, row: super::logins::FailureRow) {
    let user = row.users.first().cloned().unwrap_or_default();
    let detail = json!({
        "source": row.source.to_string(),
        "failures": row.failures,
        "users": row.users,
        "window_secs": ctx.failed.window().as_secs(),
    });
    let _ = ctx
        .vault
        .call(move |v| v.record_use(&Actor::System, &user, "ssh.login-failed", detail.clone()))
        .await;
}
