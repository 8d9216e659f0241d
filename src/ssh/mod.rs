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
//! - `prepare.rs`: what a session gets (identity, environment, files, directory), once.
//! - `input.rs`: client input to the program, flow-controlled through the SSH window.
//! - `process.rs`: who the process runs as, its argv, signals.
//! - `spawn.rs`: starting it without copying the daemon (a vfork-style clone on a thread of
//!   its own), with its session, limits, umask and identity, and waiting for it.
//! - `terminal.rs`: the pty's modes, window size and breaks.
//! - `forward.rs`: `ssh -L` / `ssh -R`, under the `[forwarding]` policy.
//! - `files.rs`: writing file secrets (as the OS user) and the ledger of what was written.
//! - `live.rs`: a changed file secret applied to the user's live sessions within a second.
//! - `quickack.rs`: prompt TCP ACKs during the handshake.
//! - `sessiondir.rs`: each session's private directory: agent socket, in-session API socket.
//! - `trim.rs`: freed memory handed back to the system once sessions have ended.
//! - `reaper.rs`: the companion process that ends live sessions if the daemon is killed.
//!
//! A login as `user:workspace` runs its sessions on the workspace instead (`crate::relay`):
//! the same requests, collected the same way, go to an upstream channel.

mod channel;
mod files;
mod forward;
mod gate;
mod handler;
mod input;
mod listen;
mod live;
mod logins;
pub(crate) mod prepare;
mod process;
mod quickack;
pub mod reaper;
mod revoke;
pub mod sessiondir;
mod spawn;
mod terminal;
mod trim;
mod vfork;
mod workers;

pub use listen::run;
pub use process::{SFTP_SERVERS, sftp_server};
pub use spawn::remember_limits;

pub use channel::{Asked, Control, Login, PtyRequest};
pub use files::{Applied, materialize, materialize_owner};
pub use live::{LiveUpstream, Rewritten, Seen};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server;
use russh::{MethodKind, MethodSet, SshId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// What the last file-secret pass at each live place applied (`live.rs`).
    pub live_files: Seen,
    /// The umask session programs start with (`[ssh] umask`).
    pub umask: u32,
    /// `[forwarding]`.
    forwarding: forward::Policy,
    /// Where live session directories are recorded, so a restart after a crash removes them.
    pub session_records: Option<std::path::PathBuf>,
    /// Ends live sessions' processes if the daemon dies without doing it.
    pub reaper: Option<reaper::Reaper>,
    /// Failed logins, counted per address and name and per address, audited coalesced.
    failed: logins::FailedLogins,
    /// Logged-in connections (per-user cap, revocation).
    live: logins::LiveLogins,
    /// Unauthenticated connections' places (`MaxStartups`, per-source cap).
    gate: Arc<gate::Gate>,
    /// `[ssh] login_grace_secs`.
    grace: Duration,
    /// `[ssh] max_sessions`, `max_connections_per_user`, `client_env_bytes`.
    max_sessions: usize,
    max_connections_per_user: usize,
    client_env_bytes: usize,
    /// `[ssh] agent_signatures_per_minute`, per session.
    pub signatures_per_minute: u32,
    /// `[ssh] channel_window`: also the upstream leg's in relay mode.
    pub channel_window: u32,
    /// Relay mode: `[relay]` and the upstreams failing lately.
    pub relay: crate::relay::Relay,
    /// Starts session programs, off the async workers.
    spawner: spawn::Spawner,
    /// `[ssh] connection_threads`.
    connection_threads: u32,
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
        spawn::remember_limits();
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
            live_files: Seen::default(),
            umask: settings.umask_bits().unwrap_or(0o022),
            forwarding: forward::Policy::new(&config.forwarding),
            session_records: None,
            reaper: None,
            failed: logins::FailedLogins::new(settings),
            live: logins::LiveLogins::default(),
            gate: gate::Gate::new(
                // Checked when the config was loaded.
                settings.startups().unwrap_or_default(),
                settings.per_source_startups,
                settings.per_source_rate,
            ),
            grace: Duration::from_secs(settings.login_grace_secs),
            max_sessions: settings.max_sessions as usize,
            max_connections_per_user: settings.max_connections_per_user as usize,
            client_env_bytes: settings.client_env_bytes as usize,
            signatures_per_minute: settings.agent_signatures_per_minute,
            channel_window: settings.channel_window,
            relay: crate::relay::Relay::new(config.relay.clone(), config.ca.clone()),
            spawner: spawn::Spawner::new(),
            connection_threads: settings.connection_threads,
            next_id: AtomicU64::new(1),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new session id (`KEYPORT_SESSION`, the audit log's `session`).
    pub fn next_session_id(&self) -> u64 {
        self.next_id()
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
        // sshd's MaxAuthTries: the connection is told so and closed.
        max_auth_attempts: ssh.max_auth_tries as usize,
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
            // No DH group above 4096 bits (group17/18 make a DHEat flood cheap); the group
            // exchange picks from russh's 2048- and 4096-bit groups.
            kex: std::borrow::Cow::Borrowed(&[
                russh::kex::MLKEM768X25519_SHA256,
                russh::kex::CURVE25519,
                russh::kex::CURVE25519_PRE_RFC_8731,
                russh::kex::DH_GEX_SHA256,
                russh::kex::DH_G16_SHA512,
                russh::kex::DH_G14_SHA256,
                russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
                russh::kex::EXTENSION_SUPPORT_AS_SERVER,
                russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
                russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
