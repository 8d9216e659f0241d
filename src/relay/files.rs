//! File secrets written on the workspace over SFTP, before the session's program starts, by
//! the local rules (`secrets::files`): the plan and the ledger come from the vault as for a
//! local session — the ledger's place is the workspace and its login, so each (user,
//! workspace) has its own — and only carrying it out differs.
//!
//! - `~/…` resolves against the login's home there (SFTP `realpath .`).
//! - A file already holding the value (and the login's own) is left untouched.
//! - New parent directories 0700; a new file 0600; an existing file keeps its mode if it is
//!   the login's own, else it is replaced by a 0600 one and reported.
//! - Written to a temp file opened O_EXCL with 0600, fsync'd (`fsync@openssh.com`), then
//!   renamed over the target (`posix-rename@openssh.com`; plain SFTP rename fails when the
//!   target exists). Values travel in SFTP write packets only, never in a command line.
//! - A file no secret wants any more is removed only if it still holds what keyport wrote;
//!   one the user edited there is kept, reported, and audited.
//! - A change to the user's file secrets while a relayed connection of theirs is up is
//!   written there the same way, within a second (`ssh::live`, through `link.rs`).

use std::sync::Arc;

use russh::ChannelMsg;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tracing::{debug, warn};

use super::upstream::Upstream;
use crate::secrets::files::{Delivery, Found, Plan, Report, Step, saved_names, sha256_hex, step};
use crate::secrets::validate::{MAX_VALUE_BYTES, resolve_file_path};
use crate::ssh::{Rewritten, SshContext};
use crate::vault::{Route, SessionSecrets, SessionUser};

/// The ledger's place for a workspace login: never an OS account's name (`:` cannot be in
/// one), so local and upstream files are never confused.
pub fn place(route: &Route) -> String {
    format!("workspace:{}:{}", route.workspace_id, route.os_user)
}

/// What writing a session's files upstream has to tell.
#[derive(Debug, Default)]
pub struct Written {
    /// For every session: why no file could be written (no SFTP there, say).
    pub always: Vec<String>,
    /// For interactive sessions: saved edits, failures, files kept because they were edited.
    pub interactive: Vec<String>,
    /// Secrets whose file was not written (not counted as received).
    pub failed: Vec<String>,
}

/// Writes `who`'s file secrets on the workspace and removes the ones no longer wanted. Every
/// file's outcome is recorded as its delivery, failures included.
pub async fn write(
    ctx: &Arc<SshContext>,
    upstream: &Upstream,
    route: &Route,
    who: &SessionUser,
    secrets: &SessionSecrets,
) -> Written {
    rewrite(ctx, upstream, route, who, secrets).await.0
}

/// [`write`], for a session start and for the live watcher (`ssh::live`) alike: one pass at
/// a time per user and place, which tells the watcher what the files there now hold.
pub async fn rewrite(
    ctx: &Arc<SshContext>,
    upstream: &Upstream,
    route: &Route,
    who: &SessionUser,
    secrets: &SessionSecrets,
) -> (Written, Rewritten) {
    let key = (who.id, place(route));
    let _turn = ctx.applied.turn(&key).await;
    let done = pass(ctx, upstream, route, who, secrets).await;
    ctx.live_files.saw_relayed(key, who, secrets);
    done
}

