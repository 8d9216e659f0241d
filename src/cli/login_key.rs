//! `keyport login-key add|list|remove`: the public keys a user logs in with, on the data dir.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{self, Format, UsageError};
use crate::config::Config;
use crate::vault::Actor;

/// `keyport login-key …`
#[derive(Debug, Subcommand)]
pub enum LoginKeyCommand {
    /// Add public keys (a line, or a file of lines) to a user.
    Add {
        /// The user.
        #[arg(long)]
        user: String,
        /// A public key line.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        key: Option<String>,
        /// A file of public keys, authorized_keys style.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List a user's login keys.
    List {
        /// The user.
        #[arg(long)]
        user: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Remove a login key, by SHA256 fingerprint or public key line.
    Remove {
        /// The user.
        #[arg(long)]
        user: String,
        /// `SHA256:…` fingerprint or public key line.
        key: String,
    },
}

/// Runs a `login-key` subcommand.
pub fn run(config: &Config, cmd: LoginKeyCommand) -> anyhow::Result<()> {
    let mut vault = super::open_vault(config)?;
    match cmd {
        LoginKeyCommand::Add { user, key, file } => {
            let text = match (key, file) {
                (Some(key), _) => key,
                (None, Some(path)) => output::read_arg_file("file", &path)?,
                (None, None) => return Err(UsageError("give a key or --file".into()).into()),
            };
            for key in vault.add_login_keys(&Actor::cli(), &user, &[text])? {
                println!(
                    "added {} {} {}",
                    key.fingerprint, key.algorithm, key.comment
                );
            }
        }
        LoginKeyCommand::List { user, output } => {
            let keys = vault.login_keys(&user)?;
            match output {
                Format::Json => output::print_json(&keys)?,
                Format::Table => output::print_table(
                    &["FINGERPRINT", "ALGORITHM", "COMMENT", "ADDED"],
                    &keys
                        .iter()
                        .map(|k| {
                            vec![
                                k.fingerprint.clone(),
                                k.algorithm.clone(),
                                k.comment.clone(),
                                output::time(k.created_at),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        LoginKeyCommand::Remove { user, key } => {
            vault.remove_login_key(&Actor::cli(), &user, &key)?;
            println!("removed login key from {user}");
        }
    }
    Ok(())
}
