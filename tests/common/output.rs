//! Small readers of what a command left behind: its stderr, its last error line, a file's
//! permission bits.

use std::os::unix::fs::PermissionsExt;

/// `path`'s permission bits.
pub fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A command's stderr, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last stderr line (earlier ones may be debug logs).
pub fn error_line(out: &std::process::Output) -> String {
    stderr(out).lines().last().unwrap_or_default().to_string()
}
