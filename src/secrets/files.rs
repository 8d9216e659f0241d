//! File secrets on disk: writing them and removing the ones keyport wrote.
//!
//! A [`Plan`] says which files should hold which values, and which files keyport wrote earlier
//! (with the SHA-256 of what it wrote) are no longer wanted. [`apply`] carries it out and must
//! run *as the OS user* who owns the files — the daemon runs it directly when it is that user,
//! or on a thread that took on that user's file identity — so a symlink the user planted can never make
//! keyport write or delete anything the user could not. Whatever is at a path is read without
//! following links, without blocking on FIFOs, and no further than a value can be long.
//!
//! - A file already holding the value is left untouched (not rewritten).
//! - New parent directories are 0700, new files 0600. An existing file keeps its mode only if it
//!   belongs to the user writing it; one that belongs to another account (planted in a shared
//!   directory, say) is replaced by a 0600 file of the user's own, and reported, so a file
//!   secret never ends up readable by the account that prepared the spot.
//! - Writes are atomic: a temp file in the same directory, fsync, rename, fsync the directory.
//! - A file to remove is removed only if it still holds what keyport wrote; a file the user
//!   changed is left where it is and reported.
//! - A file to write that holds neither the new value nor what keyport last wrote there (the
//!   user edited it, or it was there before keyport) is never lost: the user's version is
//!   saved beside it as `FILE.keyport-saved` (0600; `.keyport-saved.N` if that name is
//!   taken) before the new value goes in, and reported.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// What to do with a user's files.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files that should hold a value.
    pub write: Vec<Wanted>,
    /// Files keyport wrote that are no longer wanted.
    pub remove: Vec<Stale>,
}

/// A file that should hold a value. `Debug` shows the path only.
pub struct Wanted {
    /// Absolute path.
    pub path: String,
    /// The value.
    pub content: keyport_keys::SecretBytes,
    /// Hex SHA-256 of what keyport last wrote there (from the ledger), if it did.
    pub previous: Option<String>,
}

impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wanted")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A file keyport wrote and no longer wants.
#[derive(Debug)]
pub struct Stale {
    /// Absolute path.
    pub path: String,
    /// Hex SHA-256 of what keyport wrote there.
    pub sha256: String,
}

/// What [`apply`] did, path by path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Written now: (path, hex SHA-256 of the content).
    pub written: Vec<(String, String)>,
    /// Already held the value.
    pub unchanged: Vec<(String, String)>,
    /// Removed: they still held what keyport wrote.
    pub removed: Vec<String>,
    /// Already gone.
    pub missing: Vec<String>,
    /// Left in place: the user changed them.
    pub kept_changed: Vec<String>,
    /// Written 0600 in place of a file another account owned (its mode was not kept).
    pub narrowed: Vec<String>,
    /// Written after saving the user's own version: (path, where the user's version went).
    pub saved: Vec<(String, String)>,
    /// Could not be written or removed: (path, why).
    pub failed: Vec<(String, String)>,
}

/// What a pass did that the session's user should hear of.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Written 0600 in place of another account's file.
    pub narrowed: Vec<String>,
    /// Written after the user's own version was saved: (path, where it went).
    pub saved: Vec<(String, String)>,
    /// Not written: (secret, path, why).
    pub failed: Vec<(String, String, String)>,
}

impl Delivery {
    /// What `report`, a pass over `files` (secret name, path, value), has to tell.
    pub fn of(report: &Report, files: &[(String, String, keyport_keys::SecretBytes)]) -> Self {
        let secret_of = |path: &str| {
            files
                .iter()
                .find(|(_, p, _)| p == path)
                .map(|(name, _, _)| name.clone())
                .unwrap_or_default()
        };
        Self {
            narrowed: report.narrowed.clone(),
            saved: report.saved.clone(),
            failed: report
                .failed
                .iter()
                .map(|(path, why)| (secret_of(path), path.clone(), why.clone()))
                .collect(),
        }
    }

