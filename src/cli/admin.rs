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
    /// List the daemons on this database (replicas): node id, host, version, the master key
    /// each seals with and the one staged for the next rotation, when each was last heard
    /// from, and whether it counts as live ([replicas] alive_secs).
    Nodes,
    /// Bring the database's schema up to this keyport's (every start does it too), and
    /// print the version it is at. Needs no master key.
    Migrate,
}

/// Runs an `admin` subcommand.
pub fn run(config: &Config, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Migrate => migrate(config)?,
        AdminCommand::Nodes => nodes(config)?,
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

fn nodes(config: &Config) -> anyhow::Result<()> {
    let nodes = super::open_vault(config)?.nodes()?;
    if nodes.is_empty() {
        println!("no daemon has written a heartbeat to this database");
        return Ok(());
    }
    let now = crate::store::now_ms();
    let alive_ms = i64::try_from(config.replicas.alive().as_millis()).unwrap_or(i64::MAX);
    let rows: Vec<[String; 8]> = nodes
        .iter()
        .map(|n| {
            let ago = (now - n.seen_at).max(0);
            [
                n.id.clone(),
                n.host.clone(),
                n.version.clone(),
                n.key_id.clone(),
                n.next_key_id.clone().unwrap_or_else(|| "-".into()),
                format!("{}s ago", ago / 1000),
                if ago <= alive_ms { "live" } else { "gone" }.into(),
                n.data_dir.clone(),
            ]
        })
        .collect();
    let header = [
        "NODE", "HOST", "VERSION", "KEY", "NEXT-KEY", "SEEN", "STATE", "DATA-DIR",
    ];
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    Ok(())
}
