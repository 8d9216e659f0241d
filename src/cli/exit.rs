//! The one place errors become exit codes, and the one line printed for them.

use crate::client::ClientError;
use crate::keyring::KeyringError;
use crate::store::StoreError;
use crate::vault::VaultError;

/// keyport's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Success = 0,
    /// Anything not listed below.
    Failure = 1,
    /// Bad usage or input that breaks a rule (clap also exits 2).
    Usage = 2,
    /// The named thing does not exist.
    NotFound = 3,
    /// It collides with something that exists.
    Conflict = 4,
    /// Not authenticated or not allowed.
    Auth = 5,
    /// The server could not be reached.
    Unreachable = 6,
    /// The master key is missing or wrong, or the data dir is unusable.
    DataDir = 7,
}

/// The exit code for an error: the first error in its cause chain that keyport knows decides.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<VaultError>() {
            return match e {
                VaultError::Invalid(_) => ExitCode::Usage,
                VaultError::Conflict(_) => ExitCode::Conflict,
                VaultError::NotFound { .. } => ExitCode::NotFound,
                VaultError::Keyring(_) | VaultError::DataDir { .. } => ExitCode::DataDir,
                VaultError::Store(StoreError::Open { .. } | StoreError::TooNew { .. }) => {
                    ExitCode::DataDir
                }
                _ => ExitCode::Failure,
            };
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::NotConfigured | ClientError::Config { .. } => ExitCode::Auth,
                ClientError::Unreachable { .. } => ExitCode::Unreachable,
                ClientError::Api { status, .. } => match status {
                    400 | 413 | 415 | 422 => ExitCode::Usage,
                    401 | 403 => ExitCode::Auth,
                    404 => ExitCode::NotFound,
                    409 => ExitCode::Conflict,
                    _ => ExitCode::Failure,
                },
                ClientError::Protocol(_) => ExitCode::Failure,
            };
        }
        if cause.downcast_ref::<KeyringError>().is_some() {
            return ExitCode::DataDir;
        }
        if cause.is::<crate::cli::output::UsageError>() {
            return ExitCode::Usage;
        }
    }
    ExitCode::Failure
}

/// The single line printed for an error: the message and its causes, `: `-separated.
pub fn message_for(error: &anyhow::Error) -> String {
    format!("keyport: {error:#}")
}
