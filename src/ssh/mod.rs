//! The SSH server (russh): public-key logins against each user's login keys, and session
//! channels — pty shells, exec, the sftp subsystem — run as the user's OS account with the
//! user's current secrets in their environment.
//!
//! [`run`] owns the accept loop; it never binds by itself, so tests start it on port 0. On
//! shutdown it stops accepting, tells every client, and waits for every connection and channel
//! task (their children are killed and reaped when the tasks end).
//!
//! # Layout
//! - `handler.rs`: the thin russh `Handler`: authenticate, accept channels, reply to requests.
//! - `channel.rs`: one task per session channel: collect pty/env requests, start, relay I/O.
//! - `input.rs`: client input to the program, flow-controlled through the SSH window.
//! - `process.rs`: who the process runs as, its start-up state (session, umask, limits), signals.
//! - `terminal.rs`: the pty's modes, window size and breaks.
//! - `forward.rs`: `ssh -L` / `ssh -R`, under the `[forwarding]` policy.
//! - `files.rs`: writing file secrets (as the OS user) and the ledger of what was written.
//! - `quickack.rs`: prompt TCP ACKs during the handshake.
//! - `sessiondir.rs`: each session's private directory: agent socket, in-session API socket.
//! - `reaper.rs`: the companion process that ends live sessions if the daemon is killed.

mod channel;
mod files;
mod forward;
mod handler;
mod input;
mod process;
mod quickack;
pub mod reaper;
pub mod sessiondir;
mod terminal;

pub use process::remember_limits;

