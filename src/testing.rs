//! Support for keyport's own tests (unit and integration), kept in the library so that both
//! kinds share it: the rule for tests that need root.
//!
//! A root-only test never passes silently without root. It runs when the tests run as root
//! (CI does). Without root it *fails*, unless `KEYPORT_TESTS_WITHOUT_ROOT=1` is set (as
//! `scripts/test` does for a non-root user), in which case it is recorded as not run in the
//! file `KEYPORT_TESTS_NOT_RUN` names, and `scripts/test` prints the list at the end.

use std::io::Write;

/// Whether a root-only test may go on: `true` as root. Without root, records the test as not
/// run and returns `false` when `KEYPORT_TESTS_WITHOUT_ROOT=1`; otherwise panics.
// Test support only: failing the calling test is the point.
#[allow(clippy::panic)]
pub fn needs_root(why: &str) -> bool {
    if crate::osuser::is_root() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if std::env::var_os("KEYPORT_TESTS_WITHOUT_ROOT").is_none_or(|v| v != "1") {
        panic!(
            "{test} needs root ({why}); run the tests as root, or set \
             KEYPORT_TESTS_WITHOUT_ROOT=1 to report it as not run"
        );
    }
    eprintln!("NOT RUN (needs root: {why}): {test}");
    if let Some(path) = std::env::var_os("KEYPORT_TESTS_NOT_RUN")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write of the whole line: tests run in parallel, and O_APPEND keeps a single
        // write whole.
        let _ = file.write_all(format!("{test} ({why})\n").as_bytes());
    }
    false
}
