//! `keyport admin …`: operator tasks on the data dir.

use clap::Subcommand;

use crate::config::Config;
use crate::store::{Database, Store};
use crate::vault::Actor;

/// `keyport admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Re-seal every stored secret and key under a new master key, in one transaction.
    ///
    /// With a key file, the new key replaces <data dir>/master.key. With KEYPORT_MASTER_KEY,
    /// set KEYPORT_NEW_MASTER_KEY to the new key and swap the variables afterwards.
    RotateMasterKey,
    /// Print the public key keyport signs its per-user JWTs for Vault/OpenBao with (SPKI PEM,
    /// for the JWT auth method's jwt_validation_pubkeys), creating the key on first use.
    ///
    /// The key is ECDSA P-256 (ES256), sealed in the database like the host key; each JWT
    /// says sub = the keyport user, so Vault's policies and audit log see the user.
    JwtKey,
    /// Bring the database's schema up to this keyport's (every start does it too), and
    /// print the version it is at. Needs no master key.
    Migrate,
}

/// Runs an `admin` subcommand.
pub fn run(config: &Config, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Migrate => migrate(config)?,
        AdminCommand::RotateMasterKey => {
            let r = super::open_vault(config)?.rotate_master_key(&Actor::cli())?;
            println!(
                "re-sealed {} values under master key {} (retired {})",
                r.resealed, r.new_id, r.old_id
            );
        }
        AdminCommand::JwtKey => {
            let key = super::open_vault(config)?.jwt_key()?;
            print!("{}", keyport_keys::jwt::public_pem(&key)?);
        }
    }
    Ok(())
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    let database = config.database()?;
    if let Database::File(_) = database {
        crate::datadir::ensure_private_dir(&config.data_dir())?;
    }
    let (store, applied) = Store::connect_migrating(&database)?;
    let version = store.schema_version()?;
    let what = if applied.is_empty() {
        "already up to date".to_string()
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        format!("applied {}", list.join(", "))
    };
    println!("{}: schema version {version} ({what})", database.describe());
    Ok(())
}
