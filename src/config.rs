//! keyport's settings: embedded defaults, overridden by a TOML file, then by env, then by flags.
//!
//! The daemon config ([`Config`]) is what `keyport serve` and the data-dir commands run with;
//! `keyport config print-default` prints [`DEFAULT_CONFIG_TOML`], the commented defaults, which a
//! test keeps equal to [`Config::default`]. The CLI client's credentials ([`ClientConfig`]) live
//! in a separate 0600 file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datadir;
use crate::secrets::Limits;

mod ca;
mod forwarding;
mod http;
mod lifecycle;
mod relay;
mod replicas;
mod sources;
mod ssh;
mod web;
pub use ca::CaSettings;
pub use forwarding::{Forwarding, LocalTarget, RemotePorts};
pub use http::HttpSettings;
pub use lifecycle::{RequiredMode, Requirement, RotationSettings};
pub use relay::RelaySettings;
pub use replicas::ReplicaSettings;
pub use sources::{
    ExecSource, LeaseEnd, ProviderSettings, RawProvider, SourceProviders, SourcesSettings,
    VaultAuth, VaultSource,
};
pub use ssh::{SshSettings, Startups};
pub use web::{WebOptions, WebSettings, is_loopback};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid keyport TOML.
    #[error("config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A setting is out of its range.
    #[error("config file {path}: {field}: {rule}")]
    Invalid {
        /// File path.
        path: PathBuf,
        /// The setting, as written in the file (`ssh.channel_window`).
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// `database` (`--database`, `KEYPORT_DATABASE`) is not a database keyport can use.
    #[error("database: {rule}")]
    Database {
        /// The rule it breaks.
        rule: String,
    },
}

/// A `database` setting: its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::store::postgres::describe(&self.0))
    }
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data dir; `None` means the platform default (see [`datadir::default_data_dir`]).
    pub data_dir: Option<PathBuf>,
    /// The database: a `postgres://` URL for several replicas; `None`: the SQLite file in
    /// the data dir.
    pub database: Option<DatabaseUrl>,
    /// SSH listener.
    pub ssh_listen: SocketAddr,
    /// HTTP API listener.
    pub api_listen: SocketAddr,
    /// keyport user whose file secrets are written at daemon start; default: the bootstrap
    /// user of a non-root daemon.
    pub owner: Option<String>,
    /// Client `env` requests accepted, like sshd's `AcceptEnv` (`*` wildcards).
    pub accept_env: Vec<String>,
    /// Operator env set in every session (below client env and secrets).
    pub env: BTreeMap<String, String>,
    /// Per-user limits.
    pub limits: Limits,
    /// SSH transport settings.
    pub ssh: SshSettings,
    /// Port forwarding (`ssh -L`, `ssh -R`): off unless turned on, with allow-lists.
    pub forwarding: Forwarding,
    /// The HTTP API listener's limits.
    pub http: HttpSettings,
    /// Relay mode's upstream leg.
    pub relay: RelaySettings,
    /// The certificates keyport signs as the workspaces' user CA.
    pub ca: CaSettings,
    /// When each kind of secret is due for rotation.
    pub rotation: RotationSettings,
    /// Secrets users must have (`[[required]]`).
    pub required: Vec<Requirement>,
    /// Where references are resolved (`[sources]`).
    pub sources: SourcesSettings,
    /// The web pages on the API listener (`[web]`).
    pub web: WebSettings,
    /// Replicas' heartbeats (`[replicas]`).
    pub replicas: ReplicaSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: None,
            database: None,
            ssh_listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            owner: None,
            accept_env: vec!["LANG".into(), "LC_*".into(), "COLORTERM".into()],
            env: BTreeMap::new(),
            limits: Limits::default(),
            ssh: SshSettings::default(),
            forwarding: Forwarding::default(),
            http: HttpSettings::default(),
            relay: RelaySettings::default(),
            ca: CaSettings::default(),
            rotation: RotationSettings::default(),
            required: Vec::new(),
            sources: SourcesSettings::default(),
            web: WebSettings::default(),
            replicas: ReplicaSettings::default(),
        }
    }
}

/// The commented defaults `keyport config print-default` prints.
pub const DEFAULT_CONFIG_TOML: &str = r#"# keyport configuration. Precedence: flags > environment > this file > built-in defaults.
# Every setting below shows its default.

# Data dir: database and master key. Default: $KEYPORT_DATA_DIR, else $XDG_DATA_HOME/keyport
# (~/.local/share/keyport), or /var/lib/keyport as root.
# data_dir = "/var/lib/keyport"

