//! A session's private directory (`/tmp/keyport-XXXXXXXX`, 0700, owned by the session's OS
//! user): the agent socket (`SSH_AUTH_SOCK`), the in-session API socket the CLI finds through
//! `KEYPORT_SESSION_DIR`, and the user key's public half for `keyport gitssh`. The daemon
//! serves both sockets; dropping the [`SessionDir`] stops them and removes the directory.
//!
//! Everything is created while the directory still belongs to the daemon, and handed to the
//! user last (without following links), so no process of the user's can swap an entry for a
//! link to something the daemon would then chown.
//!
//! Each live directory is recorded in the data dir ([`RECORDS_DIR`]); the daemon's next start
//! removes those a crashed daemon left ([`sweep`]), and only those.
//!
//! Both sockets answer only the session's uid (and the daemon's own), checked with
//! `SO_PEERCRED` on every connection; each holds at most [`MAX_CONNECTIONS`] connections, and
//! every one of them reads end-of-file once the session is over, whatever state it is in.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::fcntl::AtFlags;
use nix::unistd::{Gid, Uid};
use russh::server::Handle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::debug;

use super::SshContext;
use super::process::Identity;
use crate::agent::{self, Peer, SessionAgent};
use crate::vault::SessionUser;

/// The agent socket's name in a session directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The in-session API socket's name.
pub const API_SOCKET: &str = "api.sock";
/// The user key's public half (the only key material in the directory).
pub const PUBLIC_KEY: &str = "id.pub";
/// The directory, appended to the session's `PATH`, that holds `keyport` (a link to the
/// daemon's own binary), so the in-session CLI works whatever `PATH` the session has.
pub const BIN_DIR: &str = "bin";
/// The variable naming the directory in a session.
pub const SESSION_DIR_ENV: &str = "KEYPORT_SESSION_DIR";
/// Most connections one session socket holds at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The data-dir subdirectory recording live session directories, one file each.
pub const RECORDS_DIR: &str = "sessions";
/// What every session directory's name starts with.
const PREFIX: &str = "keyport-";

/// A live session directory; removed on drop.
pub struct SessionDir {
    path: PathBuf,
    stop: CancellationToken,
    record: Option<PathBuf>,
}

impl SessionDir {
    /// Creates the directory for `session` of `user` and starts serving its sockets.
    /// `forward` is the connection when the client forwarded its agent.
    pub async fn create(
        ctx: &Arc<SshContext>,
        identity: &Identity,
        user: SessionUser,
        session: u64,
        forward: Option<Handle>,
    ) -> std::io::Result<Self> {
        let who = user.clone();
        let public = ctx
            .vault
            .call(move |v| {
                v.session_user(&who)?;
                v.user_key(&who.name)
            })
            .await
            .map_err(|e| std::io::Error::other(format!("cannot read your key: {e}")))?
            .public_key;
        let template = std::env::temp_dir().join(format!("{PREFIX}XXXXXXXX"));
        let path = nix::unistd::mkdtemp(&template)?;
        // From here on, dropping `dir` cleans up whatever was made.
        let mut dir = Self {
            path,
            stop: CancellationToken::new(),
            record: None,
        };
        if let Some(records) = &ctx.session_records {
            dir.record = Some(record(records, &dir.path, identity.os.uid)?);
        }
        let agent_listener = dir.bind(AGENT_SOCKET)?;
        let api_listener = dir.bind(API_SOCKET)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(dir.path.join(PUBLIC_KEY))
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, format!("{public}\n").as_bytes())
            })?;
        let bin = dir.path.join(BIN_DIR);
        std::fs::DirBuilder::new().mode(0o700).create(&bin)?;
        std::os::unix::fs::symlink(&ctx.keyport_binary, bin.join("keyport"))?;
        let os = &identity.os;
        if identity.switch.is_some() {
            for entry in [
                AGENT_SOCKET,
                API_SOCKET,
                PUBLIC_KEY,
                "bin/keyport",
                BIN_DIR,
                ".",
            ] {
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &dir.path.join(entry),
                    Some(Uid::from_raw(os.uid)),
                    Some(Gid::from_raw(os.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
        }
        let socket = |listener| SessionSocket {
            listener,
            uid: os.uid,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            stop: dir.stop.clone(),
        };
        let (agent_socket, api_socket) = (socket(agent_listener), socket(api_listener));
        if let Some(router) = &ctx.session_api {
            tokio::spawn(crate::api::serve_session(
                api_socket,
                router.clone(),
                user.clone(),
            ));
        }
        let agent = Arc::new(SessionAgent {
            vault: ctx.vault.clone(),
            metrics: ctx.metrics.clone(),
            user,
            session,
            forward,
            limit: agent::SignLimit::new(ctx.signatures_per_minute),
        });
        tokio::spawn(serve_agent(agent_socket, agent));
        Ok(dir)
    }

    fn bind(&self, name: &str) -> std::io::Result<UnixListener> {
        let path = self.path.join(name);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding `keyport`, for the session's `PATH`.
    pub fn bin(&self) -> PathBuf {
        self.path.join(BIN_DIR)
    }

    /// What the session's environment gets: `SSH_AUTH_SOCK`, `GIT_SSH_COMMAND` (running
    /// `keyport`, the daemon's binary), and `KEYPORT_SESSION_DIR`.
    pub fn env(&self, keyport: &str) -> Vec<(String, String)> {
        vec![
            (
                "SSH_AUTH_SOCK".into(),
                self.path.join(AGENT_SOCKET).display().to_string(),
            ),
            (
                "GIT_SSH_COMMAND".into(),
                format!("{} gitssh --", shell_quote(keyport)),
            ),
            (SESSION_DIR_ENV.into(), self.path.display().to_string()),
        ]
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        self.stop.cancel();
        let path = std::mem::take(&mut self.path);
        let record = self.record.take();
        // Symlink-safe: a link the user put inside is removed, never followed. The user may
        // have filled the directory: off the async workers.
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                debug!(path = %path.display(), error = %e, "cannot remove a session directory");
            }
            if let Some(record) = record {
                let _ = std::fs::remove_file(record);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Records the live session directory `dir` (to be owned by `uid`) in `records`. Not
/// fsynced: it has to survive the daemon's crash, not the machine's (a reboot empties /tmp).
fn record(records: &Path, dir: &Path, uid: u32) -> std::io::Result<PathBuf> {
    crate::datadir::create_dir_private(records)?;
    let name = dir
        .file_name()
        .ok_or_else(|| std::io::Error::other("session directory without a name"))?;
    let file = records.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("{}\n{uid}\n", dir.display()).as_bytes())
        })?;
    Ok(file)
}

/// At start-up: removes the session directories a daemon on this data dir recorded and did not
/// remove (it was killed), then their records. A recorded path is removed only if it is still
/// what keyport made: a directory (not a link) named like a session directory, directly in
/// the temp dir, owned by the session's account or the daemon's. Returns how many it removed.
pub fn sweep(records: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(records) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.path();
        match leftover(&file) {
            Some(dir) => match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %dir.display(), "removed a session directory a stopped daemon left");
                }
                Err(e) => {
                    debug!(path = %dir.display(), error = %e, "cannot remove a session directory");
                }
            },
            None => tracing::info!(
                record = %file.display(),
                "left a recorded session directory alone: it is not one keyport made, or is gone"
            ),
        }
        let _ = std::fs::remove_file(&file);
    }
    removed
}

