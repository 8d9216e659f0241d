//! The API's TCP listener, with the limits `axum::serve` does not have: a header-read timeout
//! (half-sent requests are closed; hyper also applies it to a kept-alive connection waiting for
//! its next request), an idle timeout (no byte either way — a client that stopped reading its
//! response), and a cap on connections. At the cap a new connection takes the place of the oldest one that is not
//! handling a request (a slowloris connection never is), so a flood of idle or half-sent
//! connections cannot keep `keyport secret list` out; only when every connection is busy with
//! a real request is the new one closed. Out of descriptors, the loop sheds what waits and
//! backs off (`crate::accept`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

use crate::config::HttpSettings;
use crate::tap::Tap;

/// The connections being served, oldest first.
#[derive(Default)]
struct Connections(Mutex<BTreeMap<u64, Served>>);

struct Served {
    busy: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Served>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes room for one more under `cap`: ends the oldest connection not handling a
    /// request. Returns false if every one is busy.
    fn make_room(&self, cap: usize) -> bool {
        let mut map = self.lock();
        if map.len() < cap {
            return true;
        }
        let idle = map
            .iter()
            .find(|(_, s)| !s.busy.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        match idle.and_then(|id| map.remove(&id)) {
            Some(served) => {
                served.stop.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, within `settings`' limits.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    settings: &HttpSettings,
) -> std::io::Result<()> {
    let connections = Arc::new(Connections::default());
    let cap = settings.max_connections as usize;
    let header_timeout = Duration::from_secs(settings.header_timeout_secs);
    let idle_timeout = Duration::from_secs(settings.idle_timeout_secs);
    let stop_all = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    let mut next = 0u64;
    let mut reserve = crate::accept::Reserve::new();
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    reserve.recover(&listener, &e, "api").await;
                    continue;
                }
            },
        };
        if !connections.make_room(cap) {
            debug!("api: every connection is busy; closing a new one");
            continue;
        }
        next += 1;
        let (id, busy, stop) = (
            next,
            Arc::new(AtomicBool::new(false)),
            CancellationToken::new(),
        );
        connections.lock().insert(
            id,
            Served {
                busy: busy.clone(),
                stop: stop.clone(),
            },
        );
        let activity = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let touch = {
            let activity = activity.clone();
            move |_| {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                activity.store(ms, Ordering::Relaxed);
            }
        };
        let io = TokioIo::new(Tap::new(stream, touch.clone(), touch));
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| {
            let router = router.clone();
            let busy = Busy::new(busy.clone());
            async move {
                // Busy until the whole response is written, not just until the handler ends.
                let response = router.oneshot(request).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| axum::body::Body::new(Guarded { body, _busy: busy })),
                )
            }
        });
        let shutting_down = stop_all.clone();
        let connections = connections.clone();
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(io, service);
            tokio::pin!(conn);
            let idle = watch_idle(&activity, started, idle_timeout);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(error = %e, "api connection ended with an error");
                    }
                }
                () = idle => debug!("api connection idle: closed"),
                () = stop.cancelled() => debug!("api connection closed to make room"),
                () = shutting_down.cancelled() => {
                    // In-flight requests finish (briefly); idle connections close now.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                }
            }
            connections.lock().remove(&id);
        });
    }
    stop_all.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    Ok(())
}

/// Resolves once the connection saw no bytes either way for `idle`.
async fn watch_idle(activity: &AtomicU64, started: Instant, idle: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let quiet_until = started + last + idle;
        if Instant::now() >= quiet_until {
            return;
        }
        tokio::time::sleep_until(quiet_until.into()).await;
    }
}

/// A response body that keeps its connection marked busy until it is dropped.
struct Guarded {
    body: axum::body::Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Marks a connection busy while a request is handled.
struct Busy(Arc<AtomicBool>);

impl Busy {
    fn new(flag: Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
