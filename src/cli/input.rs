//! Reading a secret value from stdin verbatim, and telling "nothing was piped" apart from
//! "an empty pipe" without hanging on a stdin nobody writes to (say, an open SSH channel).

use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;

use keyport_keys::SecretBytes;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::output::UsageError;

/// How long to wait for piped input to show up before deciding nothing was piped.
const PIPE_GRACE_MS: u8 = 200;

/// Reads all of stdin, blocking, when it is not a terminal. `None` on a terminal.
pub fn read_all() -> anyhow::Result<Option<SecretBytes>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf)?;
    Ok(Some(SecretBytes::new(buf)))
}

/// Reads stdin if something was piped to it: not a terminal, and readable (data or EOF)
/// within a short grace period. Empty input counts as nothing.
pub fn read_if_piped() -> anyhow::Result<Option<SecretBytes>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let ready = {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(PIPE_GRACE_MS))? > 0
    };
    if !ready {
        return Ok(None);
    }
    let mut buf = Vec::new();
    stdin.lock().read_to_end(&mut buf)?;
    Ok((!buf.is_empty()).then(|| SecretBytes::new(buf)))
}

/// The value for `secret create`/`update`: exactly one of `--value` or piped stdin.
/// `required`: create needs one; update may have none.
pub fn secret_value(flag: Option<String>, required: bool) -> anyhow::Result<Option<SecretBytes>> {
    match flag {
        Some(value) => {
            if read_if_piped()?.is_some() {
                return Err(
                    UsageError("value: give it with --value or on stdin, not both".into()).into(),
                );
            }
            Ok(Some(SecretBytes::new(value.into_bytes())))
        }
        None if required => {
            let value = read_all()?.ok_or_else(|| {
                UsageError("value: give --value, or pipe the value on stdin".into())
            })?;
            if value.is_empty() {
                return Err(
                    UsageError("value: stdin was empty; a value is required".into()).into(),
                );
            }
            warn_trailing_newline(&value);
            Ok(Some(value))
        }
        None => {
            let value = read_if_piped()?;
            if let Some(value) = &value {
                warn_trailing_newline(value);
            }
            Ok(value)
        }
    }
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
