//! `[sources]`: where references (`vault://…`, `vault-dyn://…`, `exec://…`) are resolved. The
//! file's form ([`SourcesSettings`]: strings as written) and the checked form the daemon runs
//! with ([`Sources`]), every bad setting named by its key (`sources.vault.address`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sources::reference::{VAULT_PROVIDER, check_provider_name};

/// `[sources]` as written: the session-wide settings, and one table per provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourcesSettings {
    /// How long all of a session's references may take together (`"3s"`).
    pub timeout: String,
    /// How long a last good value stands in when its source fails (`"24h"`).
    pub max_stale: String,
    /// `[sources.vault]` (Vault/OpenBao) and `[sources.NAME]` (exec providers), as written:
    /// read into [`ProviderSettings`] by [`SourcesSettings::checked`], so an error can name
    /// its key (a flattened map would lose it).
    #[serde(flatten)]
    pub providers: BTreeMap<String, RawProvider>,
}

/// One `[sources.NAME]` table (or a stray setting) as the file has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawProvider(pub toml::Value);

// Config files hold no NaN that would make this a lie.
impl Eq for RawProvider {}

impl Default for SourcesSettings {
    fn default() -> Self {
        Self {
            timeout: "3s".into(),
            max_stale: "24h".into(),
            providers: BTreeMap::new(),
        }
    }
}

/// One `[sources.NAME]` table as written: Vault settings for `vault`, exec settings for any
/// other name (the check refuses a setting of the other kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub address: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub auth: Option<String>,
    pub auth_mount: Option<String>,
    pub role_id: Option<String>,
    pub secret_id_file: Option<PathBuf>,
    pub jwt_role: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_ttl: Option<String>,
    pub kv_ttl: Option<String>,
    pub lease_end: Option<String>,
    pub command: Option<Vec<String>>,
    pub run_as: Option<String>,
    pub timeout: Option<String>,
    pub max_bytes: Option<u64>,
    pub cache_ttl: Option<String>,
}

/// `[sources]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProviders {
    /// All of a session's references together.
    pub timeout: Duration,
    /// How long a last good value stands in for a failing source.
    pub max_stale: Duration,
    /// `[sources.vault]`.
    pub vault: Option<VaultSource>,
    /// The exec providers, by name.
    pub exec: BTreeMap<String, ExecSource>,
}

/// The Vault/OpenBao server references resolve against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSource {
    /// `http(s)://host:port`, no trailing slash.
    pub address: String,
    /// PEM CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// How keyport logs in.
    pub auth: VaultAuth,
    /// How long a KV value is used before it is read again.
    pub kv_ttl: Duration,
    /// What happens to a lease when the last session using it ends.
    pub lease_end: LeaseEnd,
}

/// How keyport logs in to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// As itself: AppRole at `auth/MOUNT/login`.
    AppRole {
        /// The auth mount.
        mount: String,
        /// The role id.
        role_id: String,
        /// The file holding the secret id (read at each login).
        secret_id_file: PathBuf,
    },
    /// As each user: a JWT keyport signs, at `auth/MOUNT/login`.
    Jwt {
        /// The auth mount.
        mount: String,
        /// The role.
        role: String,
        /// The `aud` claim.
        audience: String,
        /// The `iss` claim.
        issuer: String,
        /// How long each JWT is valid.
        ttl: Duration,
    },
}

/// What happens to a lease when the last session that got it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEnd {
    /// keyport revokes it.
    Revoke,
    /// It runs out on its own.
    Expire,
}

/// An operator command that prints a value for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSource {
    /// Program and arguments.
    pub command: Vec<String>,
    /// The OS account it runs as; `None`: keyport's own (never root).
    pub run_as: Option<String>,
    /// How long one run may take.
    pub timeout: Duration,
    /// The most it may print.
    pub max_bytes: usize,
    /// How long a value is used before the command runs again.
    pub cache_ttl: Duration,
}

type Bad = (String, String);

