//! The command line: what the user typed ([`Opts`]), kept apart from the validated runtime
//! [`Config`], and one module per subcommand group. Errors become exit codes in [`exit`].
//!
//! `--config` and `--data-dir` ([`DataDirArgs`]) belong to the commands that open the data dir
//! (`serve`, `user`, `login-key`, `workspace`, `admin`, `doctor`), not to the ones that only talk
//! to the API: their `--help` would otherwise offer options that change nothing.

pub mod admin;
pub mod audit;
pub mod ca;
pub mod doctor;
pub mod examples;
pub mod exit;
pub mod generate;
pub mod gitssh;
mod input;
pub mod key;
pub mod login;
pub mod login_key;
pub mod output;
pub mod secret;
mod secret_list;
pub mod serve;
pub mod token;
pub mod user;
pub mod web_login;
pub mod whoami;
pub mod workspace;

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::vault::Vault;

/// keyport: SSH sessions with your secrets injected and your git key served from memory.
#[derive(Debug, Parser)]
#[command(name = "keyport", version, about, propagate_version = true)]
pub struct Opts {
    /// Where `KEYPORT_CONFIG` and `KEYPORT_DATA_DIR` are read, and `--config`/`--data-dir`
    /// typed before the subcommand (`keyport --data-dir DIR user list`, as before these options
    /// moved to the data-dir commands). Hidden: `keyport secret --help` must not offer them.
    #[command(flatten)]
    pub data: TopDataDirArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config`/`--data-dir` before the subcommand, and their environment variables.
#[derive(Debug, Clone, Default, Args)]
pub struct TopDataDirArgs {
    /// Config file (TOML).
    #[arg(long, env = "KEYPORT_CONFIG", value_name = "FILE", hide = true)]
    pub config: Option<PathBuf>,
    /// Data dir (database, master key).
    #[arg(long, env = "KEYPORT_DATA_DIR", value_name = "DIR", hide = true)]
    pub data_dir: Option<PathBuf>,
    /// The database, when not the data dir's SQLite file.
    #[arg(long, env = "KEYPORT_DATABASE", value_name = "URL", hide = true)]
    pub database: Option<String>,
}

/// `--config` and `--data-dir`, on the commands that use the data dir. No `env` here: the
/// variables are read once, at the top ([`TopDataDirArgs`]), so that a flag given before the
/// subcommand still beats the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct DataDirArgs {
    /// Config file (TOML) [env: KEYPORT_CONFIG]; default /etc/keyport/keyport.toml as root,
    /// else ~/.config/keyport/keyport.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data dir: database, master key [env: KEYPORT_DATA_DIR]; default
    /// ~/.local/share/keyport, /var/lib/keyport as root.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database: postgres://USER@HOST:PORT/DB?sslmode=require for several replicas;
    /// default the SQLite file in the data dir. A URL with a password belongs in
    /// KEYPORT_DATABASE or the config file, not in argv.
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
}

/// A subcommand group that works on the data dir: its options, then the subcommand.
#[derive(Debug, Args)]
pub struct OnDataDir<C: Subcommand> {
    /// `--config`, `--data-dir`.
    #[command(flatten)]
    pub data: DataDirArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: C,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: SSH and HTTP API listeners (creates the data dir on first start).
    Serve(serve::ServeArgs),
    /// Manage users (admin; works on the data dir, also while the daemon runs).
    User(OnDataDir<user::UserCommand>),
    /// Manage the public keys a user logs in with (admin; data dir).
    LoginKey(OnDataDir<login_key::LoginKeyCommand>),
    /// Save the API URL and a token for the commands below.
    Login(login::LoginArgs),
    /// Who the API knows you as: user name, admin or not, the API in use.
    Whoami(whoami::WhoamiArgs),
    /// A one-time link (web.link_ttl, 2 minutes by default) that signs a browser in to the
    /// web pages as you.
    WebLogin(web_login::WebLoginArgs),
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
    /// Relay-mode workspaces: add, list, show, set, pin, remove, grant, revoke (admin on the data
    /// dir; `list` over the API when logged in).
    Workspace(OnDataDir<workspace::WorkspaceCommand>),
    /// keyport as the workspaces' SSH user CA: init, show, rotate, promote, status, retire
    /// (admin on the data dir).
    Ca(OnDataDir<ca::CaCommand>),
    /// Operator tasks on the data dir.
    Admin(OnDataDir<admin::AdminCommand>),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check this setup: daemon, login, data dir, master key, host key, sftp-server, session
    /// PATH; one line per check, non-zero exit if any fails.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script.
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(generate::ManArgs),
}

/// `keyport config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration, commented.
    PrintDefault,
}

