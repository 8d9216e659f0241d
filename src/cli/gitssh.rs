//! `keyport gitssh ARGS…`: what `GIT_SSH_COMMAND` runs inside a keyport session. It runs the
//! system `ssh` with the session's agent and offers only the keyport key (its public half,
//! from the session directory, with `IdentitiesOnly`), so a server never sees a string of
//! other keys first and `MaxAuthTries` is never hit. ARGS go to `ssh` untouched (git's `-G`
//! probe included). When the server refuses the key, it says which key to register where.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use keyport_keys::agent::{self, Request, Response};
use keyport_keys::{LoginKey, PublicKey};

use crate::ssh::sessiondir::{AGENT_SOCKET, PUBLIC_KEY, SESSION_DIR_ENV};

/// `keyport gitssh`'s arguments.
#[derive(Debug, Args)]
pub struct GitSshArgs {
    /// Passed to `ssh` as they are.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SSH ARGS"
    )]
    args: Vec<OsString>,
}

/// Runs `ssh`; returns its exit code.
pub fn run(args: GitSshArgs) -> anyhow::Result<u8> {
    let dir = std::env::var_os(SESSION_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .context(
            "keyport gitssh only works inside a keyport SSH session (it signs with the \
             session's in-memory key); outside one, run ssh yourself",
        )?;
    let (agent, public) = (dir.join(AGENT_SOCKET), dir.join(PUBLIC_KEY));
    if !agent.exists() || !public.exists() {
        bail!(
            "the keyport session directory {} is gone (its session has ended)",
            dir.display()
        );
    }
    // git's `-G` probe only prints the configuration: no key needed.
    if !args.args.iter().any(|a| a == "-G")
        && let Err(e) = refresh_public_key(&agent, &public)
    {
        // The file from the session's start still names a key; ssh will say if it is stale.
        tracing::debug!(error = %e, "cannot refresh the session's public key");
    }
    let mut child = Command::new("ssh")
        .env("SSH_AUTH_SOCK", &agent)
        .args([
            "-o",
            "IdentityAgent=SSH_AUTH_SOCK",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
        ])
        .arg(&public)
        .args(&args.args)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ssh (is the OpenSSH client installed?)")?;
    // ssh's stderr passes through as it comes (progress lines and prompts included); a
    // refusal is noted on the way.
    let (verdict, refused) = std::sync::mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = verdict.send(pass_through(stderr));
        });
    }
    let status = child.wait().context("waiting for ssh")?;
    // A process ssh left behind may hold its stderr open: do not wait for it for long.
    let refused = refused
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or(false);
    if refused && status.code() == Some(255) {
        explain_refusal(&public);
    }
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(u8::try_from(code).unwrap_or(1))
}

/// Copies `from` to stderr; whether ssh said it was refused.
fn pass_through(mut from: impl Read) -> bool {
    let mut out = std::io::stderr();
    let (mut buf, mut seen) = ([0u8; 8192], Vec::new());
    let mut refused = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return refused,
            Ok(n) => n,
        };
        let _ = out.write_all(&buf[..n]);
        // Look across chunk boundaries: keep the tail that could start the phrase.
        seen.extend_from_slice(&buf[..n]);
        refused |= seen.windows(REFUSAL.len()).any(|w| w == REFUSAL.as_bytes());
        let keep = seen.len().min(REFUSAL.len());
        seen.drain(..seen.len() - keep);
    }
}

/// Rewrites `public` with the keyport key the agent lists — current even after `keyport key
/// regenerate` — when it changed. The session directory is the user's own; parallel runs
/// (git fetching submodules) each write their own temporary file.
fn refresh_public_key(agent: &Path, public: &Path) -> anyhow::Result<()> {
    let user = std::env::var("KEYPORT_USER").context("KEYPORT_USER is not set")?;
    let mut stream = UnixStream::connect(agent)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(&agent::frame(&Request::Identities.encode()))?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let mut payload = vec![0u8; agent::frame_len(header)?];
    stream.read_exact(&mut payload)?;
    let Response::Identities(ids) = Response::parse(&payload)? else {
        bail!("the agent did not list its keys");
    };
    // Listed first, under this comment, by the session's agent.
    let comment = format!("keyport:{user}");
    let own = ids
        .first()
        .filter(|id| id.comment == comment)
        .context("the agent does not list the keyport key")?;
    let mut key = PublicKey::from_bytes(&own.key)?;
    key.set_comment(comment.as_str());
    let line = key.to_openssh()? + "\n";
    if std::fs::read_to_string(public).ok().as_deref() == Some(line.as_str()) {
        return Ok(());
    }
    let next = public.with_extension(format!("pub.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&next)?;
    file.write_all(line.as_bytes())?;
    drop(file);
    std::fs::rename(&next, public)?;
    Ok(())
}

/// What `ssh` prints when no offered key was accepted.
const REFUSAL: &str = "Permission denied (publickey";

fn explain_refusal(public: &Path) {
    let line = std::fs::read_to_string(public).unwrap_or_default();
    let fingerprint = LoginKey::parse(line.trim())
        .map(|k| k.fingerprint())
        .unwrap_or_default();
    eprintln!(
        "keyport: the server refused your keyport key {fingerprint}.\n\
         Register this public key where you sign in (GitHub: Settings > SSH and GPG keys > New \
         SSH key; GitLab: Preferences > SSH Keys; a server: append it to \
         ~/.ssh/authorized_keys there), then try again:\n\n  {}\n\n\
         `keyport key show` prints it again.",
        line.trim()
    );
}