/// Plans, applies over SFTP and records one pass.
async fn pass(
    ctx: &Arc<SshContext>,
    upstream: &Upstream,
    route: &Route,
    who: &SessionUser,
    secrets: &SessionSecrets,
) -> (Written, Rewritten) {
    let place = place(route);
    let (name, at) = (who.name.clone(), place.clone());
    // Nothing wanted and nothing written before: no SFTP channel at all (the common case).
    if secrets.files.is_empty() {
        let earlier = ctx
            .vault
            .call(move |v| v.file_plan(&name, &at, &SessionSecrets::default()))
            .await;
        if earlier.is_ok_and(|plan| plan.remove.is_empty()) {
            return (Written::default(), None);
        }
    }
    let sftp = match open(upstream).await {
        Ok(sftp) => sftp,
        Err(why) => return not_written(ctx, route, who, secrets, &why).await,
    };
    let home = match sftp.realpath(".").await {
        Ok(name) => name.files.first().map(|f| f.filename.clone()),
        Err(_) => None,
    };
    let Some(home) = home else {
        let why = "the sshd did not say where the home is";
        return not_written(ctx, route, who, secrets, why).await;
    };
    let mut there = SessionSecrets::default();
    for ((secret, _, value), typed) in secrets.files.iter().zip(&secrets.file_paths) {
        let path = resolve_file_path(typed, &home);
        there.files.push((secret.clone(), path, value.clone()));
    }
    for (_, typed) in &secrets.keep {
        there
            .keep
            .push((resolve_file_path(typed, &home), typed.clone()));
    }
    let there = Arc::new(there);
    let (name, at, wanted) = (who.name.clone(), place.clone(), there.clone());
    let plan = match ctx
        .vault
        .call(move |v| v.file_plan(&name, &at, &wanted))
        .await
    {
        Ok(plan) => plan,
        Err(e) => {
            warn!(user = %who.name, error = %e, "cannot plan file secrets upstream");
            let why = format!("cannot plan them: {e}");
            return not_written(ctx, route, who, secrets, &why).await;
        }
    };
    let owner = sftp.stat(home.clone()).await.ok().and_then(|a| a.attrs.uid);
    let report = Arc::new(apply(&sftp, &plan, owner).await);
    let _ = sftp.close_session();
    let delivery = Delivery::of(&report, &there.files);
    let mut written = Written {
        failed: delivery
            .failed
            .iter()
            .map(|(name, _, _)| name.clone())
            .collect(),
        interactive: delivery
            .notices()
            .into_iter()
            .map(|line| format!("{}: {line}", route.workspace))
            .collect(),
        ..Written::default()
    };
    for path in &report.kept_changed {
        written.interactive.push(format!(
            "{}: {path} was changed there since keyport wrote it, and no secret wants it \
             any more: left as it is",
            route.workspace
        ));
    }
    record(ctx, who, place, there.clone(), report.clone()).await;
    (written, Some((report, there)))
}

/// No file could be written: each one's delivery is recorded as failed, with `why`.
async fn not_written(
    ctx: &Arc<SshContext>,
    route: &Route,
    who: &SessionUser,
    secrets: &SessionSecrets,
    why: &str,
) -> (Written, Rewritten) {
    let mut there = SessionSecrets::default();
    let mut report = Report::default();
    for ((secret, _, value), typed) in secrets.files.iter().zip(&secrets.file_paths) {
        there
            .files
            .push((secret.clone(), typed.clone(), value.clone()));
        report.failed.push((typed.clone(), why.to_string()));
    }
    let failed = secrets
        .files
        .iter()
        .map(|(name, _, _)| name.clone())
        .collect();
    let (report, there) = (Arc::new(report), Arc::new(there));
    record(ctx, who, place(route), there.clone(), report.clone()).await;
    let written = Written {
        always: vec![format!(
            "{}: file secrets not written ({why}); env secrets were sent",
            route.workspace
        )],
        failed,
        ..Written::default()
    };
    (written, Some((report, there)))
}

/// The ledger and each file's delivery, brought up to date with `report`.
async fn record(
    ctx: &Arc<SshContext>,
    who: &SessionUser,
    place: String,
    there: Arc<SessionSecrets>,
    report: Arc<Report>,
) {
    let name = who.name.clone();
    let recorded = ctx
        .vault
        .call(move |v| v.record_files(&name, &place, &there, &report))
        .await;
    if let Err(e) = recorded {
        warn!(user = %who.name, error = %e, "cannot record files written upstream");
    }
}

/// An SFTP session on a channel of its own.
async fn open(upstream: &Upstream) -> Result<RawSftpSession, String> {
    let mut channel = upstream
        .handle
        .channel_open_session()
        .await
        .map_err(|e| format!("no channel for SFTP: {e}"))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let why = match channel.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) => "the sshd has no sftp subsystem",
            Some(ChannelMsg::Close) | None => "the sshd closed the SFTP channel",
            Some(_) => continue,
        };
        // Not left open on the sshd (it would count against its MaxSessions).
        let _ = channel.close().await;
        return Err(why.into());
    }
    let sftp = RawSftpSession::new(channel.into_stream());
    let version = sftp.init().await.map_err(|e| format!("SFTP: {e}"))?;
    if !version.extensions.contains_key(POSIX_RENAME) {
        return Err(format!("the sshd's SFTP server lacks {POSIX_RENAME}"));
    }
    Ok(sftp)
}

