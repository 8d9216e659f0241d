//! Handing the memory of ended sessions back to the system. glibc's allocator keeps what was
//! freed in its arenas (one per thread that allocated, up to eight per core), so a daemon that
//! once held thousands of sessions would stay that large after they all ended. A few times a
//! minute at most, once the number of running sessions has fallen, `malloc_trim(0)` returns
//! every free page (off the async workers: it walks every arena).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::SshContext;

/// How often the session count is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// Sessions that must have ended since the last trim (or all of them) for another.
const ENDED: i64 = 32;

/// Runs until shutdown.
pub async fn watch(ctx: Arc<SshContext>) {
    let mut peak = 0i64;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        let now = ctx.metrics.sessions_active.load(Ordering::Relaxed);
        if peak - now >= ENDED || (now == 0 && peak > 0) {
            let _ = tokio::task::spawn_blocking(trim).await;
            peak = now;
        } else {
            peak = peak.max(now);
        }
    }
}

#[cfg(target_env = "gnu")]
fn trim() {
    // SAFETY: glibc's allocator call, thread-safe; it only releases free memory.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn trim() {}
