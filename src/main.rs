//! The `keyport` binary: parse the command line, set up logging, run, map errors to exit codes.

use std::io::{self, IsTerminal, Write};

use keyport::cli;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let opts = cli::parse();
    if !matches!(opts.command, cli::Command::Serve(_)) {
        restore_sigpipe();
    }
    // Set before any file is created: everything keyport writes is private unless it says so.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(log_filter())
        .init();
    match cli::run(opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", cli::exit::message_for(&error));
            std::process::ExitCode::from(cli::exit::code_for(&error) as u8)
        }
    }
}

/// Rust ignores SIGPIPE, so `keyport user list | head` would fail writing to a closed pipe.
/// Commands that only print take the default action (exit quietly), as other Unix tools do.
/// The daemon keeps SIGPIPE ignored: a peer closing a socket must not kill it.
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL installs
    // no Rust handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Log output to stderr that drops what it cannot write. tracing-subscriber reports a failed
/// write with `eprintln!`, which panics when stderr is a closed pipe: the daemon must outlive
/// the terminal or pipe it was started from.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// `KEYPORT_LOG`: a bare level (`debug`) applies to keyport's own code while other crates stay
/// at `warn` (an HTTP or SSH library at debug or trace logs headers and payloads); a full
/// tracing directive (`keyport=trace,russh=debug`) is used as given, except that the HTTP
/// client keyport reads Vault with stays at `warn` unless the directive names it (at trace it
/// dumps the bytes it moves: tokens and values). Default `info`.
fn log_filter() -> EnvFilter {
    let spec = std::env::var("KEYPORT_LOG").unwrap_or_default();
    let spec = spec.trim();
    let directives = match spec {
        "" => "warn,keyport=info,keyport_keys=info".to_string(),
        level if !level.contains(['=', ',']) => {
            format!("warn,keyport={level},keyport_keys={level}")
        }
        full if full.contains("ureq") => full.to_string(),
        full => format!("{full},ureq=warn,ureq_proto=warn"),
    };
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}