const POSIX_RENAME: &str = "posix-rename@openssh.com";
/// Bytes per SFTP write (OpenSSH's sftp-server takes up to 256 KiB; every server 32 KiB).
const CHUNK: usize = 32 * 1024;

/// Carries out `plan` over SFTP; `owner` is the login's uid (its home's owner).
async fn apply(sftp: &RawSftpSession, plan: &Plan, owner: Option<u32>) -> Report {
    let mut report = Report::default();
    for wanted in &plan.write {
        let value = wanted.content.expose();
        let hash = sha256_hex(value);
        let existing = sftp.lstat(wanted.path.clone()).await.ok().map(|a| a.attrs);
        let kind = existing.as_ref().map(file_type);
        let regular = kind == Some(Some(S_IFREG));
        let own = regular
            && existing
                .as_ref()
                .is_some_and(|a| a.uid.is_some() && a.uid == owner);
        let content = if regular {
            read_small(sftp, &wanted.path).await
        } else {
            None
        };
        let found = match (kind, &content) {
            (None, _) => Found::Missing,
            (Some(Some(S_IFLNK)), _) => Found::Link,
            (Some(Some(S_IFDIR)), _) => Found::Dir,
            (Some(Some(S_IFREG)), Some(content)) => Found::File { content, own },
            (Some(Some(S_IFREG)), None) => {
                Found::Uncomparable("it cannot be read, or is larger than a value".into())
            }
            _ => Found::Special,
        };
        // The local rules, for the same cases (secrets::files::step).
        match step(&found, &hash, wanted.previous.as_deref()) {
            Step::Unchanged => {
                report.unchanged.push((wanted.path.clone(), hash));
                continue;
            }
            Step::Refuse(why) => {
                report.failed.push((wanted.path.clone(), why));
                continue;
            }
            Step::Write { save_first: false } => {}
            Step::Write { save_first: true } => {
                let Some(content) = &content else { continue };
                match save_beside(sftp, &wanted.path, content).await {
                    Ok(saved) => report.saved.push((wanted.path.clone(), saved)),
                    Err(e) => {
                        let why = format!("your version could not be saved first: {e}");
                        report.failed.push((wanted.path.clone(), why));
                        continue;
                    }
                }
            }
        }
        let (mode, narrowed) = match &existing {
            Some(a) if own => (a.permissions.unwrap_or(0o600) & 0o7777, false),
            Some(_) if regular => (0o600, true),
            _ => (0o600, false),
        };
        match write_atomic(sftp, &wanted.path, value, mode).await {
            Ok(()) => {
                if narrowed {
                    report.narrowed.push(wanted.path.clone());
                }
                report.written.push((wanted.path.clone(), hash));
            }
            Err(e) => report.failed.push((wanted.path.clone(), e)),
        }
    }
    for stale in &plan.remove {
        match sftp.lstat(stale.path.clone()).await {
            Err(russh_sftp::client::error::Error::Status(s))
                if s.status_code == StatusCode::NoSuchFile =>
            {
                report.missing.push(stale.path.clone());
            }
            Err(e) => report.failed.push((stale.path.clone(), e.to_string())),
            Ok(a) if file_type(&a.attrs) != Some(S_IFREG) => {
                report.kept_changed.push(stale.path.clone());
            }
            Ok(_) => match read_small(sftp, &stale.path).await {
                Some(content) if sha256_hex(&content) == stale.sha256 => {
                    match sftp.remove(stale.path.clone()).await {
                        Ok(_) => report.removed.push(stale.path.clone()),
                        Err(e) => report.failed.push((stale.path.clone(), e.to_string())),
                    }
                }
                _ => report.kept_changed.push(stale.path.clone()),
            },
        }
    }
    report
}

/// `st_mode`'s file-type field and its values (POSIX; SFTP v3 carries `st_mode` as is).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// The file type the attributes give, the whole S_IFMT field compared (a link's type bits
/// contain S_IFREG's); from lstat, so a link is a link, not what it points at.
fn file_type(attrs: &FileAttributes) -> Option<u32> {
    attrs.permissions.map(|p| p & S_IFMT)
}

