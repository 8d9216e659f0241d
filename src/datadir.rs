//! The data directory and keyport's private files: created 0700 / 0600, written atomically.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The database file inside the data dir.
pub const DB_FILE: &str = "keyport.db";
/// The master key file inside the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where the data dir is when nothing names one: `$XDG_DATA_HOME/keyport`, else
/// `~/.local/share/keyport`, and `/var/lib/keyport` for root.
pub fn default_data_dir() -> PathBuf {
    if crate::osuser::is_root() {
        return PathBuf::from("/var/lib/keyport");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("keyport");
    }
    home_dir().join(".local/share/keyport")
}

/// `$HOME`, else the home from the password database, else `/`.
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::osuser::current().ok().map(|u| PathBuf::from(u.home)))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Creates `dir` (and missing parents) with mode 0700, and tightens an existing one to 0700.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, atomically: a temp file in the same directory is
/// written and fsynced, renamed over `path`, and the directory is fsynced, so a crash leaves
/// either the old file or the new one, never a torn one.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
