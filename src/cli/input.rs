//! Reading a secret value from stdin verbatim.
//!
//! What stdin is decides what it means, so nothing ever hangs on a stdin nobody writes to:
//! a pipe or a regular file carries a value (read to its end, at most one byte more than a
//! value may hold); a terminal, `/dev/null`, a socket or a closed stdin carry none.
//! With `--value`, stdin is only *looked at*, never read: a pipe that already holds data is
//! the error "given twice", anything else is left alone (so `--value` works inside
//! `while read …; do …; done < file` loops without eating their input).

use std::io::Read;
use std::os::fd::AsFd;

use keyport_keys::SecretBytes;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::{SFlag, fstat};

use super::output::UsageError;
use crate::secrets::validate::MAX_VALUE_BYTES;

/// How long to wait for a pipe's first bytes before deciding nothing was piped with `--value`.
const PIPE_GRACE_MS: u8 = 100;

#[derive(Debug, PartialEq, Eq)]
enum Stdin {
    /// A pipe or a regular file: it carries a value.
    Data { pipe: bool },
    /// A terminal, a character device such as /dev/null, a socket, or nothing at all.
    Nothing,
}

fn kind() -> Stdin {
    match fstat(std::io::stdin().as_fd()) {
        Ok(st) => {
            let format = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            if format == SFlag::S_IFIFO {
                Stdin::Data { pipe: true }
            } else if format == SFlag::S_IFREG {
                Stdin::Data { pipe: false }
            } else {
                Stdin::Nothing
            }
        }
        Err(_) => Stdin::Nothing,
    }
}

/// Reads stdin to its end when it is a pipe or a file; `None` otherwise. More than `limit`
/// bytes is an error naming `field`, found without reading further.
pub fn read_stdin(field: &str, limit: usize) -> anyhow::Result<Option<SecretBytes>> {
    if kind() == Stdin::Nothing {
        return Ok(None);
    }
    let mut buf = Vec::new();
    let cap = u64::try_from(limit + 1).unwrap_or(u64::MAX);
    std::io::stdin().lock().take(cap).read_to_end(&mut buf)?;
    if buf.len() > limit {
        return Err(UsageError(format!(
            "{field}: must be at most {limit} bytes; stdin holds more"
        ))
        .into());
    }
    Ok(Some(SecretBytes::new(buf)))
}

/// Whether a pipe on stdin already holds data (or gets some within a short grace period),
/// without reading any of it.
pub(super) fn pipe_has_data() -> anyhow::Result<bool> {
    if kind() != (Stdin::Data { pipe: true }) {
        return Ok(false);
    }
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(PIPE_GRACE_MS))? == 0 {
        return Ok(false);
    }
    // Readable means data or end of file; only data counts. FIONREAD tells them apart.
    let mut pending: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call.
    let rc = unsafe { nix::libc::ioctl(0, nix::libc::FIONREAD, &mut pending) };
    Ok(rc == 0 && pending > 0)
}

/// The value for `secret create` (`required`) or `secret update`: exactly one of `--value`
/// or stdin.
pub fn secret_value(flag: Option<String>, required: bool) -> anyhow::Result<Option<SecretBytes>> {
    if let Some(value) = flag {
        if pipe_has_data()? {
            return Err(
                UsageError("value: give it with --value or on stdin, not both".into()).into(),
            );
        }
        return Ok(Some(SecretBytes::new(value.into_bytes())));
    }
    let value = read_stdin("value", MAX_VALUE_BYTES)?.filter(|v| !v.is_empty());
    match &value {
        Some(value) => warn_trailing_newline(value),
        None if required => {
            return Err(UsageError(
                "value: give --value, or pipe the value on stdin (it was empty or not a pipe)"
                    .into(),
            )
            .into());
        }
        None => {}
    }
    Ok(value)
}

/// stdin is stored verbatim; `echo` adds a newline people rarely mean to keep.
fn warn_trailing_newline(value: &SecretBytes) {
    if value.expose().ends_with(b"\n") {
        eprintln!(
            "warning: the value from stdin ends in a newline and is stored as given \
             (use printf '%s' or echo -n to leave it out)"
        );
    }
}