# Database (--database, KEYPORT_DATABASE). Default: keyport.db (SQLite) in the data dir. For
# several replicas on one PostgreSQL (13 or newer): "postgres://USER:PASSWORD@HOST:PORT/DB"
# (also key=value form: "host=… user=… password=… dbname=…"). Every replica needs the same
# master key (its data dir's master.key, or KEYPORT_MASTER_KEY), and presents the host key
# sealed in the database. Not through a transaction-mode PgBouncer (replicas LISTEN).
# database = "postgres://keyport:PASSWORD@db.internal:5432/keyport"

# SSH listener (--ssh-listen, KEYPORT_SSH_LISTEN).
ssh_listen = "127.0.0.1:2222"

# HTTP API listener (--api-listen, KEYPORT_API_LISTEN).
api_listen = "127.0.0.1:7070"

# keyport user whose file secrets are written when the daemon starts.
# Default: the bootstrap user of a non-root daemon.
# owner = "alice"

# Client env requests (ssh SendEnv / SetEnv) that sessions accept, like sshd's AcceptEnv.
# Names may end in '*'. Others are refused and not applied.
accept_env = ["LANG", "LC_*", "COLORTERM"]

# Operator env set in every session. Client env and the user's secrets override it.
[env]
# EDITOR = "vim"

# Per-user limits.
[limits]
max_secrets = 100
# Sum of all a user's values, bytes.
max_total_value_bytes = 1048576
# Sum of NAME=VALUE over a user's enabled env secrets, bytes.
max_env_bytes = 131072

# SSH: flow control, sessions, and limits (sshd's names in brackets).
[ssh]
# Receive window, bytes: how far a client may send ahead of the program reading its input
# (the window is re-opened only as the program reads), and so the most input keyport holds
# for one channel. 2 x max_packet to 1073741824.
channel_window = 8388608
# Largest data packet a client may send, bytes. 1024 to 65535.
max_packet = 65535
# Failed logins from one address for one user name, within the window, before that address
# is turned away for that name until the window has passed. At least 1.
login_failures = 20
# Failed logins from one address, whatever names it tries, before it is turned away.
# At least login_failures.
login_failures_per_address = 100
# That window, seconds; failed logins from one address are audited once per window, with a
# count. 1 to 86400.
login_failure_window_secs = 60
# Seconds a connection has for banner, key exchange and login [LoginGraceTime]. 1 to 3600.
login_grace_secs = 60
# begin:rate:full [MaxStartups]: past `begin` unauthenticated connections, new ones are
# dropped with probability rate% rising to 100% at `full`.
max_startups = "10:30:64"
# Unauthenticated connections one source address may hold; a new one past this replaces
# that address's oldest. 1 to 10000.
per_source_startups = 10
# New connections one address may start per second, beyond a burst of per_source_startups
# (keeps DHEat floods near sshd's rate). 1 to 100000.
per_source_rate = 20
# Authentication attempts per connection [MaxAuthTries]. 1 to 100.
max_auth_tries = 6
# Session channels open at once on one connection [MaxSessions]. 1 to 10000.
max_sessions = 10
# Connections one user may have open at once. 1 to 100000.
max_connections_per_user = 32
# Bytes of accepted client env requests (names and values) per channel; past it, refused.
client_env_bytes = 65536
# Signatures a session's agent makes per minute (a bucket that size, refilled evenly); more
# are refused, counted, and audited once per session. 1 to 1000000.
agent_signatures_per_minute = 600
# The umask session programs start with, octal (like login.defs' UMASK). 000 to 777.
umask = "022"
# Threads SSH connections run on; each connection stays on one (as each of sshd's
# connections is one process). 0: one per CPU. 0 to 1024.
connection_threads = 0

# Port forwarding, off by default. Each forward is audited (user, target, bytes).
[forwarding]
# ssh -L (direct-tcpip): keyport connects, for the client, to a target on local_allow
# ("host:port", "host:*", "*:port", or "any"), like sshd's PermitOpen.
local = false
local_allow = []
# ssh -R (tcpip-forward): keyport listens on its loopback address, on a port on remote_allow
# ("8080", "8000-8099", or "any"), like sshd's PermitListen with GatewayPorts no. Ports below
# 1024 only for sessions running as root.
remote = false
remote_allow = []
# Most ssh -R listeners one connection may hold. 1 to 1024.
max_remote_listeners = 16

# The HTTP API listener.
[http]
# Seconds a client has to send a request's headers, from its connection or its previous
# request (so also how long a kept-alive connection may wait idle). 1 to 3600.
header_timeout_secs = 10
# Seconds a connection may move no byte either way (a client that stopped reading its
# response) before it is closed. 1 to 86400.
idle_timeout_secs = 60
# Connections served at once (more wait in the backlog). 1 to 100000.
max_connections = 256

