//! `keyport user add|list|remove`: accounts, on the data dir.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use keyport_keys::KeyType;
use serde::Serialize;

use super::output::{self, Format};
use crate::config::Config;
use crate::vault::{Actor, NewUserSpec};

/// `keyport user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with a fresh key pair.
    Add(AddArgs),
    /// List users.
    List {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Remove a user with their secrets, key pair, login keys and tokens.
    Remove {
        /// User name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// `keyport user add`
#[derive(Debug, Args)]
pub struct AddArgs {
    /// User name (what they type in `ssh NAME@host`).
    pub name: String,
    /// Make them an admin.
    #[arg(long)]
    pub admin: bool,
    /// OS account their sessions run as when keyport runs as root (default: the account of the
    /// same name).
    #[arg(long, value_name = "USER")]
    pub os_user: Option<String>,
    /// A public key line they log in with (repeatable).
    #[arg(long, value_name = "KEY")]
    pub login_key: Vec<String>,
    /// A file of public keys, authorized_keys style (repeatable).
    #[arg(long, value_name = "FILE")]
    pub login_key_file: Vec<PathBuf>,
    /// Algorithm of their generated key pair.
    #[arg(long, value_name = "TYPE", value_enum, default_value_t)]
    pub key_type: KeyTypeArg,
}

/// `--key-type` values (keyport-keys has no clap dependency).
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum KeyTypeArg {
    /// Ed25519 (default).
    #[default]
    Ed25519,
    /// ECDSA on NIST P-256.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
}

impl From<KeyTypeArg> for KeyType {
    fn from(arg: KeyTypeArg) -> Self {
        match arg {
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        }
    }
}

#[derive(Serialize)]
struct UserRow<'a> {
    #[serde(flatten)]
    user: &'a crate::store::UserRecord,
    login_keys: usize,
    key_fingerprint: String,
}

/// Runs a `user` subcommand.
pub fn run(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let mut vault = super::open_vault(config)?;
    match cmd {
        UserCommand::Add(args) => {
            let mut login_keys = args.login_key;
            for path in &args.login_key_file {
                login_keys.push(output::read_arg_file("login-key-file", path)?);
            }
            let spec = NewUserSpec {
                name: args.name,
                admin: args.admin,
                os_user: args.os_user,
                login_keys,
                key_type: args.key_type.into(),
            };
            let user = vault.add_user(&Actor::cli(), &spec)?;
            let key = vault.user_key(&user.name)?;
            let logins = vault.login_keys(&user.name)?.len();
            println!(
                "created user {} ({}OS user {}, {logins} login key{})",
                user.name,
                if user.is_admin { "admin, " } else { "" },
                user.os_user,
                if logins == 1 { "" } else { "s" },
            );
            output::print_public_key(&key);
        }
        UserCommand::List { output } => {
            let users = vault.users()?;
            let mut rows = Vec::new();
            for user in &users {
                rows.push(UserRow {
                    user,
                    login_keys: vault.login_keys(&user.name)?.len(),
                    key_fingerprint: vault.user_key(&user.name)?.fingerprint,
                });
            }
            match output {
                Format::Json => output::print_json(&rows)?,
                Format::Table => output::print_table(
                    &["NAME", "ADMIN", "OS USER", "LOGIN KEYS", "KEY", "CREATED"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.user.name.clone(),
                                if r.user.is_admin { "yes" } else { "no" }.into(),
                                r.user.os_user.clone(),
                                r.login_keys.to_string(),
                                r.key_fingerprint.clone(),
                                output::time(r.user.created_at),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
        }
        UserCommand::Remove { name, yes } => {
            vault.user(&name)?;
            output::confirm(
                &format!("remove user {name} with all their secrets, keys and tokens?"),
                yes,
            )?;
            vault.remove_user(&Actor::cli(), &name)?;
            println!("removed user {name}");
        }
    }
    Ok(())
}
