//! `keyport ca init|show|rotate|promote|status|retire`: keyport as the workspaces' SSH user
//! CA, and the sshd snippet a workspace added with `--auth ca` needs.
//!
//! Admin commands on the data dir, like `keyport workspace`. No command ever prints a CA's
//! private half: `show` prints the `TrustedUserCAKeys` lines only, so its output can be
//! written to a workspace's CA file as it is (`keyport ca show > keyport_user_ca.pub`).

use clap::Subcommand;
use keyport_keys::KeyType;

use super::output::{self, Format};
use crate::config::Config;
use crate::vault::{Actor, CaStatus, UserCaInfo, Vault, WorkspaceInfo};

/// `keyport ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make keyport's user CA (done for you by the first `workspace add --auth ca`; use this
    /// to choose ECDSA P-256 for hosts where FIPS rules out ed25519) (admin; data dir).
    Init {
        /// `ed25519` or `ecdsa-p256` (never RSA).
        #[arg(long = "type", value_name = "TYPE", default_value = "ed25519")]
        kind: KeyType,
    },
    /// Print the TrustedUserCAKeys lines workspaces must trust: the active CA's, and during a
    /// rotation the next or previous one's too (admin; data dir).
    Show,
    /// Make the next CA: it does not sign yet. Install both lines on every workspace, then
    /// `keyport ca promote` (admin; data dir).
    Rotate {
        /// `ed25519` or `ecdsa-p256`.
        #[arg(long = "type", value_name = "TYPE", default_value = "ed25519")]
        kind: KeyType,
    },
    /// The next CA starts signing; the one it replaces stays as a fallback for workspaces
    /// that do not trust the new one yet, until `keyport ca retire` (admin; data dir).
    Promote,
    /// The CAs, and the CA each `--auth ca` workspace last accepted: workspaces still on the
    /// previous CA need the new line before it is retired (admin; data dir).
    Status {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Drop a CA: the previous one (default), or the next one by id to abandon a rotation.
    /// Workspaces that trust only it can no longer be reached (admin; data dir).
    Retire {
        /// The CA's id (`ca1`, …); default: the previous CA.
        id: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// Runs a `ca` subcommand.
pub fn run(config: &Config, cmd: CaCommand) -> anyhow::Result<()> {
    let mut vault = super::open_vault(config)?;
    let actor = Actor::cli();
    let gateway = config.ca.gateway_name();
    match cmd {
        CaCommand::Init { kind } => {
            let ca = vault.init_user_ca(&actor, kind)?;
            eprintln!(
                "made user CA {} ({}, {}); workspaces trust this line:",
                ca.id, ca.algorithm, ca.fingerprint
            );
            println!("{}", ca.trusted_line(&gateway));
        }
        CaCommand::Show => {
            let (cas, made) = vault.ensure_user_ca(&actor)?;
            if made {
                eprintln!("keyport had no user CA: made an ed25519 one");
            }
            for ca in &cas {
                println!("{}", ca.trusted_line(&gateway));
            }
        }
        CaCommand::Rotate { kind } => {
            let next = vault.rotate_user_ca(&actor, kind)?;
            eprintln!(
                "made the next user CA {} ({}, {}); it does not sign yet. Put these lines in \
                 every workspace's TrustedUserCAKeys file, then run keyport ca promote:",
                next.id, next.algorithm, next.fingerprint
            );
            print_lines(&vault.user_cas()?, &gateway);
        }
        CaCommand::Promote => {
            let cas = vault.promote_user_ca(&actor)?;
            if let Some(active) = cas.iter().find(|c| c.state == "active") {
                println!("user CA {} signs now", active.id);
            }
            if let Some(previous) = cas.iter().find(|c| c.state == "previous") {
                println!(
                    "{} stays as a fallback for workspaces without the new line (keyport ca \
                     status names them); keyport ca retire drops it",
                    previous.id
                );
            }
        }
        CaCommand::Status { output } => {
            let status = vault.ca_status()?;
            match output {
                Format::Json => output::print_json(&status)?,
                Format::Table => print_status(&status),
            }
        }
        CaCommand::Retire { id, yes } => {
            let status = vault.ca_status()?;
            let target = match &id {
                Some(id) => status.cas.iter().find(|c| &c.id == id),
                None => status.cas.iter().find(|c| c.state == "previous"),
            };
            if let Some(ca) = target {
                let on_it: Vec<&str> = status
                    .workspaces
                    .iter()
                    .filter(|w| w.last_ca.as_deref() == Some(ca.id.as_str()))
                    .map(|w| w.name.as_str())
                    .collect();
                let question = if on_it.is_empty() {
                    format!("retire user CA {}?", ca.id)
                } else {
                    format!(
                        "retire user CA {}? these workspaces last accepted only it and will be \
                         refused: {}",
                        ca.id,
                        on_it.join(", ")
                    )
                };
                output::confirm(&question, yes)?;
            }
            let retired = vault.retire_user_ca(&actor, id.as_deref())?;
            println!(
                "retired user CA {} ({}); remove its line from the workspaces",
                retired.id, retired.fingerprint
            );
        }
    }
    Ok(())
}

fn print_lines(cas: &[UserCaInfo], gateway: &str) {
    for ca in cas {
        println!("{}", ca.trusted_line(gateway));
    }
}

fn print_status(status: &CaStatus) {
    output::print_table(
        &["CA", "STATE", "TYPE", "FINGERPRINT", "CREATED"],
        &status
            .cas
            .iter()
            .map(|c| {
                vec![
                    c.id.clone(),
                    c.state.clone(),
                    c.algorithm.clone(),
                    c.fingerprint.clone(),
                    output::time(c.created_at),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!();
    if status.workspaces.is_empty() {
        println!("no workspace logs in with certificates (workspace add --auth ca)");
        return;
    }
    output::print_table(
        &["WORKSPACE", "LAST ACCEPTED CA", "AT"],
        &status
            .workspaces
            .iter()
            .map(|w| {
                let last = match (&w.last_ca, w.on_active) {
                    (None, _) => "- (no login yet)".to_string(),
                    (Some(id), true) => id.clone(),
                    (Some(id), false) => format!("{id} (NOT the active CA: install its line)"),
                };
                vec![
                    w.name.clone(),
                    last,
                    w.last_ca_at.map(output::time).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// What an admin does on a workspace that logs in with certificates: the CA file and a
/// `Match User` block for each login keyport uses there, then `sshd -t` and a reload.
pub fn print_sshd_snippet(
    vault: &Vault,
    config: &Config,
    info: &WorkspaceInfo,
) -> anyhow::Result<()> {
    let gateway = config.ca.gateway_name();
    let mut logins: Vec<&str> = std::iter::once(info.os_user.as_str())
        .chain(info.grants.iter().map(|g| g.login.as_str()))
        .collect();
    logins.sort_unstable();
    logins.dedup();
    println!(
        "\nOn {}, as root, trust keyport's user CA for {} only:\n",
        info.name,
        logins.join(", ")
    );
    println!("  cat > /etc/ssh/keyport_user_ca.pub <<'EOF'");
    for ca in vault.user_cas()? {
        println!("  {}", ca.trusted_line(&gateway));
    }
    println!("  EOF");
    println!("  cat > /etc/ssh/sshd_config.d/keyport.conf <<'EOF'");
    println!("  Match User {}", logins.join(","));
    println!("      TrustedUserCAKeys /etc/ssh/keyport_user_ca.pub");
    println!("  EOF");
    println!("  sshd -t && systemctl reload ssh    # the unit is sshd on some distributions\n");
    println!(
        "No authorized_keys entry is needed: keyport signs a certificate per connection, valid \
         {}s either side of now, principal = the login, key id keyport:{gateway}:<user>:{}:<conn> \
         (the sshd log names it). If the host already has TrustedUserCAKeys, append the line to \
         that file instead; if it has no sshd_config.d, put the Match block at the end of \
         sshd_config.",
        config.ca.validity_skew_secs, info.name
    );
    Ok(())
}