# Replicas on one PostgreSQL database (`database` above): each writes a heartbeat every
# heartbeat_secs (1 to 60); one silent for alive_secs (at least twice that, at most 3600) is
# gone. `keyport admin nodes` lists them; a master-key rotation waits for every live one to
# hold the new key.
[replicas]
heartbeat_secs = 10
alive_secs = 30

# The web pages (secrets, key, login keys, tokens, audit) on the API listener, signed in to
# with a one-time link from `keyport web-login`.

[web]
enabled = true
# Where browsers reach the API listener, for the links web-login prints and the Origin check.
# Default: http:// and the API's address when that is a loopback one; otherwise set it (else
# web-login says why it cannot make a link). Behind a TLS proxy, its https:// address. Plain
# http:// only for a loopback address: the sign-in cookie is Secure, which browsers keep over
# plain HTTP from loopback only.
url = ""
# How long a sign-in link works (once). 1s to 1h.
link_ttl = "2m"
# A browser is signed out after this long without a request (checked to the minute). 1m to 7d.
idle_timeout = "30m"
# ... and this long after signing in, in any case. 5m to 30d.
max_age = "12h"

# Relay mode (ssh user:workspace@gateway): the connection to the workspace's own sshd.
[relay]
# Seconds to connect, exchange keys and log in upstream. 1 to 300.
connect_timeout_secs = 5
# Seconds between keepalives on an idle upstream connection; 0 for none. 0 to 3600.
keepalive_secs = 30
# Failed upstream attempts in a row for one user and workspace before keyport stops trying
# for failure_hold_secs and answers with the last failure (an OpenSSH >= 9.8 upstream's
# PerSourcePenalties would otherwise block everyone behind keyport's address). 1 to 1000.
failures_before_hold = 2
# 0 to 86400.
failure_hold_secs = 30

# keyport as the workspaces' SSH user CA (workspaces added with --auth ca).
[ca]
# Certificates are valid from now minus this to now plus this: the clock skew tolerated
# between keyport and a workspace (sshd allows none). 60 to 1800.
validity_skew_secs = 300
# CIDRs the workspaces see keyport connect from. When set, every certificate carries them
# as its source-address critical option (a certificate copied off keyport is then useless
# elsewhere). NAT makes this site-specific, so it is empty by default.
source_address = []
# The gateway's name in certificate key ids (keyport:<gateway>:<user>:<workspace>:<conn>),
# which the workspace's sshd logs. Default: the host name.
# gateway = "gw1"

# How long a secret's value may stay unchanged before it is due for rotation, per kind
# ("90d", "12h", "never"); a secret's own --rotate-after wins. Overdue secrets are marked in
# `secret list` and announced before interactive shells. 1h to 10y, or never.
[rotation]
token = "90d"
password = "180d"
key = "365d"
certificate = "never"
config = "never"
other = "never"

# Secrets users must have, one [[required]] table each: env and/or file (an enabled secret
# with that env name / file path), a description, optionally users = [...] / groups = [...]
# (OS groups) it applies to and workspaces = [...] (relayed sessions there only), and
# mode = "warn" (a notice before interactive sessions; `keyport secret check` fails) or
# "block" (sessions are refused with the reason). None by default.
# [[required]]
# env = "GITHUB_TOKEN"
# description = "GitHub access for the monorepo"
# mode = "warn"

# Where secrets created with --source are resolved, at each session start. Resolved values
# live in keyport's memory only, never in the database, a log or a response.
[sources]
# How long all of a session's references may take together (resolved concurrently). 1s to 60s.
timeout = "3s"
# When a source fails, its last good value stands in for this long (audited as
# source.stale); leased values only while their lease lasts. 0s to 30d.
max_stale = "24h"

# The Vault/OpenBao server for vault://MOUNT/PATH#FIELD (KV v2) and vault-dyn://PATH#FIELD
# (leased) references. None by default.
# [sources.vault]
# address = "https://vault.example.com:8200"
# ca_file = "/etc/keyport/vault-ca.pem"   # default: the Mozilla roots (webpki-roots)
# auth = "jwt"                            # a JWT per user (`keyport admin jwt-key`), or
#                                         # "approle" (role_id, secret_id_file): keyport itself
# auth_mount = "jwt"                      # default: the auth method's name
# jwt_role = "keyport"
# jwt_audience = "vault"
# jwt_issuer = "keyport"
# jwt_ttl = "60s"
# kv_ttl = "60s"                          # a KV value is read again after this ("0s": always)
# lease_end = "revoke"                    # or "expire": when the last session using it ends

# An exec provider for exec://NAME/KEY: KEY and a newline on stdin, the value on stdout (one
# trailing newline dropped), in a clean environment. Any name but vault. None by default.
# [sources.aws]
# command = ["/usr/local/bin/aws-secret", "--region", "eu-west-1"]
# run_as = "keyport-sources"              # required when keyport runs as root
# timeout = "2s"
# max_bytes = 65536
# cache_ttl = "60s"
"#;

