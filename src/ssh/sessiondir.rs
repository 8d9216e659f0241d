//! A session's private directory (`/tmp/keyport-XXXXXXXX`, 0700, owned by the session's OS
//! user): the agent socket (`SSH_AUTH_SOCK`), the in-session API socket the CLI finds through
//! `KEYPORT_SESSION_DIR`, and the user key's public half for `keyport gitssh`. The daemon
//! serves both sockets; dropping the [`SessionDir`] stops them and removes the directory.
//!
//! Everything is created while the directory still belongs to the daemon, and handed to the
//! user last (without following links), so no process of the user's can swap an entry for a
//! link to something the daemon would then chown.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::AtFlags;
use nix::unistd::{Gid, Uid};
use russh::server::Handle;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::SshContext;
use super::process::Identity;
use crate::agent::{self, SessionAgent};

/// The agent socket's name in a session directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The in-session API socket's name.
pub const API_SOCKET: &str = "api.sock";
/// The user key's public half (the only key material in the directory).
pub const PUBLIC_KEY: &str = "id.pub";
/// The variable naming the directory in a session.
pub const SESSION_DIR_ENV: &str = "KEYPORT_SESSION_DIR";

/// A live session directory; removed on drop.
pub struct SessionDir {
    path: PathBuf,
    stop: CancellationToken,
}

impl SessionDir {
    /// Creates the directory for `session` of `user` and starts serving its sockets.
    /// `forward` is the connection when the client forwarded its agent.
    pub async fn create(
        ctx: &Arc<SshContext>,
        identity: &Identity,
        user: &str,
        session: u64,
        forward: Option<Handle>,
    ) -> std::io::Result<Self> {
        let name = user.to_string();
        let public = ctx
            .vault
            .call(move |v| v.user_key(&name))
            .await
            .map_err(|e| std::io::Error::other(format!("cannot read your key: {e}")))?
            .public_key;
        let template = std::env::temp_dir().join("keyport-XXXXXXXX");
        let path = nix::unistd::mkdtemp(&template)?;
        // From here on, dropping `dir` cleans up whatever was made.
        let dir = Self {
            path,
            stop: CancellationToken::new(),
        };
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
        let os = &identity.os;
        if identity.switch.is_some() {
            for entry in [AGENT_SOCKET, API_SOCKET, PUBLIC_KEY, "."] {
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &dir.path.join(entry),
                    Some(Uid::from_raw(os.uid)),
                    Some(Gid::from_raw(os.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
        }
        let agent = Arc::new(SessionAgent {
            vault: ctx.vault.clone(),
            metrics: ctx.metrics.clone(),
            user: user.to_string(),
            session,
            uid: os.uid,
            forward,
        });
        tokio::spawn(agent::serve(agent_listener, agent, dir.stop.clone()));
        if let Some(router) = &ctx.session_api {
            tokio::spawn(crate::api::serve_session(
                api_listener,
                router.clone(),
                user.to_string(),
                os.uid,
                dir.stop.clone(),
            ));
        }
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

    /// What the session's environment gets: `SSH_AUTH_SOCK`, `GIT_SSH_COMMAND`, and
    /// `KEYPORT_SESSION_DIR`.
    pub fn env(&self) -> Vec<(String, String)> {
        let keyport = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "keyport".into());
        vec![
            (
                "SSH_AUTH_SOCK".into(),
                self.path.join(AGENT_SOCKET).display().to_string(),
            ),
            (
                "GIT_SSH_COMMAND".into(),
                format!("{} gitssh --", shell_quote(&keyport)),
            ),
            (SESSION_DIR_ENV.into(), self.path.display().to_string()),
        ]
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        self.stop.cancel();
        // Symlink-safe: a link the user put inside is removed, never followed.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            debug!(path = %self.path.display(), error = %e, "cannot remove a session directory");
        }
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
