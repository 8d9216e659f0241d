//! Output helpers shared by the subcommands: tables, JSON, times, confirmations.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};

use clap::ValueEnum;
use serde::Serialize;

/// How a list is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
}

/// A command-line argument that is a secret (`--value`, `--token`): `Debug` redacts it.
#[derive(Clone)]
pub struct SecretArg(pub String);

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg(<redacted>)")
    }
}

/// A usage problem found by the CLI itself (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Prints rows under headers with columns padded to the widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Prints `value` as pretty JSON.
///
/// Timestamps (`at` and `*_at` fields, ms since the epoch in the API) are printed as RFC 3339,
/// as the tables show them: `"updated_at": "2026-12-02T01:02:25.123Z"`.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(value)?;
    rfc3339_times(&mut value);
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Rewrites every timestamp field in `value` (any depth) from ms to RFC 3339.
fn rfc3339_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                let stamp = key == "at" || key.ends_with("_at");
                match field.as_i64() {
                    Some(ms) if stamp => {
                        let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                        *field = humantime::format_rfc3339_millis(t).to_string().into();
                    }
                    _ => rfc3339_times(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(rfc3339_times),
        _ => {}
    }
}

pub use crate::when::rfc3339 as time;

/// Prints a public key as `key show` does: the key line, then a `#` comment with the
/// fingerprint, so the output still works as an `authorized_keys` file.
pub fn print_public_key(key: &crate::vault::UserKeyInfo) {
    println!("{}", key.public_key);
    println!("# {} ({})", key.fingerprint, key.algorithm);
}

/// Reads a file the user named on the command line; a failure names the flag.
pub fn read_arg_file(flag: &str, path: &std::path::Path) -> Result<String, UsageError> {
    std::fs::read_to_string(path).map_err(|e| UsageError(format!("{flag} {}: {e}", path.display())))
}

/// Asks `question` on a terminal; `yes` (from `-y`) skips it. Without a terminal and without
/// `-y`, refuses: a script must say `-y` to destroy things.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "{question}: not confirmed (pass -y to skip the question)"
        ))
        .into());
    }
    ask(question)
}

/// Asks on a terminal; without one (a script, a pipe) goes ahead, as `coder secret delete`
/// does — `-y` still skips the question.
pub fn confirm_if_terminal(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    ask(question)
}

fn ask(question: &str) -> anyhow::Result<()> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(UsageError("cancelled".into()).into())
    }
}