impl Config {
    /// Loads `path`, or the default config file if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_config_path(), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config
            .ssh
            .check()
            .and_then(|()| config.forwarding.check())
            .and_then(|()| config.http.check())
            .and_then(|()| config.relay.check())
            .and_then(|()| config.ca.check())
            .and_then(|()| config.replicas.check())
            .and_then(|()| config.rotation.check())
            .and_then(|()| config.required.iter().try_for_each(Requirement::check))
            .map_err(|(field, rule)| (field.to_string(), rule))
            .and_then(|()| config.sources.checked().map(drop))
            .and_then(|()| config.web.checked().map(drop))
            .map_err(|(field, rule)| ConfigError::Invalid { path, field, rule })?;
        Ok(config)
    }

    /// Where the store is: the `database` setting (checked), else the data dir's SQLite file.
    pub fn database(&self) -> Result<crate::store::Database, ConfigError> {
        match self.database.as_ref().map(|u| &u.0) {
            None => Ok(crate::store::Database::File(
                self.data_dir().join(crate::datadir::DB_FILE),
            )),
            Some(url)
                if url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.contains("host=") =>
            {
                Ok(crate::store::Database::Postgres(url.clone()))
            }
            Some(_) => Err(ConfigError::Database {
                rule: "must be a postgres:// or postgresql:// URL, or key=value settings with \
                       host= (leave it unset for the SQLite file in the data dir)"
                    .into(),
            }),
        }
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(datadir::default_data_dir)
    }
}

/// `$XDG_CONFIG_HOME/keyport/<name>`, else `~/.config/keyport/<name>`.
fn user_config_file(name: &str) -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| datadir::home_dir().join(".config"))
        .join("keyport")
        .join(name)
}

/// The daemon config read when `--config` is not given: `/etc/keyport/keyport.toml` as root,
/// else `keyport.toml` in the user's config dir.
pub fn default_config_path() -> PathBuf {
    if crate::osuser::is_root() {
        PathBuf::from("/etc/keyport/keyport.toml")
    } else {
        user_config_file("keyport.toml")
    }
}

/// The CLI client's credentials: where the API is and the token to use.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// API base URL, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// Bearer token.
    pub token: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Where the credentials live: `cli.toml` in the user's keyport config dir.
    pub fn path() -> PathBuf {
        user_config_file("cli.toml")
    }

    /// Writes the credentials (dir 0700, file 0600, atomically).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            datadir::create_dir_private(dir)?;
        }
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        datadir::write_private_file(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_default_is_the_default() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("ssh_listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("ssh_listn"), "{err}");
    }

    #[test]
    fn ssh_settings_out_of_range_name_the_setting() {
        for (text, field) in [
            ("[ssh]\nmax_packet = 100\n", "ssh.max_packet"),
            ("[ssh]\nmax_packet = 70000\n", "ssh.max_packet"),
            ("[ssh]\nchannel_window = 65535\n", "ssh.channel_window"),
            ("[ssh]\nchannel_window = 2000000000\n", "ssh.channel_window"),
            ("[ssh]\nlogin_failures = 0\n", "ssh.login_failures"),
            (
                "[ssh]\nlogin_failure_window_secs = 0\n",
                "ssh.login_failure_window_secs",
            ),
            ("[ssh]\numask = \"8\"\n", "ssh.umask"),
            ("[ssh]\numask = \"1777\"\n", "ssh.umask"),
            ("[forwarding]\nlocal = true\n", "forwarding.local_allow"),
            (
                "[forwarding]\nlocal_allow = [\"db\"]\n",
                "forwarding.local_allow",
            ),
            (
                "[forwarding]\nremote = true\nremote_allow = [\"0\"]\n",
                "forwarding.remote_allow",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("k.toml");
            std::fs::write(&path, text).unwrap();
            match Config::load(Some(&path)) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let ok: Config =
            toml::from_str("[ssh]\nchannel_window = 131070\nmax_packet = 65535\n").unwrap();
        assert_eq!(ok.ssh.check(), Ok(()));
    }

    #[test]
    fn the_default_max_startups_is_startups_default() {
        assert_eq!(SshSettings::default().startups(), Ok(Startups::default()));
    }

    #[test]
    fn partial_files_keep_other_defaults() {
        let c: Config = toml::from_str("[limits]\nmax_secrets = 5\n").unwrap();
        assert_eq!(c.limits.max_secrets, 5);
        assert_eq!(c.limits.max_env_bytes, Limits::default().max_env_bytes);
        assert_eq!(c.ssh_listen, Config::default().ssh_listen);
    }
}