impl SourcesSettings {
    /// The checked settings, or the first bad one with its rule.
    pub fn checked(&self) -> Result<SourceProviders, Bad> {
        let mut sources = SourceProviders {
            timeout: duration("sources.timeout", &self.timeout, 1, 60)?,
            max_stale: duration("sources.max_stale", &self.max_stale, 0, 30 * 86_400)?,
            vault: None,
            exec: BTreeMap::new(),
        };
        for (name, raw) in &self.providers {
            let p = provider_settings(name, raw)?;
            let p = &p;
            check_provider_name(name).map_err(|rule| (format!("sources.{name}"), rule))?;
            if name == VAULT_PROVIDER {
                sources.vault = Some(vault(p)?);
            } else {
                sources.exec.insert(name.clone(), exec(name, p)?);
            }
        }
        Ok(sources)
    }
}

/// `[sources.NAME]` read into its settings; the error names the key (`sources.NAME.KEY`).
fn provider_settings(name: &str, raw: &RawProvider) -> Result<ProviderSettings, Bad> {
    let RawProvider(toml::Value::Table(table)) = raw else {
        return Err((
            format!("sources.{name}"),
            "is not a setting of [sources] (timeout, max_stale) nor a [sources.NAME] table".into(),
        ));
    };
    table.clone().try_into().map_err(|e: toml::de::Error| {
        let text = e.to_string();
        let mut lines = text.lines();
        let rule = lines.next().unwrap_or_default().to_string();
        let key = lines
            .find_map(|l| {
                l.strip_prefix("in `")?
                    .strip_suffix('`')
                    .map(str::to_string)
            })
            .map_or_else(
                || format!("sources.{name}"),
                |k| format!("sources.{name}.{k}"),
            );
        (key, rule)
    })
}

fn vault(p: &ProviderSettings) -> Result<VaultSource, Bad> {
    let key = |k: &str| format!("sources.{VAULT_PROVIDER}.{k}");
    for (set, k) in [
        (p.command.is_some(), "command"),
        (p.run_as.is_some(), "run_as"),
        (p.timeout.is_some(), "timeout"),
        (p.max_bytes.is_some(), "max_bytes"),
        (p.cache_ttl.is_some(), "cache_ttl"),
    ] {
        if set {
            return Err((key(k), "is an exec provider's setting; [sources.vault] is Vault's (use another name for a command)".into()));
        }
    }
    let address = p.address.as_deref().ok_or_else(|| {
        (
            key("address"),
            "is required (http://host:port or https://host:port)".into(),
        )
    })?;
    let ok = ["http://", "https://"].iter().any(|s| {
        address
            .strip_prefix(s)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']))
    });
    if !ok {
        return Err((
            key("address"),
            format!("must be http://host:port or https://host:port, got `{address}`"),
        ));
    }
    let auth_name = p.auth.as_deref().unwrap_or("approle");
    let mount = p
        .auth_mount
        .clone()
        .unwrap_or_else(|| auth_name.to_string());
    if mount.is_empty() || mount.contains(['/', '?', '#']) {
        return Err((key("auth_mount"), "must be a mount name (no /)".into()));
    }
    let jwt_only = [
        (p.jwt_role.is_some(), "jwt_role"),
        (p.jwt_audience.is_some(), "jwt_audience"),
        (p.jwt_issuer.is_some(), "jwt_issuer"),
        (p.jwt_ttl.is_some(), "jwt_ttl"),
    ];
    let approle_only = [
        (p.role_id.is_some(), "role_id"),
        (p.secret_id_file.is_some(), "secret_id_file"),
    ];
    let auth = match auth_name {
        "approle" => {
            if let Some((_, k)) = jwt_only.iter().find(|(set, _)| *set) {
                return Err((key(k), "is a setting of auth = \"jwt\"".into()));
            }
            VaultAuth::AppRole {
                mount,
                role_id: p.role_id.clone().ok_or_else(|| {
                    (key("role_id"), "is required with auth = \"approle\"".into())
                })?,
                secret_id_file: p.secret_id_file.clone().ok_or_else(|| {
                    (
                        key("secret_id_file"),
                        "is required with auth = \"approle\" (a file holding the secret id)".into(),
                    )
                })?,
            }
        }
        "jwt" => {
            if let Some((_, k)) = approle_only.iter().find(|(set, _)| *set) {
                return Err((key(k), "is a setting of auth = \"approle\"".into()));
            }
            VaultAuth::Jwt {
                mount,
                role: p
                    .jwt_role
                    .clone()
                    .ok_or_else(|| (key("jwt_role"), "is required with auth = \"jwt\"".into()))?,
                audience: p.jwt_audience.clone().unwrap_or_else(|| "vault".into()),
                issuer: p.jwt_issuer.clone().unwrap_or_else(|| "keyport".into()),
                ttl: duration(
                    &key("jwt_ttl"),
                    p.jwt_ttl.as_deref().unwrap_or("60s"),
                    10,
                    3600,
                )?,
            }
        }
        other => {
            return Err((
                key("auth"),
                format!("must be \"approle\" or \"jwt\", got `{other}`"),
            ));
        }
    };
    let lease_end = match p.lease_end.as_deref().unwrap_or("revoke") {
        "revoke" => LeaseEnd::Revoke,
        "expire" => LeaseEnd::Expire,
        other => {
            return Err((
                key("lease_end"),
                format!("must be \"revoke\" or \"expire\", got `{other}`"),
            ));
        }
    };
    Ok(VaultSource {
        address: address.to_string(),
        ca_file: p.ca_file.clone(),
        auth,
        kv_ttl: duration(
            &key("kv_ttl"),
            p.kv_ttl.as_deref().unwrap_or("60s"),
            0,
            86_400,
        )?,
        lease_end,
    })
}

