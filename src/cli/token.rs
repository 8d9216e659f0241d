//! `keyport token create|list|revoke`: your API tokens.

use clap::Subcommand;
use serde_json::json;

use super::output::{self, Format};
use crate::api::TokenCreated;
use crate::client::{Client, segment};
use crate::config::Config;
use crate::store::TokenRecord;
use crate::vault::Actor;

/// `keyport token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// Token name (e.g. the machine it is for).
        name: String,
        /// Create it for this user on the data dir (admins on the keyport host: a new user's
        /// first token).
        #[arg(long)]
        user: Option<String>,
    },
    /// List your tokens (names and times).
    List {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Revoke a token.
    Revoke {
        /// Token name.
        name: String,
    },
}

/// Runs a `token` subcommand.
pub fn run(config: &Config, cmd: TokenCommand) -> anyhow::Result<()> {
    if let TokenCommand::Create {
        name,
        user: Some(user),
    } = &cmd
    {
        let issued = super::open_vault(config)?.create_token(&Actor::cli(), user, name)?;
        eprintln!("token {name} created for {user}; it is shown only this once:");
        println!("{}", issued.token.as_str());
        return Ok(());
    }
    let client = Client::from_env()?;
    match cmd {
        TokenCommand::Create { name, .. } => {
            let created: TokenCreated =
                client.send("POST", "users/me/tokens", &json!({ "name": name }))?;
            eprintln!(
                "token {} created; it is shown only this once:",
                created.name
            );
            println!("{}", created.token);
        }
        TokenCommand::List { output } => {
            let tokens: Vec<TokenRecord> = client.get("users/me/tokens")?;
            match output {
                Format::Json => output::print_json(&tokens)?,
                Format::Table => output::print_table(
                    &["NAME", "CREATED", "LAST USED"],
                    &tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                output::time(t.created_at),
                                t.last_used_at.map_or_else(|| "never".into(), output::time),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        TokenCommand::Revoke { name } => {
            client.delete(&format!("users/me/tokens/{}", segment(&name)))?;
            println!("revoked token {name}");
        }
    }
    Ok(())
}