pub use files::{Applied, materialize, materialize_owner};

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::PrivateKey;
use russh::server::{self, Handle};
use russh::{Disconnect, MethodKind, MethodSet, SshId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::metrics::DaemonMetrics;
use crate::shared::VaultHandle;

/// What every connection shares.
pub struct SshContext {
    /// The daemon's vault.
    pub vault: VaultHandle,
    /// Client env names sessions accept (`AcceptEnv`).
    pub accept_env: Vec<String>,
    /// Operator env for every session.
    pub operator_env: BTreeMap<String, String>,
    /// Counters.
    pub metrics: Arc<DaemonMetrics>,
    /// Owns every connection and channel task.
    pub tasks: TaskTracker,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// The API router, served to each session on its private socket (none in tests of the
    /// SSH server alone).
    pub session_api: Option<axum::Router>,
    /// The daemon's binary, as sessions' `GIT_SSH_COMMAND` runs it.
    pub keyport_binary: String,
    /// What the last file-secret pass per user left (to skip passes that change nothing).
    pub applied: Applied,
    /// The umask session programs start with (`[ssh] umask`).
    pub umask: u32,
    /// `[forwarding]`.
    forwarding: forward::Policy,
    /// Where live session directories are recorded, so a restart after a crash removes them.
    pub session_records: Option<std::path::PathBuf>,
    /// Ends live sessions' processes if the daemon dies without doing it.
    pub reaper: Option<reaper::Reaper>,
    /// Failed connections from one address for one user name within `failure_window` before
    /// that address is turned away for that name (per name, so one local user cannot lock
    /// every other user out of a loopback listener): `[ssh] login_failures`.
    max_failures: u32,
    /// `[ssh] login_failure_window_secs`.
    failure_window: Duration,
    failures: Mutex<HashMap<(IpAddr, String), (u32, Instant)>>,
    next_id: AtomicU64,
}

impl SshContext {
    /// A context for the daemon, with `config`'s sessions, limits and forwarding policy.
    pub fn new(
        vault: VaultHandle,
        metrics: Arc<DaemonMetrics>,
        shutdown: CancellationToken,
        session_api: Option<axum::Router>,
        config: &crate::config::Config,
    ) -> Self {
        let settings = &config.ssh;
        // Already done by `keyport serve` before it lowered any limit; for library users too.
        process::remember_limits();
        Self {
            vault,
            accept_env: config.accept_env.clone(),
            operator_env: config.env.clone(),
            metrics,
            tasks: TaskTracker::new(),
            shutdown,
            session_api,
            keyport_binary: sessiondir::keyport_binary(),
            applied: Applied::default(),
            umask: settings.umask_bits().unwrap_or(0o022),
            forwarding: forward::Policy::new(&config.forwarding),
            session_records: None,
            reaper: None,
            max_failures: settings.login_failures,
            failure_window: Duration::from_secs(settings.login_failure_window_secs),
            failures: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `ip` failed too often lately, logging in as `user`, to be listened to.
    fn blocked(&self, ip: IpAddr, user: &str) -> bool {
        lock(&self.failures)
            .get(&(ip, user.to_string()))
            .is_some_and(|(n, since)| {
                *n >= self.max_failures && since.elapsed() < self.failure_window
            })
    }

    /// Counts a failed connection from `ip` for `user`.
    fn record_failure(&self, ip: IpAddr, user: &str) {
        self.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&self.failures);
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| since.elapsed() < self.failure_window);
        }
        let entry = map
            .entry((ip, user.to_string()))
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.failure_window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// The russh settings keyport runs with (see notes/russh.md §3 and §10).
pub fn server_config(host_key: PrivateKey, ssh: &crate::config::SshSettings) -> server::Config {
    server::Config {
        // The comment names the OpenSSH sftp-server keyport runs: sftp clients that adjust to
        // its SYMLINK argument order look for "OpenSSH" in the server's version (README.md).
        server_id: SshId::Standard(
            format!(
                "SSH-2.0-keyport_{} OpenSSH-compatible",
                env!("CARGO_PKG_VERSION")
            )
            .into(),
        ),
        keys: vec![host_key],
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // OpenSSH offers every agent key in turn: each rejected offer waits this long.
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle shells stay; dead peers are found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(20)),
        keepalive_max: 3,
        nodelay: true,
        // Per channel; granted back only as the program consumes (vendor/russh/README.md).
        window_size: ssh.channel_window,
        // Fewer, larger packets for bulk data (russh warns above 65535).
        maximum_packet_size: ssh.max_packet,
        // russh's defaults, plus aes128-gcm (which OpenSSH offers too).
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(&[
                russh::cipher::CHACHA20_POLY1305,
                russh::cipher::AES_128_GCM,
                russh::cipher::AES_256_GCM,
                russh::cipher::AES_256_CTR,
                russh::cipher::AES_192_CTR,
                russh::cipher::AES_128_CTR,
            ]),
            // As sshd: compression only after authentication, when the client asks (ssh -C).
            compression: std::borrow::Cow::Borrowed(&[
                russh::compression::NONE,
                russh::compression::ZLIB_LEGACY,
            ]),
            ..russh::Preferred::default()
        },
        channel_buffer_size: 128,
        event_buffer_size: 100,
        ..Default::default()
    }
}

/// Serves SSH on `listener` until `ctx.shutdown` is cancelled, then disconnects every client
/// and waits for their tasks.
pub async fn run(listener: TcpListener, ctx: Arc<SshContext>, config: server::Config) {
    let config = Arc::new(config);
    let handles: Arc<Mutex<HashMap<u64, Handle>>> = Arc::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let id = ctx.next_id();
        let handler = handler::Connection::new(ctx.clone(), peer, local, id);
        let config = config.clone();
        let handles = handles.clone();
        ctx.tasks.spawn(async move {
            let stream = quickack::QuickAck::new(stream);
            match server::run_stream(config, stream, handler).await {
                Ok(running) => {
                    lock(&handles).insert(id, running.handle());
                    if let Err(e) = running.await {
                        debug!(connection = id, error = %e, "connection ended with an error");
                    }
                    lock(&handles).remove(&id);
                }
                Err(e) => debug!(connection = id, error = %e, "ssh handshake failed"),
            }
        });
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
