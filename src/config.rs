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

mod forwarding;
pub use forwarding::{Forwarding, LocalTarget, RemotePorts};

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
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data dir; `None` means the platform default (see [`datadir::default_data_dir`]).
    pub data_dir: Option<PathBuf>,
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
}

/// SSH channel flow control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSettings {
    /// Receive window per channel, bytes: how far a client may send ahead of the program
    /// reading its input, and so the most input keyport holds for one channel.
    pub channel_window: u32,
    /// Largest data packet a client may send, bytes.
    pub max_packet: u32,
    /// Failed logins from one address for one user name before that address is turned away.
    pub login_failures: u32,
    /// The window failed logins are counted in, and how long a turned-away address stays
    /// so, seconds.
    pub login_failure_window_secs: u64,
    /// The umask session programs start with (octal, like `login.defs`'s UMASK).
    pub umask: String,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            channel_window: 8 * 1024 * 1024,
            max_packet: 65535,
            login_failures: 20,
            login_failure_window_secs: 60,
            umask: "022".into(),
        }
    }
}

impl SshSettings {
    /// The setting that is out of range, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1024..=65535).contains(&self.max_packet) {
            return Err(("ssh.max_packet", "must be 1024 to 65535 bytes".into()));
        }
        let least = 2 * self.max_packet;
        if !(least..=1 << 30).contains(&self.channel_window) {
            return Err((
                "ssh.channel_window",
                format!("must be {least} (twice ssh.max_packet) to 1073741824 bytes"),
            ));
        }
        if self.login_failures == 0 {
            return Err(("ssh.login_failures", "must be at least 1".into()));
        }
        if !(1..=86_400).contains(&self.login_failure_window_secs) {
            return Err((
                "ssh.login_failure_window_secs",
                "must be 1 to 86400 seconds".into(),
            ));
        }
        if self.umask_bits().is_none() {
            return Err(("ssh.umask", "must be an octal mode from 000 to 777".into()));
        }
        Ok(())
    }

    /// The umask as a number, if it is a valid octal mode.
    pub fn umask_bits(&self) -> Option<u32> {
        let digits = self.umask.trim();
        let valid =
            (1..=4).contains(&digits.len()) && digits.bytes().all(|b| matches!(b, b'0'..=b'7'));
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|m| valid && *m <= 0o777)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: None,
            ssh_listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            owner: None,
            accept_env: vec!["LANG".into(), "LC_*".into(), "COLORTERM".into()],
            env: BTreeMap::new(),
            limits: Limits::default(),
            ssh: SshSettings::default(),
            forwarding: Forwarding::default(),
        }
    }
}

/// The commented defaults `keyport config print-default` prints.
pub const DEFAULT_CONFIG_TOML: &str = r#"# keyport configuration. Precedence: flags > environment > this file > built-in defaults.
# Every setting below shows its default.

# Data dir: database and master key. Default: $KEYPORT_DATA_DIR, else $XDG_DATA_HOME/keyport
# (~/.local/share/keyport), or /var/lib/keyport as root.
# data_dir = "/var/lib/keyport"

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

# SSH flow control, per channel.
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
# That window, seconds. 1 to 86400.
login_failure_window_secs = 60
# The umask session programs start with, octal (like login.defs' UMASK). 000 to 777.
umask = "022"

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
            .map_err(|(field, rule)| ConfigError::Invalid { path, field, rule })?;
        Ok(config)
    }

    /// The data dir in force.
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
    fn partial_files_keep_other_defaults() {
        let c: Config = toml::from_str("[limits]\nmax_secrets = 5\n").unwrap();
        assert_eq!(c.limits.max_secrets, 5);
        assert_eq!(c.limits.max_env_bytes, Limits::default().max_env_bytes);
        assert_eq!(c.ssh_listen, Config::default().ssh_listen);
    }
}