    /// One line per thing to tell (without the `keyport: ` prefix).
    pub fn notices(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for path in &self.narrowed {
            lines.push(format!(
                "{path} belonged to another account; your secret replaced it with a file only \
                 you can read (0600)"
            ));
        }
        for (path, kept) in &self.saved {
            lines.push(format!(
                "{path} had changes of yours: kept as {kept}; the secret's value is in place"
            ));
        }
        for (secret, path, why) in &self.failed {
            lines.push(format!(
                "file secret {secret} was not written to {path}: {why} (keyport secret check)"
            ));
        }
        lines
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    keyport_keys::seal::hex(&Sha256::digest(bytes))
}

/// Carries out `plan` with the permissions of the process running it.
pub fn apply(plan: &Plan) -> Report {
    let mut report = Report::default();
    for wanted in &plan.write {
        let path = Path::new(&wanted.path);
        let content = wanted.content.expose();
        let hash = sha256_hex(content);
        let existing = read_existing(path);
        let found = match &existing {
            Existing::Missing => Found::Missing,
            Existing::File(content) => Found::File {
                content,
                own: owner(path) == Some(file_uid()),
            },
            Existing::Other => match fs::symlink_metadata(path).map(|m| m.file_type()) {
                Ok(kind) if kind.is_symlink() => Found::Link,
                Ok(kind) if kind.is_dir() => Found::Dir,
                Ok(kind) if kind.is_file() => {
                    Found::Uncomparable("it is larger than a value".into())
                }
                _ => Found::Special,
            },
            Existing::Unreadable(e) => Found::Uncomparable(format!("it cannot be read ({e})")),
        };
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
                let Found::File { content, .. } = found else {
                    continue;
                };
                match save_beside(path, content) {
                    Ok(saved) => report.saved.push((wanted.path.clone(), saved)),
                    Err(e) => {
                        // Not written: the user's version must not be lost.
                        let why = format!("your version could not be saved first: {e}");
                        report.failed.push((wanted.path.clone(), why));
                        continue;
                    }
                }
            }
        }
        match write_atomic(path, content) {
            Ok(narrowed) => {
                if narrowed {
                    report.narrowed.push(wanted.path.clone());
                }
                report.written.push((wanted.path.clone(), hash));
            }
            Err(e) => report.failed.push((wanted.path.clone(), e.to_string())),
        }
    }
    for stale in &plan.remove {
        let path = Path::new(&stale.path);
        match read_existing(path) {
            Existing::Missing => report.missing.push(stale.path.clone()),
            Existing::File(existing) if sha256_hex(&existing) == stale.sha256 => {
                match fs::remove_file(path) {
                    Ok(()) => report.removed.push(stale.path.clone()),
                    Err(e) => report.failed.push((stale.path.clone(), e.to_string())),
                }
            }
            // Changed, replaced by a link, a FIFO or something too large: not what keyport wrote.
            Existing::File(_) | Existing::Other => report.kept_changed.push(stale.path.clone()),
            Existing::Unreadable(e) => report.failed.push((stale.path.clone(), e)),
        }
    }
    report
}

/// Whether `existing` is a version of the user's: neither the value about to be written
/// (`hash`) nor what keyport last wrote there (`previous`).
fn edited(existing: &[u8], hash: &str, previous: Option<&str>) -> bool {
    let found = sha256_hex(existing);
    found != hash && previous != Some(found.as_str())
}

/// The first free name beside `path` for the user's version: `.keyport-saved`, then
/// `.keyport-saved.1` … `.keyport-saved.99`.
pub fn saved_names(path: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(format!("{path}.keyport-saved"))
        .chain((1..100).map(move |n| format!("{path}.keyport-saved.{n}")))
}

/// Saves the user's version of `path` beside it (0600, never over another file).
fn save_beside(path: &Path, content: &[u8]) -> io::Result<String> {
    let path = path.display().to_string();
    for name in saved_names(&path) {
        if fs::symlink_metadata(&name).is_ok() {
            continue;
        }
        write_atomic(Path::new(&name), content)?;
        return Ok(name);
    }
    Err(io::Error::other("every .keyport-saved name is taken"))
}

/// What is at a wanted file's path, as the side that writes it (here, or over SFTP on a
/// workspace) found it without following a link.
pub enum Found<'a> {
    /// Nothing.
    Missing,
    /// A regular file it read: its content, and whether it belongs to the writing account.
    File {
        /// What it holds.
        content: &'a [u8],
        /// The writing account's own.
        own: bool,
    },
    /// A symbolic link: the link is the user's (a dotfiles manager's, say).
    Link,
    /// A directory.
    Dir,
    /// A regular file it could not compare (why).
    Uncomparable(String),
    /// A FIFO, socket or device: nothing to lose.
    Special,
}

