//! The command line: what the user typed ([`Opts`]), kept apart from the validated runtime
//! [`Config`], and one module per subcommand group. Errors become exit codes in [`exit`].

pub mod admin;
pub mod audit;
pub mod exit;
pub mod gitssh;
mod input;
pub mod key;
pub mod login;
pub mod login_key;
pub mod output;
pub mod secret;
pub mod serve;
pub mod token;
pub mod user;
pub mod workspace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::vault::Vault;

/// keyport: SSH sessions with your secrets injected and your git key served from memory.
#[derive(Debug, Parser)]
#[command(name = "keyport", version, about, propagate_version = true)]
pub struct Opts {
    /// Config file (TOML); default /etc/keyport/keyport.toml as root, else
    /// ~/.config/keyport/keyport.toml when it exists.
    #[arg(long, env = "KEYPORT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data dir (database, master key).
    #[arg(long, env = "KEYPORT_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: SSH and HTTP API listeners (creates the data dir on first start).
    Serve(serve::ServeArgs),
    /// Manage users (admin; works on the data dir, also while the daemon runs).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage the public keys a user logs in with (admin; data dir).
    #[command(subcommand)]
    LoginKey(login_key::LoginKeyCommand),
    /// Save the API URL and a token for the commands below.
    Login(login::LoginArgs),
    /// Your secrets: create, update, list, delete, import (over the API).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Your generated key pair: show the public key, regenerate.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Your API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Audit events: yours, or everyone's for admins.
    Audit(audit::AuditArgs),
    /// Run ssh with this session's keyport key (what GIT_SSH_COMMAND runs in a session).
    Gitssh(gitssh::GitSshArgs),
    /// Started by `serve`: ends live sessions if the daemon is killed (not for users).
    #[command(hide = true)]
    SessionReaper,
    /// Relay-mode workspaces: add, list, show, remove, grant, revoke (admin on the data dir;
    /// `list` over the API when logged in).
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCommand),
    /// Operator tasks on the data dir.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `keyport config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration, commented.
    PrintDefault,
}

/// Runs the parsed command.
pub fn run(opts: Opts) -> anyhow::Result<()> {
    // Any command may open the vault and unseal keys or values: never let a core dump write
    // this process's memory to disk.
    // Sessions get the limits the daemon was started with, not the ones it sets itself.
    crate::ssh::remember_limits();
    disable_core_dumps();
    raise_descriptor_limit();
    if let Command::Gitssh(args) = opts.command {
        // No config: it runs inside sessions, for git, and needs none.
        let code = gitssh::run(args)?;
        std::process::exit(i32::from(code));
    }
    if let Command::SessionReaper = opts.command {
        return Ok(crate::ssh::reaper::run()?);
    }
    let config = load_config(&opts)?;
    match opts.command {
        Command::Serve(args) => serve::run(config, args),
        Command::User(cmd) => user::run(&config, cmd),
        Command::LoginKey(cmd) => login_key::run(&config, cmd),
        Command::Login(args) => login::run(args),
        Command::Secret(cmd) => secret::run(cmd),
        Command::Key(cmd) => key::run(&config, cmd),
        Command::Token(cmd) => token::run(&config, cmd),
        Command::Audit(args) => audit::run(args),
        Command::Gitssh(_) | Command::SessionReaper => Ok(()),
        Command::Workspace(cmd) => workspace::run(&config, cmd),
        Command::Admin(cmd) => admin::run(&config, cmd),
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
    }
}

/// Defaults < file < env < flags (clap already put env under flags).
fn load_config(opts: &Opts) -> anyhow::Result<Config> {
    let mut config = Config::load(opts.config.as_deref())?;
    if let Some(dir) = &opts.data_dir {
        config.data_dir = Some(dir.clone());
    }
    Ok(config)
}

/// As many descriptors as the hard limit allows: the daemon holds a socket per connection (and
/// sessions get the limit the process was started with back).
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn disable_core_dumps() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Only the soft limit: the hard one stays, so session programs get theirs back (and the
    // non-dumpable flag below keeps this process's memory out of any dump anyway).
    let hard = getrlimit(Resource::RLIMIT_CORE).map_or(0, |(_, hard)| hard);
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, hard) {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot mark the process non-dumpable");
    }
}

/// Opens the vault in the configured data dir.
pub(crate) fn open_vault(config: &Config) -> anyhow::Result<Vault> {
    Ok(Vault::open(&config.data_dir(), config.limits)?)
}
