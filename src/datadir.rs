//! The data directory and keyport's private files: created 0700 / 0600, written atomically.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The database file inside the data dir.
pub const DB_FILE: &str = "keyport.db";
/// The master key file inside the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The lock file inside the data dir.
pub const LOCK_FILE: &str = "lock";
/// Marks keyport's temp files: `.<name>.tmp-<random>`.
const TEMP_MARK: &str = ".tmp-";

/// The data dir of a daemon run as root when nothing names one: the whole host's.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/keyport";

/// Where the data dir is when nothing names one: `$XDG_DATA_HOME/keyport`, else
/// `~/.local/share/keyport`, and `/var/lib/keyport` for root.
pub fn default_data_dir() -> PathBuf {
    if crate::osuser::is_root() {
        return PathBuf::from(SYSTEM_DATA_DIR);
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

/// Creates `dir` (and missing parents) with mode 0700. An existing dir must already be private:
/// keyport refuses one that group or others can enter rather than chmod a directory it may not
/// own the purpose of (say `KEYPORT_DATA_DIR=$HOME`).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return DirBuilder::new().recursive(true).mode(0o700).create(dir);
    }
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "is open to group or others (mode {mode:04o}); make it private with `chmod 700 {}`",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Creates `dir` with mode 0700 if it is missing; leaves an existing one as it is.
pub fn create_dir_private(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Takes the data dir's exclusive lock (`<dir>/lock`, flock), held until the guard drops.
/// Key set-up and rotation run under it so concurrent processes cannot interleave them.
pub fn lock(dir: &Path) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
}

/// Removes temp files a killed writer left behind (they may hold a key being written).
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(TEMP_MARK) {
            fs::remove_file(entry.path())?;
        }
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