/// What to do at a wanted file's path.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// It already holds the value, and is the writer's own: left untouched.
    Unchanged,
    /// Write the value, after saving what is there beside it when `save_first`.
    Write {
        /// What is there is a version of the user's.
        save_first: bool,
    },
    /// Leave it, for this reason.
    Refuse(String),
}

/// The one rule both writers follow: never lose a version of the user's, never replace what
/// cannot be compared, never rewrite what already holds the value.
pub fn step(found: &Found<'_>, hash: &str, previous: Option<&str>) -> Step {
    match found {
        Found::Missing | Found::Special => Step::Write { save_first: false },
        Found::File { content, own } if *own && sha256_hex(content) == hash => Step::Unchanged,
        Found::File { content, .. } => Step::Write {
            save_first: edited(content, hash, previous),
        },
        Found::Link => Step::Refuse(
            "it is a symbolic link: not replaced (point --file at the file itself)".into(),
        ),
        Found::Dir => Step::Refuse("it is a directory: not replaced".into()),
        Found::Uncomparable(why) => Step::Refuse(format!("{why}: not replaced")),
    }
}

/// What is at a path keyport manages.
enum Existing {
    /// Nothing.
    Missing,
    /// A regular file no larger than a value may be, with this content.
    File(zeroize::Zeroizing<Vec<u8>>),
    /// A link, FIFO, device, directory, or a file too large to be a value.
    Other,
    /// Something that could not be looked at.
    Unreadable(String),
}

/// Reads what is at `path` without following a link, without blocking on a FIFO, and without
/// reading more than a value can hold: the path is the user's, and so is whatever they put there.
fn read_existing(path: &Path) -> Existing {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Existing::Missing,
        // ELOOP: the path is a symbolic link.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Existing::Other,
        Err(e) => return Existing::Unreadable(e.to_string()),
    };
    let cap = super::validate::MAX_VALUE_BYTES as u64;
    match file.metadata() {
        Ok(meta) if meta.file_type().is_file() && meta.len() <= cap => {}
        Ok(_) => return Existing::Other,
        Err(e) => return Existing::Unreadable(e.to_string()),
    }
    let mut content = zeroize::Zeroizing::new(Vec::new());
    match file.take(cap + 1).read_to_end(&mut content) {
        Ok(_) if content.len() as u64 <= cap => Existing::File(content),
        Ok(_) => Existing::Other,
        Err(e) => Existing::Unreadable(e.to_string()),
    }
}

/// The uid files are created and checked as on this thread: its filesystem uid (a root daemon
/// writes on a thread that took on the user's).
fn file_uid() -> u32 {
    // SAFETY: setfsuid with an invalid id changes nothing and returns the current fsuid.
    let current = unsafe { nix::libc::syscall(nix::libc::SYS_setfsuid, u32::MAX) };
    u32::try_from(current).unwrap_or(u32::MAX)
}

/// The owner of the regular file at `path` (not of a link's target).
fn owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.uid())
}

/// Writes `content` to `path` atomically; new directories 0700, a new file 0600, an existing
/// file's mode kept if the file is this user's. Returns whether an existing file's mode was
/// not kept because another account owned it.
fn write_atomic(path: &Path, content: &[u8]) -> io::Result<bool> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    // The mode of the file itself, never of whatever a link there points at; and only the
    // user's own file's: another account's mode says what that account wanted others to read.
    let (mode, narrowed) = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() && owner(path) == Some(file_uid()) => {
            (meta.permissions().mode() & 0o7777, false)
        }
        Ok(meta) if meta.file_type().is_file() => (0o600, true),
        _ => (0o600, false),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|_| io::Error::other("random number generator failed"))?;
    let tmp = dir.join(format!(
        ".{name}.keyport-{}",
        keyport_keys::seal::hex(&nonce)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(content)?;
        // The umask may have narrowed the mode; set the one the file should have.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| narrowed)
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
