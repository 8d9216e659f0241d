//! `keyport workspace add|list|show|set|pin|remove|grant|revoke`: relay-mode workspaces.
//!
//! The admin commands work on the data dir, like `keyport user`. `list` goes over the API when
//! a login is configured (a user sees the workspaces granted to them) and reads the data dir
//! otherwise. `add --scan` and `pin --scan` read the sshd's host key once and pin it only after
//! an explicit yes, as a first `ssh` to a host asks before it trusts the key.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use russh::keys::{Algorithm, PublicKey};

use super::output::{self, Format, UsageError};
use crate::client::{Client, ClientError};
use crate::config::Config;
use std::str::FromStr as _;

use crate::vault::{Actor, GrantSpec, HostKeySource, WorkspaceAuth, WorkspaceInfo, WorkspaceSpec};

/// How long `--scan` waits for the sshd to show its key.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// `keyport workspace …`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Register a workspace: its sshd, the login there, its owners and its pinned host key
    /// (admin; data dir).
    Add(AddArgs),
    /// List workspaces: over the API when you are logged in (`keyport login`; a user sees the
    /// ones granted to them, an admin all), else every workspace in the data dir.
    List {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Show a workspace: address, login, host keys, and each user's grant with the login in
    /// effect for them (admin; data dir).
    Show {
        /// Workspace name.
        name: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Change how keyport logs in to a workspace: `--auth ca` (certificates from keyport's user
    /// CA; prints the sshd snippet) or `--auth key` (each user's keyport key in the login's
    /// authorized_keys) (admin; data dir).
    Set {
        /// Workspace name.
        name: String,
        /// `ca` or `key`.
        #[arg(long, value_name = "ca|key", value_parser = WorkspaceAuth::from_str)]
        auth: WorkspaceAuth,
    },
    /// Re-pin a workspace whose sshd was rebuilt: its pinned host keys are replaced by the
    /// given ones, or by the key its sshd shows now (--scan, once you confirm) (admin; data dir).
    Pin(PinArgs),
    /// Remove a workspace with its host keys and grants (admin; data dir).
    Remove {
        /// Workspace name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Let a user use a workspace, or change their grant; granting again without --os-user
    /// goes back to the workspace's login (admin; data dir).
    Grant {
        /// Workspace name.
        name: String,
        /// keyport user name.
        user: String,
        /// Their own login on the workspace instead of the workspace's (so users sharing a
        /// workspace need not share a home, and their file secrets do not meet).
        #[arg(long, value_name = "LOGIN")]
        os_user: Option<String>,
        /// Make them an owner too.
        #[arg(long)]
        owner: bool,
    },
    /// End a user's grant (the last owner's stays; remove the workspace instead) (admin; data
    /// dir).
    Revoke {
        /// Workspace name.
        name: String,
        /// keyport user name.
        user: String,
    },
}

/// `keyport workspace add`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("key").args(["host_key", "scan"]).required(true)))]
pub struct AddArgs {
    /// Workspace name (what users type in `ssh USER:NAME@gateway`).
    pub name: String,
    /// Its sshd, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,
    /// The login on the workspace (a grant's --os-user overrides it per user).
    #[arg(long, value_name = "LOGIN")]
    pub os_user: String,
    /// A keyport user who owns it, and so may use it (repeatable; at least one).
    #[arg(long, value_name = "USER", required = true)]
    pub owner: Vec<String>,
    /// Its host key, as in the sshd's /etc/ssh/ssh_host_*_key.pub (repeatable).
    #[arg(long, value_name = "KEY")]
    pub host_key: Vec<String>,
    /// Read the host key from the sshd now, show its fingerprint and pin it once you confirm.
    #[arg(long)]
    pub scan: bool,
    /// With --scan: pin the key without asking (check the fingerprint printed).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// How keyport logs in there: `key` (each user's keyport key, listed in the login's
    /// authorized_keys) or `ca` (a per-connection certificate from keyport's user CA, which
    /// the workspace trusts with one TrustedUserCAKeys line; the sshd snippet is printed).
    #[arg(long, value_name = "key|ca", default_value = "key", value_parser = WorkspaceAuth::from_str)]
    pub auth: WorkspaceAuth,
}

/// `keyport workspace pin`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("key").args(["host_key", "scan"]).required(true)))]
pub struct PinArgs {
    /// Workspace name.
    pub name: String,
    /// Its host key now, as in the sshd's /etc/ssh/ssh_host_*_key.pub (repeatable); the keys
    /// given replace every key pinned before.
    #[arg(long, value_name = "KEY")]
    pub host_key: Vec<String>,
    /// Read the host key from the workspace's sshd now, show its fingerprint beside the ones
    /// pinned, and pin it instead of them once you confirm.
    #[arg(long)]
    pub scan: bool,
    /// With --scan: pin the key without asking (check the fingerprint printed).
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Runs a `workspace` subcommand.
pub fn run(config: &Config, cmd: WorkspaceCommand) -> anyhow::Result<()> {
    if let WorkspaceCommand::List { output } = cmd {
        return list(config, output);
    }
    let mut vault = super::open_vault(config)?;
    let actor = Actor::cli();
    match cmd {
        WorkspaceCommand::Add(args) => add(&mut vault, config, &actor, args)?,
        WorkspaceCommand::List { .. } => {}
        WorkspaceCommand::Pin(args) => pin(&mut vault, &actor, args)?,
        WorkspaceCommand::Set { name, auth } => {
            let info = vault.set_workspace_auth(&actor, &name, auth)?;
            println!("workspace {name} now logs in with auth {auth}");
            if auth == WorkspaceAuth::Ca {
                super::ca::print_sshd_snippet(&vault, config, &info)?;
            }
        }
        WorkspaceCommand::Show { name, output } => {
            let info = vault.workspace(&name)?;
            match output {
                Format::Json => output::print_json(&info)?,
                Format::Table => print_details(&info),
            }
        }
        WorkspaceCommand::Remove { name, yes } => {
            vault.workspace(&name)?;
            output::confirm(
                &format!("remove workspace {name} with its host keys and grants?"),
                yes,
            )?;
            vault.remove_workspace(&actor, &name)?;
            println!("removed workspace {name}");
        }
        WorkspaceCommand::Grant {
            name,
            user,
            os_user,
            owner,
        } => {
            let grant = GrantSpec { os_user, owner };
            let info = vault.grant_workspace(&actor, &name, &user, &grant)?;
            let login = info
                .grants
                .iter()
                .find(|g| g.user == user)
                .map_or(info.os_user.as_str(), |g| g.login.as_str());
            println!("granted workspace {name} to {user} (login {login})");
            if info.auth == WorkspaceAuth::Ca && login != info.os_user {
                println!(
                    "{name} trusts keyport's user CA per login: add {login} to the Match User \
                     line of its sshd snippet (keyport workspace set {name} --auth ca prints it)"
                );
            }
        }
        WorkspaceCommand::Revoke { name, user } => {
            vault.revoke_workspace(&actor, &name, &user)?;
            println!("revoked {user}'s grant of workspace {name}");
        }
    }
    Ok(())
}

fn add(
    vault: &mut crate::vault::Vault,
    config: &Config,
    actor: &Actor,
    args: AddArgs,
) -> anyhow::Result<()> {
    let mut spec = WorkspaceSpec {
        name: args.name,
        address: args.address,
        os_user: args.os_user,
        owners: args.owner,
        host_keys: args.host_key,
        host_key_source: HostKeySource::Pinned,
        auth: args.auth,
    };
    if args.scan {
        // Everything else first: no question about a key for a workspace that cannot be added.
        vault.check_new_workspace(&spec)?;
        let question = format!("Pin this key for workspace {}?", spec.name);
        spec.host_keys = vec![scan_and_confirm(&spec.address, &question, args.yes)?];
        spec.host_key_source = HostKeySource::Scan;
    }
    let info = vault.add_workspace(actor, &spec)?;
    let owners: Vec<&str> = info.grants.iter().map(|g| g.user.as_str()).collect();
    println!(
        "added workspace {} ({}, login {}, owned by {})",
        info.name,
        info.address.as_deref().unwrap_or("-"),
        info.os_user,
        owners.join(", ")
    );
    for key in &info.host_keys {
        println!("pinned host key {} ({})", key.fingerprint, key.source);
    }
    if info.auth == WorkspaceAuth::Ca {
        super::ca::print_sshd_snippet(vault, config, &info)?;
    }
    Ok(())
}

/// `workspace pin`: the keys given, or the one scanned and confirmed, replace those pinned.
fn pin(vault: &mut crate::vault::Vault, actor: &Actor, args: PinArgs) -> anyhow::Result<()> {
    let (lines, source) = if args.scan {
        // Looked up first: no connection and no question for a workspace that does not exist.
        let current = vault.workspace(&args.name)?;
        let address = current
            .address
            .ok_or_else(|| anyhow::anyhow!("workspace {} has no address", args.name))?;
        // What the key would replace, shown before the question, so the admin sees the change.
        for key in &current.host_keys {
            println!(
                "Workspace {} has pinned {} ({})",
                args.name, key.fingerprint, key.source
            );
        }
        let question = format!(
            "Replace the host keys pinned for workspace {} with this key?",
            args.name
        );
        let line = scan_and_confirm(&address, &question, args.yes)?;
        (vec![line], HostKeySource::Scan)
    } else {
        (args.host_key, HostKeySource::Pinned)
    };
    let change = vault.pin_workspace_host_keys(actor, &args.name, &lines, source)?;
    for key in &change.replaced {
        println!("unpinned host key {} ({})", key.fingerprint, key.source);
    }
    for key in &change.workspace.host_keys {
        println!("pinned host key {} ({})", key.fingerprint, key.source);
    }
    println!("re-pinned workspace {}", change.workspace.name);
    Ok(())
}

/// Reads the key `address` presents, prints its fingerprint as a first `ssh` does, and returns
/// its line (no comment) once the admin says yes to `question` (see [`confirm_pin`]).
fn scan_and_confirm(address: &str, question: &str, yes: bool) -> anyhow::Result<String> {
    let key = scan(address)?;
    println!(
        "The host key of {address} is {} {}",
        kind(&key),
        crate::relay::scan::fingerprint(&key)
    );
    confirm_pin(question, yes)?;
    let mut line = key;
    line.set_comment("");
    Ok(line.to_openssh()?)
}

/// The key `address` presents, read on a small runtime of its own (the CLI is synchronous).
fn scan(address: &str) -> anyhow::Result<PublicKey> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = runtime
        .block_on(crate::relay::scan::host_key(address, SCAN_TIMEOUT))
        .map_err(|e| anyhow::anyhow!("scan: {e}"))?;
    Ok(key)
}

/// `-y`, or `yes` typed on a terminal, as `ssh` wants it typed before trusting a new host.
/// Anything else pins nothing.
fn confirm_pin(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let refused = |why: &str| -> anyhow::Error {
        UsageError(format!(
            "host key not pinned ({why}); nothing was stored. Check the fingerprint and run \
             again with -y, or pin the key with --host-key"
        ))
        .into()
    };
    if !std::io::stdin().is_terminal() {
        return Err(refused("stdin is not a terminal to confirm on"));
    }
    eprint!("{question} (yes/no) ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(refused("the answer was not yes"))
    }
}

/// The key type as `ssh` and `ssh-keygen -l` name it (`ED25519`, `ECDSA`, `RSA`).
fn kind(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ED25519".into(),
        Algorithm::Ecdsa { .. } => "ECDSA".into(),
        Algorithm::Rsa { .. } => "RSA".into(),
        Algorithm::SkEd25519 => "ED25519-SK".into(),
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK".into(),
        other => other.as_str().to_ascii_uppercase(),
    }
}

/// `workspace list`: the API's answer when a login is configured, else the data dir's.
fn list(config: &Config, output: Format) -> anyhow::Result<()> {
    let (workspaces, from_data_dir): (Vec<WorkspaceInfo>, bool) = match Client::from_env() {
        Ok(client) => (client.get("workspaces")?, false),
        Err(ClientError::NotConfigured) => (super::open_vault(config)?.workspaces()?, true),
        Err(e) => return Err(e.into()),
    };
    if output == Format::Json {
        return output::print_json(&workspaces);
    }
    // A user's view has no addresses and only their own grant: print what is in effect for them.
    let admin_view = from_data_dir || workspaces.iter().any(|w| w.address.is_some());
    let fingerprints = |w: &WorkspaceInfo| -> String {
        let all: Vec<&str> = w.host_keys.iter().map(|k| k.fingerprint.as_str()).collect();
        all.join(",")
    };
    if admin_view {
        output::print_table(
            &[
                "NAME",
                "ADDRESS",
                "LOGIN",
                "AUTH",
                "USERS",
                "HOST KEYS",
                "CREATED",
            ],
            &workspaces
                .iter()
                .map(|w| {
                    let users: Vec<&str> = w.grants.iter().map(|g| g.user.as_str()).collect();
                    vec![
                        w.name.clone(),
                        w.address.clone().unwrap_or_else(|| "-".into()),
                        w.os_user.clone(),
                        w.auth.to_string(),
                        users.join(","),
                        fingerprints(w),
                        output::time(w.created_at),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    } else {
        output::print_table(
            &["NAME", "LOGIN", "OWNER", "HOST KEYS"],
            &workspaces
                .iter()
                .map(|w| {
                    let grant = w.grants.first();
                    vec![
                        w.name.clone(),
                        grant.map_or_else(|| w.os_user.clone(), |g| g.login.clone()),
                        if grant.is_some_and(|g| g.owner) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        fingerprints(w),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }
    Ok(())
}

/// What `auth` means, for `workspace show`.
fn auth_words(auth: WorkspaceAuth) -> &'static str {
    match auth {
        WorkspaceAuth::Key => "key (each user's keyport key in the login's authorized_keys)",
        WorkspaceAuth::Ca => "ca (certificates from keyport's user CA; keyport ca show)",
    }
}

/// `workspace show`: one field per line, then the host keys and the grants as tables.
fn print_details(info: &WorkspaceInfo) {
    println!("name:     {}", info.name);
    println!("address:  {}", info.address.as_deref().unwrap_or("-"));
    println!("login:    {} (unless a grant sets its own)", info.os_user);
    println!("auth:     {}", auth_words(info.auth));
    println!("created:  {}", output::time(info.created_at));
    println!("updated:  {}", output::time(info.updated_at));
    println!();
    output::print_table(
        &["HOST KEY", "SOURCE", "ADDED"],
        &info
            .host_keys
            .iter()
            .map(|k| {
                vec![
                    k.fingerprint.clone(),
                    k.source.clone(),
                    output::time(k.added_at),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!();
    output::print_table(
        &["USER", "OWNER", "LOGIN IN EFFECT", "GRANTED"],
        &info
            .grants
            .iter()
            .map(|g| {
                let login = match &g.os_user {
                    Some(own) => format!("{own} (grant)"),
                    None => format!("{} (workspace)", g.login),
                };
                vec![
                    g.user.clone(),
                    if g.owner { "yes" } else { "no" }.into(),
                    login,
                    output::time(g.created_at),
                ]
            })
            .collect::<Vec<_>>(),
    );
}