/// A file's content, if it is no longer than a value may be.
async fn read_small(sftp: &RawSftpSession, path: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let handle = sftp
        .open(path, OpenFlags::READ, FileAttributes::empty())
        .await
        .ok()?
        .handle;
    let mut content = zeroize::Zeroizing::new(Vec::new());
    let cap = MAX_VALUE_BYTES as u64 + 1;
    let ok = loop {
        let offset = content.len() as u64;
        if offset >= cap {
            break false;
        }
        match sftp.read(handle.clone(), offset, CHUNK as u32).await {
            Ok(data) if data.data.is_empty() => break true,
            Ok(data) => content.extend_from_slice(&data.data),
            Err(russh_sftp::client::error::Error::Status(s))
                if s.status_code == StatusCode::Eof =>
            {
                break true;
            }
            Err(_) => break false,
        }
    };
    let _ = sftp.close(handle).await;
    (ok && content.len() <= MAX_VALUE_BYTES).then_some(content)
}

/// Writes `content` to `path` through a fresh 0600 temp file beside it, fsync, rename.
async fn write_atomic(
    sftp: &RawSftpSession,
    path: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), String> {
    let (dir, name) = path
        .rsplit_once('/')
        .ok_or_else(|| "not an absolute path".to_string())?;
    make_dirs(sftp, dir).await?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|_| "random number generator failed".to_string())?;
    let tmp = format!("{dir}/.{name}.keyport-{}", keyport_keys::seal::hex(&nonce));
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..FileAttributes::empty()
    };
    let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
    let handle = sftp
        .open(tmp.clone(), flags, attrs)
        .await
        .map_err(|e| e.to_string())?
        .handle;
    let written = async {
        for (i, chunk) in content.chunks(CHUNK).enumerate() {
            let offset = (i * CHUNK) as u64;
            sftp.write(handle.clone(), offset, chunk.to_vec()).await?;
        }
        let mode = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        sftp.fsetstat(handle.clone(), mode).await?;
        // Not every server has it; the rename is still atomic without it.
        if let Err(e) = sftp.fsync(handle.clone()).await {
            debug!(error = %e, "no fsync over SFTP");
        }
        Ok::<(), russh_sftp::client::error::Error>(())
    }
    .await;
    let closed = sftp.close(handle).await;
    let renamed = match (written, closed) {
        (Ok(()), Ok(_)) => rename(sftp, &tmp, path).await,
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    };
    if renamed.is_err() {
        let _ = sftp.remove(tmp).await;
    }
    renamed
}

/// Saves the login's own version of `path` beside it (0600, never over another file).
async fn save_beside(sftp: &RawSftpSession, path: &str, content: &[u8]) -> Result<String, String> {
    for name in saved_names(path) {
        if sftp.lstat(name.clone()).await.is_ok() {
            continue;
        }
        write_atomic(sftp, &name, content, 0o600).await?;
        return Ok(name);
    }
    Err("every .keyport-saved name is taken".into())
}

/// `posix-rename@openssh.com`: replaces the target atomically, as rename(2).
async fn rename(sftp: &RawSftpSession, from: &str, to: &str) -> Result<(), String> {
    let mut data = Vec::with_capacity(from.len() + to.len() + 8);
    for s in [from, to] {
        data.extend_from_slice(&u32::try_from(s.len()).unwrap_or(0).to_be_bytes());
        data.extend_from_slice(s.as_bytes());
    }
    match sftp.extended(POSIX_RENAME, data).await {
        Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
        Ok(Packet::Status(s)) => Err(format!("{}: {}", s.status_code, s.error_message)),
        Ok(_) => Err("unexpected answer to posix-rename".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates the missing directories of `dir` (absolute), each 0700.
async fn make_dirs(sftp: &RawSftpSession, dir: &str) -> Result<(), String> {
    let mut at = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        if sftp.stat(at.clone()).await.is_ok() {
            continue;
        }
        let attrs = FileAttributes {
            permissions: Some(0o700),
            ..FileAttributes::empty()
        };
        if let Err(e) = sftp.mkdir(at.clone(), attrs).await {
            // Another session of the same login may have made it meanwhile.
            let made = sftp.stat(at.clone()).await.ok();
            if made.is_none_or(|a| file_type(&a.attrs) != Some(S_IFDIR)) {
                return Err(format!("cannot create {at}: {e}"));
            }
        }
    }
    Ok(())
}