/// The whole command line definition with its examples: what `--help`, the completion scripts
/// and the man pages are made from.
pub fn command() -> clap::Command {
    examples::apply(Opts::command())
}

/// Parses the process's arguments against [`command`]; bad usage prints clap's message and
/// exits 2, as `Opts::parse` would.
pub fn parse() -> Opts {
    let mut matches = command().get_matches();
    Opts::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

/// Runs the parsed command.
pub fn run(opts: Opts) -> anyhow::Result<()> {
    // Any command may open the vault and unseal keys or values: never let a core dump write
    // this process's memory to disk.
    // Sessions get the limits the daemon was started with, not the ones it sets itself.
    crate::ssh::remember_limits();
    disable_core_dumps();
    raise_descriptor_limit();
    let top = &opts.data;
    // Each command loads the config only if it uses it: a broken config file must not stop
    // `keyport secret list` or `keyport completions`, which never read it.
    match opts.command {
        Command::Gitssh(args) => {
            // No config: it runs inside sessions, for git, and needs none.
            let code = gitssh::run(args)?;
            std::process::exit(i32::from(code));
        }
        Command::SessionReaper => Ok(crate::ssh::reaper::run()?),
        Command::Serve(args) => serve::run(load_config(top, &args.data)?, args),
        Command::User(on) => user::run(&load_config(top, &on.data)?, on.command),
        Command::LoginKey(on) => login_key::run(&load_config(top, &on.data)?, on.command),
        Command::Login(args) => login::run(args),
        Command::Whoami(args) => whoami::run(args),
        Command::WebLogin(args) => web_login::run(args),
        Command::Secret(cmd) => secret::run(cmd),
        // `--user` reads the data dir that KEYPORT_DATA_DIR or the config file names.
        Command::Key(cmd) => key::run(&load_config(top, &DataDirArgs::default())?, cmd),
        Command::Token(cmd) => token::run(&load_config(top, &DataDirArgs::default())?, cmd),
        Command::Audit(args) => audit::run(args),
        Command::Workspace(on) => workspace::run(&load_config(top, &on.data)?, on.command),
        Command::Ca(on) => ca::run(&load_config(top, &on.data)?, on.command),
        Command::Admin(on) => admin::run(&load_config(top, &on.data)?, on.command),
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{DEFAULT_CONFIG_TOML}");
            Ok(())
        }
        Command::Doctor(args) => doctor::run(&load_config(top, &args.data)?),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    }
}

/// Defaults < file < env < flags: clap put `KEYPORT_*` under the flags typed before the
/// subcommand (`top`), and a flag typed after it (`sub`) wins over both.
fn load_config(top: &TopDataDirArgs, sub: &DataDirArgs) -> anyhow::Result<Config> {
    let path = sub.config.as_ref().or(top.config.as_ref());
    let mut config = Config::load(path.map(PathBuf::as_path))?;
    if let Some(dir) = sub.data_dir.as_ref().or(top.data_dir.as_ref()) {
        config.data_dir = Some(dir.clone());
    }
    if let Some(url) = sub.database.as_ref().or(top.database.as_ref()) {
        config.database = Some(crate::config::DatabaseUrl(url.clone()));
    }
    config.database()?;
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
    Ok(
        Vault::open_at(&config.data_dir(), &config.database()?, config.limits)?
            .with_policy(crate::vault::Policy::of(config))
            .with_alive(config.replicas.alive()),
    )
}
