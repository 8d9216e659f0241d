//! `keyport key show|regenerate`: the generated key pair's public half. Over the API for
//! yourself; `--user NAME` reads the data dir directly (admins, on the keyport host).

use clap::Subcommand;
use serde_json::json;

use super::output::{self, Format};
use super::user::KeyTypeArg;
use crate::client::Client;
use crate::config::Config;
use crate::vault::UserKeyInfo;

/// `keyport key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the public key line (for GitHub or authorized_keys) and its SHA256 fingerprint.
    Show {
        /// Another user, read from the data dir instead of the API.
        #[arg(long)]
        user: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Replace your key pair; the old key stops working at once.
    Regenerate {
        /// Algorithm of the new key (default: the current one's).
        #[arg(long = "type", value_enum)]
        key_type: Option<KeyTypeArg>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// Runs a `key` subcommand.
pub fn run(config: &Config, cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Show { user, output } => {
            let key = match user {
                Some(user) => super::open_vault(config)?.user_key(&user)?,
                None => Client::from_env()?.get::<UserKeyInfo>("users/me/key")?,
            };
            match output {
                Format::Json => output::print_json(&key)?,
                Format::Table => output::print_public_key(&key),
            }
        }
        KeyCommand::Regenerate { key_type, yes } => {
            let client = Client::from_env()?;
            output::confirm(
                "replace your key pair? remotes that trust the old public key will refuse you",
                yes,
            )?;
            let algorithm = key_type.map(|k| keyport_keys::KeyType::from(k).as_str());
            let key: UserKeyInfo =
                client.send("PUT", "users/me/key", &json!({ "algorithm": algorithm }))?;
            println!("new key pair; register this public key where the old one was:");
            output::print_public_key(&key);
        }
    }
    Ok(())
}
