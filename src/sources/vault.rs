//! The Vault/OpenBao provider: logs in (AppRole as keyport, or a JWT keyport signs per user so
//! Vault's policies and audit log see the user), reads KV v2 fields and leased secrets, and
//! renews and revokes leases. Blocking HTTP (ureq) on the blocking pool; each call is bounded
//! by the time its session has left. Tokens live in memory only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyport_keys::{KeyPair, SecretBytes};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::reference::Reference;
use super::{Fetched, SourceError};
use crate::config::{VaultAuth, VaultSource};

/// A Vault token: when keyport stops making new requests with it, and when it runs out (the
/// leases it made go with it, so it is renewed while they are held).
pub(crate) struct Token {
    value: Zeroizing<String>,
    until: Instant,
    expires: Mutex<Instant>,
    renewable: bool,
}

impl Token {
    fn left(&self) -> Duration {
        let expires = *self
            .expires
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        expires.saturating_duration_since(Instant::now())
    }
}

/// One Vault/OpenBao server.
pub(super) struct VaultClient {
    settings: VaultSource,
    agent: ureq::Agent,
    /// Signs the per-user JWTs (`auth = "jwt"`).
    jwt_key: Option<KeyPair>,
    /// By user for JWT auth; one entry (`""`) for AppRole.
    tokens: Mutex<HashMap<String, Arc<Token>>>,
}

