//! `keyport key show`: a user's generated public key and its fingerprint.

use clap::Subcommand;

use super::output::{self, Format};
use crate::config::Config;

/// `keyport key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the public key line (for GitHub or authorized_keys) and its SHA256 fingerprint.
    Show {
        /// The user (reads the data dir).
        #[arg(long)]
        user: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
}

/// Runs a `key` subcommand.
pub fn run(config: &Config, cmd: KeyCommand) -> anyhow::Result<()> {
    let vault = super::open_vault(config)?;
    match cmd {
        KeyCommand::Show { user, output } => {
            let key = vault.user_key(&user)?;
            match output {
                Format::Json => output::print_json(&key)?,
                Format::Table => output::print_public_key(&key),
            }
        }
    }
    Ok(())
}
