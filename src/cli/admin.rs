//! `keyport admin …`: operator tasks on the data dir.

use clap::Subcommand;

use crate::config::Config;
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
}

/// Runs an `admin` subcommand.
pub fn run(config: &Config, cmd: AdminCommand) -> anyhow::Result<()> {
    let mut vault = super::open_vault(config)?;
    match cmd {
        AdminCommand::RotateMasterKey => {
            let r = vault.rotate_master_key(&Actor::cli())?;
            println!(
                "re-sealed {} values under master key {} (retired {})",
                r.resealed, r.new_id, r.old_id
            );
        }
        AdminCommand::JwtKey => {
            let key = vault.jwt_key()?;
            print!("{}", keyport_keys::jwt::public_pem(&key)?);
        }
    }
    Ok(())
}