fn exec(name: &str, p: &ProviderSettings) -> Result<ExecSource, Bad> {
    let key = |k: &str| format!("sources.{name}.{k}");
    for (set, k) in [
        (p.address.is_some(), "address"),
        (p.ca_file.is_some(), "ca_file"),
        (p.auth.is_some(), "auth"),
        (p.auth_mount.is_some(), "auth_mount"),
        (p.role_id.is_some(), "role_id"),
        (p.secret_id_file.is_some(), "secret_id_file"),
        (p.jwt_role.is_some(), "jwt_role"),
        (p.jwt_audience.is_some(), "jwt_audience"),
        (p.jwt_issuer.is_some(), "jwt_issuer"),
        (p.jwt_ttl.is_some(), "jwt_ttl"),
        (p.kv_ttl.is_some(), "kv_ttl"),
        (p.lease_end.is_some(), "lease_end"),
    ] {
        if set {
            return Err((
                key(k),
                format!(
                    "is a Vault setting: only [sources.{VAULT_PROVIDER}] is Vault; [sources.{name}] is an exec provider"
                ),
            ));
        }
    }
    let command = p.command.clone().ok_or_else(|| {
        (
            key("command"),
            "is required: [\"/path/to/program\", \"arg\", …]".into(),
        )
    })?;
    match command.first() {
        Some(program) if program.starts_with('/') => {}
        _ => {
            return Err((
                key("command"),
                "must start with the program's absolute path".into(),
            ));
        }
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err((key("command"), "must not contain NUL".into()));
    }
    let max_bytes = p.max_bytes.unwrap_or(65_536);
    if !(1..=65_536).contains(&max_bytes) {
        return Err((
            key("max_bytes"),
            format!("must be 1 to 65536 (a secret's most), got {max_bytes}"),
        ));
    }
    Ok(ExecSource {
        command,
        run_as: p.run_as.clone(),
        timeout: duration(&key("timeout"), p.timeout.as_deref().unwrap_or("2s"), 1, 60)?,
        max_bytes: usize::try_from(max_bytes).unwrap_or(65_536),
        cache_ttl: duration(
            &key("cache_ttl"),
            p.cache_ttl.as_deref().unwrap_or("60s"),
            0,
            86_400,
        )?,
    })
}

