//! `[web]`: the web pages on the API listener: whether they are served, the address browsers
//! reach them at (for sign-in links), and how long links and signed-in browsers last.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sources::duration;

/// `[web]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    /// Serve the pages.
    pub enabled: bool,
    /// The base URL browsers use; `""`: derived from the API's address.
    pub url: String,
    /// How long a sign-in link works.
    pub link_ttl: String,
    /// Signed out after this long without a request.
    pub idle_timeout: String,
    /// Signed out this long after signing in.
    pub max_age: String,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            url: String::new(),
            link_ttl: "2m".into(),
            idle_timeout: "30m".into(),
            max_age: "12h".into(),
        }
    }
}

/// `[web]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOptions {
    /// Serve the pages.
    pub enabled: bool,
    /// The base URL set (without a trailing `/`), if any.
    pub url: Option<String>,
    /// How long a sign-in link works.
    pub link_ttl: Duration,
    /// Idle timeout of a signed-in browser.
    pub idle_timeout: Duration,
    /// Absolute lifetime of a signed-in browser.
    pub max_age: Duration,
}

impl WebSettings {
    /// The settings checked; the error names the key and its rule.
    pub fn checked(&self) -> Result<WebOptions, (String, String)> {
        let url = match self.url.trim().trim_end_matches('/') {
            "" => None,
            url => Some(check_url(url).map_err(|rule| ("web.url".to_string(), rule))?),
        };
        Ok(WebOptions {
            enabled: self.enabled,
            url,
            link_ttl: duration("web.link_ttl", &self.link_ttl, 1, 3600)?,
            idle_timeout: duration("web.idle_timeout", &self.idle_timeout, 60, 7 * 86_400)?,
            max_age: duration("web.max_age", &self.max_age, 300, 30 * 86_400)?,
        })
    }
}

/// `url` if it is an `https://` or loopback `http://` origin (scheme, host, optional port).
fn check_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("must be an origin like https://keyport.example.com")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err("must be an origin (scheme, host and port; no path)".into());
    }
    match scheme {
        "https" => Ok(url.to_string()),
        "http" if is_loopback(rest) => Ok(url.to_string()),
        "http" => Err(
            "must be https:// (a TLS proxy in front), or http:// to a loopback address: browsers \
             drop the Secure sign-in cookie over plain HTTP elsewhere"
                .into(),
        ),
        _ => Err("must start with https:// or http://".into()),
    }
}

/// Whether `host_port` (`host`, `host:port`, `[v6]:port`) names a loopback address.
pub fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_origins() {
        let ok = |url: &str| {
            WebSettings {
                url: url.into(),
                ..WebSettings::default()
            }
            .checked()
            .map(|o| o.url)
        };
        assert_eq!(ok("").unwrap(), None);
        assert_eq!(
            ok("https://kp.example.com/").unwrap().as_deref(),
            Some("https://kp.example.com")
        );
        assert!(ok("http://127.0.0.1:7070").is_ok());
        assert!(ok("http://[::1]:7070").is_ok());
        assert!(ok("http://localhost").is_ok());
        for bad in [
            "http://kp.example.com",
            "kp.example.com",
            "https://x/y",
            "ftp://x",
        ] {
            assert_eq!(ok(bad).unwrap_err().0, "web.url", "{bad}");
        }
        let bad = WebSettings {
            link_ttl: "0s".into(),
            ..WebSettings::default()
        };
        assert_eq!(bad.checked().unwrap_err().0, "web.link_ttl");
    }
}
