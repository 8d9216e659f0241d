//! File secrets on disk: writing them and removing the ones keyport wrote.
//!
//! A [`Plan`] says which files should hold which values, and which files keyport wrote earlier
//! (with the SHA-256 of what it wrote) are no longer wanted. [`apply`] carries it out and must
//! run *as the OS user* who owns the files — the daemon runs it in-process when it is that user,
//! or in a helper process switched to that user — so a symlink the user planted can never make
//! keyport write or delete anything the user could not.
//!
//! - A file already holding the value is left untouched (not rewritten).
//! - New parent directories are 0700, new files 0600, an existing file keeps its mode.
//! - Writes are atomic: a temp file in the same directory, fsync, rename, fsync the directory.
//! - A file to remove is removed only if it still holds what keyport wrote; a file the user
//!   changed is left where it is and reported.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What to do with a user's files.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Files that should hold a value.
    pub write: Vec<Wanted>,
    /// Files keyport wrote that are no longer wanted.
    pub remove: Vec<Stale>,
}

/// A file that should hold a value. `Debug` shows the path only.
#[derive(Serialize, Deserialize)]
pub struct Wanted {
    /// Absolute path.
    pub path: String,
    /// The value, base64 (plans cross a pipe as JSON).
    pub content: String,
}

impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wanted")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A file keyport wrote and no longer wants.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stale {
    /// Absolute path.
    pub path: String,
    /// Hex SHA-256 of what keyport wrote there.
    pub sha256: String,
}

/// What [`apply`] did, path by path.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Could not be written or removed: (path, why).
    pub failed: Vec<(String, String)>,
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
        let content = match STANDARD.decode(wanted.content.as_bytes()) {
            Ok(content) => zeroize::Zeroizing::new(content),
            Err(_) => {
                report.failed.push((wanted.path.clone(), "bad plan".into()));
                continue;
            }
        };
        let hash = sha256_hex(&content);
        match fs::read(path) {
            Ok(existing) if sha256_hex(&existing) == hash => {
                report.unchanged.push((wanted.path.clone(), hash));
                continue;
            }
            _ => {}
        }
        match write_atomic(path, &content) {
            Ok(()) => report.written.push((wanted.path.clone(), hash)),
            Err(e) => report.failed.push((wanted.path.clone(), e.to_string())),
        }
    }
    for stale in &plan.remove {
        let path = Path::new(&stale.path);
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.missing.push(stale.path.clone());
                continue;
            }
            Err(e) => {
                report.failed.push((stale.path.clone(), e.to_string()));
                continue;
            }
            // Never follow a link to decide or delete: a link is not what keyport wrote.
            Ok(meta) if !meta.file_type().is_file() => {
                report.kept_changed.push(stale.path.clone());
                continue;
            }
            Ok(_) => {}
        }
        match fs::read(path) {
            Ok(existing) if sha256_hex(&existing) == stale.sha256 => match fs::remove_file(path) {
                Ok(()) => report.removed.push(stale.path.clone()),
                Err(e) => report.failed.push((stale.path.clone(), e.to_string())),
            },
            Ok(_) => report.kept_changed.push(stale.path.clone()),
            Err(e) => report.failed.push((stale.path.clone(), e.to_string())),
        }
    }
    report
}

/// Writes `content` to `path` atomically; new directories 0700, a new file 0600, an existing
/// file's mode kept.
fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    if !dir.exists() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mode = fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
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
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn wanted(path: &Path, content: &[u8]) -> Wanted {
        Wanted {
            path: path.display().to_string(),
            content: STANDARD.encode(content),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_new_files_private_and_leaves_unchanged_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/secret");
        let plan = Plan {
            write: vec![wanted(&file, b"v1\0bin")],
            remove: vec![],
        };
        let report = apply(&plan);
        assert_eq!(report.written.len(), 1, "{report:?}");
        assert_eq!(fs::read(&file).unwrap(), b"v1\0bin");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        let before = fs::metadata(&file).unwrap().modified().unwrap();
        let again = apply(&plan);
        assert_eq!(again.unchanged.len(), 1, "{again:?}");
        assert!(again.written.is_empty());
        assert_eq!(
            fs::metadata(&file).unwrap().modified().unwrap(),
            before,
            "not rewritten"
        );
        assert_eq!(again.unchanged[0].1, report.written[0].1, "same hash");
    }

    #[test]
    fn an_existing_files_mode_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cfg");
        fs::write(&file, "old").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        apply(&Plan {
            write: vec![wanted(&file, b"new")],
            remove: vec![],
        });
        assert_eq!(fs::read(&file).unwrap(), b"new");
        assert_eq!(mode(&file), 0o640);
    }

    #[test]
    fn removes_only_what_still_holds_keyports_content() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, changed, gone, link) = (
            dir.path().join("ours"),
            dir.path().join("changed"),
            dir.path().join("gone"),
            dir.path().join("link"),
        );
        fs::write(&ours, "written").unwrap();
        fs::write(&changed, "user edited").unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "written").unwrap();
        symlink(&target, &link).unwrap();
        let stale = |p: &Path| Stale {
            path: p.display().to_string(),
            sha256: sha256_hex(b"written"),
        };
        let report = apply(&Plan {
            write: vec![],
            remove: vec![stale(&ours), stale(&changed), stale(&gone), stale(&link)],
        });
        assert_eq!(report.removed, [ours.display().to_string()]);
        assert_eq!(report.missing, [gone.display().to_string()]);
        assert_eq!(
            report.kept_changed,
            [changed.display().to_string(), link.display().to_string()]
        );
        assert!(!ours.exists() && changed.exists() && link.exists() && target.exists());
    }

    #[test]
    fn debug_never_shows_content() {
        let w = wanted(Path::new("/x"), b"topsecret");
        assert!(!format!("{w:?}").contains(&STANDARD.encode(b"topsecret")));
    }
}