impl VaultClient {
    /// A client for `settings`, trusting `settings.ca_file` if set.
    pub(super) fn new(settings: VaultSource, jwt_key: Option<KeyPair>) -> Result<Self, String> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                format!("sources.vault.ca_file: cannot read {}: {e}", path.display())
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "sources.vault.ca_file: no PEM certificate in {}",
                    path.display()
                ));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build();
            config = config.tls_config(tls);
        }
        if matches!(settings.auth, VaultAuth::Jwt { .. }) && jwt_key.is_none() {
            return Err("sources.vault.auth: jwt needs keyport's JWT key".into());
        }
        Ok(Self {
            settings,
            agent: config.build().into(),
            jwt_key,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// What to do with a lease when its last session ends.
    pub(super) fn settings(&self) -> &VaultSource {
        &self.settings
    }

    /// Reads `reference` for `user`, within `budget`.
    pub(super) fn fetch(
        &self,
        user: &str,
        reference: &Reference,
        budget: Duration,
    ) -> Result<Fetched, SourceError> {
        let deadline = Instant::now() + budget;
        let (method, path, body, field) = match reference {
            Reference::Kv { mount, path, field } => {
                ("GET", format!("{mount}/data/{path}"), None, field)
            }
            Reference::Dynamic {
                path,
                params,
                field,
            } if params.is_empty() => ("GET", path.clone(), None, field),
            Reference::Dynamic {
                path,
                params,
                field,
            } => {
                let body: serde_json::Map<String, Value> = params
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                ("POST", path.clone(), Some(Value::Object(body)), field)
            }
            Reference::Exec { .. } => {
                return Err(SourceError::Refused("not a vault reference".into()));
            }
        };
        let (reply, token) = self.authed(user, method, &path, body.as_ref(), deadline)?;
        let data = match reference {
            Reference::Kv { .. } => &reply["data"]["data"],
            _ => &reply["data"],
        };
        let value = match data.get(field.as_str()) {
            Some(Value::String(s)) => SecretBytes::new(s.clone().into_bytes()),
            Some(Value::Null) | None => {
                return Err(SourceError::Refused(format!(
                    "the answer has no field `{field}`"
                )));
            }
            Some(other) => SecretBytes::new(other.to_string().into_bytes()),
        };
        let lease = match reference {
            Reference::Dynamic { .. } => {
                let id = reply["lease_id"].as_str().unwrap_or_default();
                if id.is_empty() {
                    None
                } else {
                    Some(super::LeaseInfo {
                        id: id.to_string(),
                        duration: Duration::from_secs(
                            reply["lease_duration"].as_u64().unwrap_or(0),
                        ),
                        renewable: reply["renewable"].as_bool().unwrap_or(false),
                        token,
                    })
                }
            }
            _ => None,
        };
        Ok(Fetched { value, lease })
    }

    /// Renews `lease_id` (by `increment`) with `token`, the one that made it — renewing the
    /// token first when it would run out before the lease: the lease's new duration.
    pub(super) fn renew(
        &self,
        token: &Token,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, SourceError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        if token.renewable && token.left() < increment + Duration::from_secs(30) {
            let body = json!({ "increment": (increment + Duration::from_secs(60)).as_secs() });
            let reply = self
                .call(
                    "PUT",
                    "auth/token/renew-self",
                    Some(&token.value),
                    Some(&body),
                    deadline,
                )
                .map_err(|e| e.about("token renewal"))?;
            let ttl = Duration::from_secs(reply["auth"]["lease_duration"].as_u64().unwrap_or(0));
            *token
                .expires
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now() + ttl;
        }
        let body = json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let reply = self
            .call(
                "PUT",
                "sys/leases/renew",
                Some(&token.value),
                Some(&body),
                deadline,
            )
            .map_err(SourceError::from)?;
        Ok(Duration::from_secs(
            reply["lease_duration"].as_u64().unwrap_or(0),
        ))
    }

    /// Revokes `lease_id` with `token`, the one that made it (its policy may grant
    /// `sys/leases/revoke`), else with `user`'s current one.
    pub(super) fn revoke(
        &self,
        token: &Token,
        user: &str,
        lease_id: &str,
    ) -> Result<(), SourceError> {
        let body = json!({ "lease_id": lease_id });
        let deadline = Instant::now() + Duration::from_secs(10);
        match self.call(
            "PUT",
            "sys/leases/revoke",
            Some(&token.value),
            Some(&body),
            deadline,
        ) {
            Ok(_) => Ok(()),
            Err(_) => self
                .authed(user, "PUT", "sys/leases/revoke", Some(&body), deadline)
                .map(drop),
        }
    }

    /// A call with `user`'s token; a refused token is dropped and the call tried once more
    /// with a fresh login (it may have been revoked or expired early).
    fn authed(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<(Value, Arc<Token>), SourceError> {
        let mut fresh = false;
        loop {
            let (token, new) = self.token(user, deadline)?;
            fresh |= new;
            match self.call(method, path, Some(&token.value), body, deadline) {
                Err(Refusal::Denied(_)) if !fresh => {
                    self.forget(user);
                    fresh = true;
                }
                other => return other.map(|reply| (reply, token)).map_err(SourceError::from),
            }
        }
    }

    /// `user`'s token (keyport's own for AppRole), logging in when there is none or it is
    /// about to run out; and whether it was just made.
    fn token(&self, user: &str, deadline: Instant) -> Result<(Arc<Token>, bool), SourceError> {
        let key = match self.settings.auth {
            VaultAuth::AppRole { .. } => "",
            VaultAuth::Jwt { .. } => user,
        };
        if let Some(token) = self.lock().get(key)
            && token.until > Instant::now()
        {
            return Ok((token.clone(), false));
        }
        let (path, body) = match &self.settings.auth {
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                let secret_id = std::fs::read_to_string(secret_id_file).map_err(|e| {
                    SourceError::Unavailable(format!(
                        "cannot read sources.vault.secret_id_file {}: {e}",
                        secret_id_file.display()
                    ))
                })?;
                let secret_id = Zeroizing::new(secret_id.trim().to_string());
                (
                    format!("auth/{mount}/login"),
                    json!({ "role_id": role_id, "secret_id": secret_id.as_str() }),
                )
            }
            VaultAuth::Jwt {
                mount,
                role,
                audience,
                issuer,
                ttl,
            } => {
                let jwt = self.jwt(user, audience, issuer, *ttl)?;
                (
                    format!("auth/{mount}/login"),
                    json!({ "role": role, "jwt": jwt.as_str() }),
                )
            }
        };
        let reply = self
            .call("POST", &path, None, Some(&body), deadline)
            .map_err(|e| e.about(&format!("login at {path}")))?;
        let value = reply["auth"]["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                SourceError::Refused(format!("login at {path}: no client_token in the answer"))
            })?;
        let ttl = Duration::from_secs(reply["auth"]["lease_duration"].as_u64().unwrap_or(0));
        // Used for two thirds of its life: never a token about to run out.
        let now = Instant::now();
        let token = Arc::new(Token {
            value: Zeroizing::new(value.to_string()),
            until: now + ttl * 2 / 3,
            expires: Mutex::new(now + ttl),
            renewable: reply["auth"]["renewable"].as_bool().unwrap_or(false),
        });
        self.lock().insert(key.to_string(), token.clone());
        Ok((token, true))
    }

    fn forget(&self, user: &str) {
        let mut tokens = self.lock();
        tokens.remove(user);
        tokens.remove("");
    }

    /// A compact ES256 JWT saying `user` logs in, valid for `ttl`.
    fn jwt(
        &self,
        user: &str,
        audience: &str,
        issuer: &str,
        ttl: Duration,
    ) -> Result<Zeroizing<String>, SourceError> {
        let refused = |e: String| SourceError::Refused(e);
        let key = self
            .jwt_key
            .as_ref()
            .ok_or_else(|| refused("no JWT key".into()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| refused(e.to_string()))?;
        let claims = json!({
            "iss": issuer, "sub": user, "aud": audience,
            "iat": now, "nbf": now.saturating_sub(5), "exp": now + ttl.as_secs(),
            "jti": id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        keyport_keys::jwt::sign_es256(key, claims.to_string().as_bytes())
            .map(Zeroizing::new)
            .map_err(|e| refused(format!("cannot sign the JWT: {e}")))
    }

    /// One HTTP call: the JSON answer of a 2xx, or why not.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, Refusal> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Unavailable("timed out".into()));
        }
        let url = format!("{}/v1/{path}", self.settings.address);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        let request = request
            .body(bytes)
            .map_err(|e| Refusal::Refused(e.to_string()))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(left))
            .build();
        let mut response = self.agent.run(request).map_err(|e| match e {
            ureq::Error::Timeout(_) => {
                Refusal::Unavailable(format!("timed out talking to {}", self.settings.address))
            }
            e => Refusal::Unavailable(format!("cannot reach {}: {e}", self.settings.address)),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        if status == 204 {
            return Ok(Value::Null);
        }
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(reply);
        }
        // Vault's errors name paths and rules, never a secret's value.
        let errors: Vec<&str> = reply["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let reason = format!(
            "vault answered {status} for {path}{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    errors.join("; ").chars().take(300).collect::<String>()
                )
            }
        );
        // Down, sealed or busy: a last good value may stand in. A "no" is a no.
        Err(match status {
            403 => Refusal::Denied(reason),
            429 | 500..=599 => Refusal::Unavailable(reason),
            _ => Refusal::Refused(reason),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Token>>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a call got no answer.
enum Refusal {
    /// 403: the token may be stale, or the policy says no.
    Denied(String),
    /// Any other "no": not found, a bad request.
    Refused(String),
    /// No answer, or the server could not give one (down, sealed, overloaded).
    Unavailable(String),
}

impl Refusal {
    /// The same refusal, `what` said first.
    fn about(self, what: &str) -> SourceError {
        match SourceError::from(self) {
            SourceError::Unavailable(e) => SourceError::Unavailable(format!("{what}: {e}")),
            SourceError::Refused(e) => SourceError::Refused(format!("{what}: {e}")),
        }
    }
}

impl From<Refusal> for SourceError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Denied(why) | Refusal::Refused(why) => SourceError::Refused(why),
            Refusal::Unavailable(why) => SourceError::Unavailable(why),
        }
    }
}
