//! `[ca]`: the certificates keyport signs as the workspaces' user CA (relay `--auth ca`) —
//! how far their validity reaches either side of now, the `source-address` they may carry,
//! and the gateway name their key ids start with.

use serde::{Deserialize, Serialize};

/// User CA settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSettings {
    /// Certificates are valid from now minus this to now plus this (sshd allows no clock
    /// skew; a session outlives its certificate).
    pub validity_skew_secs: u64,
    /// CIDRs the workspaces see keyport connect from; when set, certificates carry them as
    /// the `source-address` critical option.
    pub source_address: Vec<String>,
    /// The gateway's name in key ids (`keyport:<gateway>:<user>:<workspace>:<connection>`);
    /// default: the host name.
    pub gateway: Option<String>,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            validity_skew_secs: 300,
            source_address: Vec::new(),
            gateway: None,
        }
    }
}

impl CaSettings {
    /// The setting that is out of range, and its rule.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(60..=keyport_keys::cert::MAX_SKEW_SECS).contains(&self.validity_skew_secs) {
            return Err((
                "ca.validity_skew_secs",
                format!(
                    "must be 60 to {} seconds",
                    keyport_keys::cert::MAX_SKEW_SECS
                ),
            ));
        }
        for item in &self.source_address {
            if item.contains(',') {
                return Err(("ca.source_address", format!("{item:?}: one CIDR per entry")));
            }
            keyport_keys::cert::check_cidrs(item).map_err(|rule| ("ca.source_address", rule))?;
        }
        if let Some(name) = &self.gateway {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(("ca.gateway", "must be 1 to 64 of A-Z a-z 0-9 . _ -".into()));
            }
        }
        Ok(())
    }

    /// The gateway name for key ids: `gateway`, else the host name.
    pub fn gateway_name(&self) -> String {
        self.gateway.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "keyport".into())
        })
    }

    /// The `source-address` critical option's value, when set.
    pub fn source_address_option(&self) -> Option<String> {
        (!self.source_address.is_empty()).then(|| self.source_address.join(","))
    }
}
