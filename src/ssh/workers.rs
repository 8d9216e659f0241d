//! Connection threads. Each SSH connection runs, from its banner to its close, on one of a few
//! threads, each with a single-threaded tokio runtime of its own (the layout actix-web's
//! workers use); the accept loop gives a new connection to the thread holding the fewest.
//!
//! Why: a connection's tasks — russh's session loop, each channel, the copies to and from its
//! programs — hand every chunk of data to one another. On the daemon's shared work-stealing
//! runtime the two ends of each hand-off ran on different threads, so every 20–30 KiB of a
//! download woke the other CPU and switched contexts on both; on one thread they hand off as
//! sshd's one process per connection does (benches/RESULTS.md, performance issue, second part).
//! The daemon's own tasks (API, pages, watchers) stay on the shared runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The connection threads; they end once this is dropped (their runtimes' tasks with them).
pub(super) struct Workers {
    threads: Vec<Worker>,
    stop: CancellationToken,
}

struct Worker {
    runtime: Handle,
    connections: Arc<AtomicUsize>,
}

/// A connection's place on its thread, given back when the connection's task ends.
pub(super) struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` threads (0: one per CPU). A thread that cannot start is left out; with
    /// none, connections run on the caller's runtime.
    pub(super) fn start(count: u32) -> Self {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        let stop = CancellationToken::new();
        let threads = (0..count)
            .filter_map(|i| match Self::thread(i, stop.clone()) {
                Ok(worker) => Some(worker),
                Err(e) => {
                    warn!(error = %e, "cannot start a connection thread");
                    None
                }
            })
            .collect();
        Self { threads, stop }
    }

    fn thread(index: usize, stop: CancellationToken) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name(format!("ssh-conn-{index}"))
            .spawn(move || {
                runtime.block_on(stop.cancelled());
                // What is left (tasks the shutdown's wait gave up on) goes with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(Worker {
            runtime: handle,
            connections: Arc::default(),
        })
    }

    /// The runtime a new connection runs on: the thread holding the fewest connections.
    pub(super) fn pick(&self) -> (Handle, Option<Place>) {
        let least = self
            .threads
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed));
        match least {
            Some(worker) => {
                worker.connections.fetch_add(1, Ordering::Relaxed);
                (
                    worker.runtime.clone(),
                    Some(Place(worker.connections.clone())),
                )
            }
            None => (Handle::current(), None),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn thread_of(runtime: &Handle) -> String {
        let name = runtime.spawn(async { std::thread::current().name().map(str::to_owned) });
        name.await.unwrap().unwrap_or_default()
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread_and_leave_it() {
        let workers = Workers::start(2);
        let (a, place_a) = workers.pick();
        let (b, place_b) = workers.pick();
        // Tasks run there, off the caller's runtime; the second goes to the idle thread.
        assert_eq!(thread_of(&a).await, "ssh-conn-0");
        assert_eq!(thread_of(&b).await, "ssh-conn-1");
        drop(place_a);
        let (c, _place_c) = workers.pick();
        assert_eq!(
            thread_of(&c).await,
            "ssh-conn-0",
            "the thread given back is the least loaded again"
        );
        drop(place_b);
    }
}