/// `text` as a duration (`"3s"`, `"24h"`), `min` to `max` seconds.
pub(super) fn duration(key: &str, text: &str, min: u64, max: u64) -> Result<Duration, Bad> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        (
            key.to_string(),
            format!("must be a duration like \"3s\" or \"24h\": {e}"),
        )
    })?;
    if d < Duration::from_secs(min) || d > Duration::from_secs(max) {
        return Err((
            key.to_string(),
            format!("must be {min}s to {max}s, got {text}"),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<SourceProviders, Bad> {
        #[derive(Deserialize)]
        struct File {
            sources: SourcesSettings,
        }
        let file: File = toml::from_str(text).map_err(|e| ("toml".to_string(), e.to_string()))?;
        file.sources.checked()
    }

    #[test]
    fn providers_are_checked_by_key() {
        let ok = parse(
            "[sources]\ntimeout = \"2s\"\n[sources.vault]\naddress = \"http://127.0.0.1:8200\"\n\
             auth = \"jwt\"\njwt_role = \"keyport\"\n[sources.aws]\ncommand = [\"/bin/cat\"]\n",
        )
        .unwrap();
        assert_eq!(ok.timeout, Duration::from_secs(2));
        assert!(
            matches!(ok.vault.unwrap().auth, VaultAuth::Jwt { ref mount, .. } if mount == "jwt")
        );
        assert_eq!(ok.exec["aws"].max_bytes, 65_536);
        for (text, key) in [
            ("[sources.vault]\nauth = \"jwt\"\n", "sources.vault.address"),
            (
                "[sources.vault]\naddress = \"vault:8200\"\n",
                "sources.vault.address",
            ),
            (
                "[sources.vault]\naddress = \"http://v:1\"\nauth = \"token\"\n",
                "sources.vault.auth",
            ),
            (
                "[sources.vault]\naddress = \"http://v:1\"\n",
                "sources.vault.role_id",
            ),
            (
                "[sources.vault]\naddress = \"http://v:1\"\nauth = \"jwt\"\njwt_role = \"r\"\nkv_ttl = \"soon\"\n",
                "sources.vault.kv_ttl",
            ),
            (
                "[sources.vault]\naddress = \"http://v:1\"\ncommand = [\"/bin/x\"]\n",
                "sources.vault.command",
            ),
            ("[sources.aws]\ntimeout = \"1s\"\n", "sources.aws.command"),
            (
                "[sources.aws]\ncommand = [\"aws\"]\n",
                "sources.aws.command",
            ),
            (
                "[sources.aws]\ncommand = [\"/bin/x\"]\naddress = \"http://v:1\"\n",
                "sources.aws.address",
            ),
            (
                "[sources.aws]\ncommand = [\"/bin/x\"]\nmax_bytes = 0\n",
                "sources.aws.max_bytes",
            ),
            ("[sources.AWS]\ncommand = [\"/bin/x\"]\n", "sources.AWS"),
            ("[sources]\ntimeout = \"0s\"\n", "sources.timeout"),
        ] {
            let (got, _) = parse(text).unwrap_err();
            assert_eq!(got, key, "{text}");
        }
        for (text, key) in [
            (
                "[sources.aws]\ncommand = [\"/bin/x\"]\ncomand = 1\n",
                "sources.aws",
            ),
            (
                "[sources.aws]\ncommand = [\"/bin/x\"]\nmax_bytes = \"lots\"\n",
                "sources.aws.max_bytes",
            ),
            (
                "[sources.aws]\ncommand = \"/bin/x\"\n",
                "sources.aws.command",
            ),
            ("[sources]\ntimout = \"3s\"\n", "sources.timout"),
        ] {
            let (got, rule) = parse(text).unwrap_err();
            assert_eq!(got, key, "{text}: {rule}");
        }
    }
}
