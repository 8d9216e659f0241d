//! What both TCP listeners (SSH and the API) do when `accept` fails: out of descriptors, give
//! back a reserved one so the waiting connection can be accepted and closed at once (the
//! backlog cannot pin the daemon, and a later real client finds room), then back off instead
//! of spinning on the error; any other error is logged and retried after the same pause.

use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{debug, warn};

/// How long an accept loop pauses after a failed accept.
pub const BACKOFF: Duration = Duration::from_millis(50);

/// One descriptor held back for the moment the process runs out.
pub struct Reserve(Option<std::fs::File>);

impl Reserve {
    /// Holds one descriptor (`/dev/null`).
    pub fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Handles a failed `accept` on `listener` (`what` names it in the log).
    pub async fn recover(&mut self, listener: &TcpListener, error: &std::io::Error, what: &str) {
        if out_of_descriptors(error) {
            warn!(listener = what, error = %error, "out of file descriptors: shedding a waiting connection");
            drop(self.0.take());
            if let Ok(Ok((shed, _))) =
                tokio::time::timeout(Duration::from_millis(5), listener.accept()).await
            {
                drop(shed);
            }
            if self.0.is_none() {
                self.0 = std::fs::File::open("/dev/null").ok();
            }
        } else {
            debug!(listener = what, error = %error, "accept failed");
        }
        tokio::time::sleep(BACKOFF).await;
    }
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}