/// The directory `record` names, if it is still one keyport made.
fn leftover(record: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(record).ok()?;
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next()?);
    let uid: u32 = lines.next()?.parse().ok()?;
    let name = dir.file_name()?.to_str()?;
    let named = name.starts_with(PREFIX)
        && Some(dir.file_name()?) == record.file_name()
        && dir.parent() == Some(std::env::temp_dir().as_path());
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let owner = meta.uid() == uid || meta.uid() == nix::unistd::geteuid().as_raw();
    (named && meta.file_type().is_dir() && owner).then_some(dir)
}

/// The daemon's binary, for `GIT_SSH_COMMAND`: resolved once, at start, so replacing the
/// binary on disk (an upgrade) does not leave sessions pointing at `… (deleted)`.
pub fn keyport_binary() -> String {
    std::env::current_exe()
        .map(|p| {
            let path = p.display().to_string();
            path.strip_suffix(" (deleted)").unwrap_or(&path).to_string()
        })
        .unwrap_or_else(|_| "keyport".into())
}

/// One of a session's sockets.
pub struct SessionSocket {
    listener: UnixListener,
    uid: u32,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
}

/// Serves the session's agent on `socket` until the session ends, each connection in its own
/// task.
async fn serve_agent(socket: SessionSocket, agent: Arc<agent::SessionAgent>) {
    while let Some(connection) = socket.accept().await {
        let agent = agent.clone();
        // The connection's stream ends with the session, and with it this task.
        tokio::spawn(async move { agent.serve_stream(connection).await });
    }
}

impl SessionSocket {
    /// Resolves when the session is over.
    pub fn ended(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// The next connection from the session's uid (or the daemon's); others are closed
    /// unanswered. `None` once the session is over.
    pub async fn accept(&self) -> Option<(SessionStream, Peer)> {
        let permit = tokio::select! {
            _ = self.stop.cancelled() => return None,
            permit = self.permits.clone().acquire_owned() => permit.ok()?,
        };
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => match stream.peer_cred() {
                    Ok(cred)
                        if cred.uid() == self.uid
                            || cred.uid() == nix::unistd::geteuid().as_raw() =>
                    {
                        let exe = cred
                            .pid()
                            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
                            .map(|p| p.display().to_string());
                        let peer = Peer {
                            pid: cred.pid(),
                            exe,
                            workspace: None,
                        };
                        let stream = SessionStream {
                            inner: stream,
                            stop: self.stop.clone(),
                            stopped: Box::pin(self.stop.clone().cancelled_owned()),
                            _permit: permit,
                        };
                        return Some((stream, peer));
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
}

/// A connection to a session socket: reads end-of-file, and writes fail, once the session is
/// over.
pub struct SessionStream {
    inner: UnixStream,
    stop: CancellationToken,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    _permit: OwnedSemaphorePermit,
}

impl SessionStream {
    /// Whether the session is over (registers the waker if not).
    fn over(&mut self, cx: &mut Context<'_>) -> bool {
        self.stop.is_cancelled() || self.stopped.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for SessionStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.over(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.over(cx) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
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

/// `s` as one word for `sh` (git runs `GIT_SSH_COMMAND` through the shell).
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/usr/bin/keyport"), "/usr/bin/keyport");
        assert_eq!(
            shell_quote("/opt/my tools/keyport"),
            "'/opt/my tools/keyport'"
        );
        assert_eq!(shell_quote("/x/it's"), r"'/x/it'\''s'");
    }
}
