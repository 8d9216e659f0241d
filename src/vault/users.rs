//! Accounts and keys: users, their login keys, their generated key pair, API tokens, and the
//! daemon's host key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyport_keys::{KeyPair, KeyType, LoginKey};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::{Actor, Vault, VaultError, host_key_binding, user_key_binding};
use crate::secrets::Violation;
use crate::secrets::validate;
use crate::store::{
    AuditRecord, KeyPairRecord, LoginKeyRecord, NewLoginKey, NewToken, NewUser, NewUserKey,
    TokenRecord, UserRecord, now_ms,
};

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUserSpec {
    /// keyport user name.
    pub name: String,
    /// Admin flag.
    pub admin: bool,
    /// OS account; `None` picks one (see [`Vault::add_user`]).
    pub os_user: Option<String>,
    /// Login public key lines.
    pub login_keys: Vec<String>,
    /// Algorithm of the generated key pair.
    pub key_type: KeyType,
}

/// A user's public key, as `key show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserKeyInfo {
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: String,
    /// OpenSSH public key line.
    pub public_key: String,
    /// `SHA256:` fingerprint.
    pub fingerprint: String,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A token just created: the only time its text exists outside the holder's hands.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenIssued {
    /// The bearer token.
    pub token: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for TokenIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssued(<redacted>)")
    }
}

impl Vault {
    /// Creates a user with a fresh key pair. Without an explicit OS user: as root, the OS
    /// account of the same name (there is no silent fallback, so nobody gets root shells by
    /// accident); otherwise the account running keyport, which is what a non-root daemon runs
    /// every session as.
    #[instrument(skip_all, fields(user = %spec.name))]
    pub fn add_user(
        &mut self,
        actor: &Actor,
        spec: &NewUserSpec,
    ) -> Result<UserRecord, VaultError> {
        self.insert_user(actor, spec, None)
    }

    /// Creates the first admin together with their API token, in one transaction, so a crash
    /// cannot leave an admin whose credentials were never issued.
    pub fn add_first_admin(
        &mut self,
        spec: &NewUserSpec,
        token: &TokenIssued,
    ) -> Result<UserRecord, VaultError> {
        let token = NewToken {
            name: "bootstrap".into(),
            hash: token_hash(&token.token),
        };
        self.insert_user(&Actor::System, spec, Some(&token))
    }

    fn insert_user(
        &mut self,
        actor: &Actor,
        spec: &NewUserSpec,
        token: Option<&NewToken>,
    ) -> Result<UserRecord, VaultError> {
        validate::check_user_name(&spec.name).map_err(|v| VaultError::Invalid(vec![v]))?;
        let os_user =
            match &spec.os_user {
                Some(os) => crate::osuser::lookup(os)?.name,
                None if !crate::osuser::is_root() => crate::osuser::current()?.name,
                None => crate::osuser::lookup(&spec.name)
                    .map_err(|e| {
                        VaultError::Invalid(vec![Violation::new(
                            "os-user",
                            format!(
                                "{e}; pass --os-user to choose the account their sessions run as"
                            ),
                        )])
                    })?
                    .name,
            };
        let logins = parse_login_keys(&spec.login_keys)?;
        let pair = KeyPair::generate(spec.key_type, &format!("keyport:{}", spec.name))?;
        let audit = Self::audit(
            actor,
            &spec.name,
            "user.add",
            None,
            json!({ "admin": spec.admin, "os_user": os_user, "login_keys": logins.len(),
                    "key_type": spec.key_type.as_str(), "key_fingerprint": pair.fingerprint() }),
        );
        let user = NewUser {
            name: spec.name.clone(),
            is_admin: spec.admin,
            os_user,
        };
        // The sealed key is bound to the user's row id, known only inside the insert.
        let master = &self.keyring.key;
        self.store
            .create_user(&user, &logins, token, &audit, |user_id| {
                seal_pair(master, &user_id.to_string(), &pair)
            })
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, VaultError> {
        Ok(self.store.users()?)
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<UserRecord, VaultError> {
        Ok(self.store.user(name)?)
    }

    /// Removes a user with their secrets, key pair, login keys and tokens.
    #[instrument(skip_all, fields(user = %name))]
    pub fn remove_user(&mut self, actor: &Actor, name: &str) -> Result<(), VaultError> {
        let users = self.store.users()?;
        let admins = users.iter().filter(|u| u.is_admin).count();
        if admins == 1 && users.iter().any(|u| u.is_admin && u.name == name) {
            return Err(VaultError::Conflict(vec![Violation::new(
                "user",
                format!("{name} is the last admin; make another admin first"),
            )]));
        }
        let audit = Self::audit(actor, name, "user.remove", None, json!({}));
        Ok(self.store.remove_user(name, &audit)?)
    }

    /// Adds login keys to a user (all or none).
    pub fn add_login_keys(
        &mut self,
        actor: &Actor,
        user: &str,
        lines: &[String],
    ) -> Result<Vec<LoginKeyRecord>, VaultError> {
        let owner = self.store.user(user)?;
        let keys = parse_login_keys(lines)?;
        if keys.is_empty() {
            return Err(VaultError::Invalid(vec![Violation::new(
                "login-key",
                "no public key given (expected lines like `ssh-ed25519 AAAA… comment`)",
            )]));
        }
        let fingerprints: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
        let audit = Self::audit(
            actor,
            user,
            "login-key.add",
            None,
            json!({ "fingerprints": fingerprints }),
        );
        self.store.add_login_keys(owner.id, &keys, &audit)?;
        let added: Vec<String> = keys.into_iter().map(|k| k.fingerprint).collect();
        Ok(self
            .store
            .login_keys(owner.id)?
            .into_iter()
            .filter(|k| added.contains(&k.fingerprint))
            .collect())
    }

    /// A user's login keys.
    pub fn login_keys(&self, user: &str) -> Result<Vec<LoginKeyRecord>, VaultError> {
        let owner = self.store.user(user)?;
        Ok(self.store.login_keys(owner.id)?)
    }

    /// Removes a login key, named by fingerprint or by its public key line.
    pub fn remove_login_key(
        &mut self,
        actor: &Actor,
        user: &str,
        key: &str,
    ) -> Result<(), VaultError> {
        let owner = self.store.user(user)?;
        let fingerprint = if key.starts_with("SHA256:") {
            key.to_string()
        } else {
            LoginKey::parse(key)
                .map_err(|e| VaultError::Invalid(vec![Violation::new("login-key", e.to_string())]))?
                .fingerprint()
        };
        let audit = Self::audit(
            actor,
            user,
            "login-key.remove",
            None,
            json!({ "fingerprint": fingerprint }),
        );
        Ok(self
            .store
            .remove_login_key(owner.id, &fingerprint, &audit)?)
    }

    /// The user's public key.
    pub fn user_key(&self, user: &str) -> Result<UserKeyInfo, VaultError> {
        let owner = self.store.user(user)?;
        let key = self.store.user_key(owner.id)?;
        Ok(UserKeyInfo {
            algorithm: key.algorithm,
            public_key: key.public_key,
            fingerprint: key.fingerprint,
            created_at: key.created_at,
        })
    }

    /// Replaces the user's key pair; the old one stops working at once.
    #[instrument(skip_all, fields(user = %user))]
    pub fn regenerate_user_key(
        &mut self,
        actor: &Actor,
        user: &str,
        key_type: Option<KeyType>,
    ) -> Result<UserKeyInfo, VaultError> {
        let owner = self.store.user(user)?;
        let old = self.store.user_key(owner.id)?;
        let kind = match key_type {
            Some(kind) => kind,
            None => old.algorithm.parse()?,
        };
        let pair = KeyPair::generate(kind, &format!("keyport:{user}"))?;
        let new = seal_pair(self.master(), &owner.id.to_string(), &pair)?;
        let audit = Self::audit(
            actor,
            user,
            "key.regenerate",
            None,
            json!({ "old_fingerprint": old.fingerprint, "new_fingerprint": new.fingerprint,
                    "key_type": kind.as_str() }),
        );
        self.store.replace_user_key(owner.id, &new, &audit)?;
        self.user_key(user)
    }

    /// Opens the user's private key, for signing inside the daemon. Never for output.
    pub fn open_user_key(&self, user: &str) -> Result<KeyPair, VaultError> {
        let owner = self.store.user(user)?;
        let key = self.store.user_key(owner.id)?;
        let uid = owner.id.to_string();
        let bytes = self
            .master()
            .unseal(user_key_binding(&uid), &key.private_sealed)?;
        Ok(KeyPair::from_secret_bytes(&bytes)?)
    }

    /// The daemon's ed25519 host key, created and stored sealed on first use.
    pub fn host_key(&mut self) -> Result<KeyPair, VaultError> {
        self.daemon_key("ed25519", KeyType::Ed25519, "keyport host key")
    }

    /// The P-256 key keyport signs each user's JWT for Vault/OpenBao with, created and stored
    /// sealed (beside the host key) on first use.
    pub fn jwt_key(&mut self) -> Result<KeyPair, VaultError> {
        self.daemon_key(
            "jwt-ecdsa-p256",
            KeyType::EcdsaP256,
            "keyport jwt signing key",
        )
    }

    /// One of the daemon's own keys (`host_keys`, by `algorithm`), created on first use.
    fn daemon_key(
        &mut self,
        algorithm: &str,
        kind: KeyType,
        comment: &str,
    ) -> Result<KeyPair, VaultError> {
        let record = match self.store.host_key(algorithm)? {
            Some(record) => record,
            None => {
                let pair = KeyPair::generate(kind, comment)?;
                let bytes = pair.to_secret_bytes()?;
                let record = KeyPairRecord {
                    algorithm: algorithm.into(),
                    public_key: pair.public_line()?,
                    fingerprint: pair.fingerprint(),
                    private_sealed: self
                        .master()
                        .seal(host_key_binding(algorithm), bytes.expose())?,
                    created_at: now_ms(),
                };
                // Another process may have raced us; use whichever key landed.
                self.store.insert_host_key(&record)?
            }
        };
        let bytes = self
            .master()
            .unseal(host_key_binding(algorithm), &record.private_sealed)?;
        Ok(KeyPair::from_secret_bytes(&bytes)?)
    }

    /// Creates an API token for `user`; its text is returned once and stored only hashed.
    pub fn create_token(
        &mut self,
        actor: &Actor,
        user: &str,
        name: &str,
    ) -> Result<TokenIssued, VaultError> {
        let owner = self.store.user(user)?;
        validate::check_name(name).map_err(|mut v| {
            v.field = "token".into();
            VaultError::Invalid(vec![v])
        })?;
        let issued = TokenIssued::generate()?;
        let audit = Self::audit(actor, user, "token.create", None, json!({ "token": name }));
        let token = NewToken {
            name: name.to_string(),
            hash: token_hash(&issued.token),
        };
        self.store.create_token(owner.id, &token, &audit)?;
        Ok(issued)
    }
}

impl Vault {
    /// The user a bearer token belongs to, if any.
    pub fn authenticate(&mut self, token: &str) -> Result<Option<UserRecord>, VaultError> {
        Ok(self.store.user_by_token(&token_hash(token))?)
    }

    /// A user's tokens (names and times).
    pub fn tokens(&self, user: &str) -> Result<Vec<TokenRecord>, VaultError> {
        let owner = self.store.user(user)?;
        Ok(self.store.tokens(owner.id)?)
    }

    /// Revokes a user's token.
    pub fn revoke_token(
        &mut self,
        actor: &Actor,
        user: &str,
        name: &str,
    ) -> Result<(), VaultError> {
        let owner = self.store.user(user)?;
        let audit = Self::audit(actor, user, "token.revoke", None, json!({ "token": name }));
        Ok(self.store.revoke_token(owner.id, name, &audit)?)
    }

    /// How many secrets are stored, over all users.
    pub fn secret_count(&self) -> Result<i64, VaultError> {
        Ok(self.store.secret_count()?)
    }

    /// Audit events from `since_ms` on, only `user`'s when given.
    pub fn audit_events(
        &self,
        user: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        Ok(self.store.audit_events(user, since_ms)?)
    }

    /// The newest events matching a filter (see
    /// [`crate::store::Store::recent_audit_events`]).
    pub fn recent_audit_events(
        &self,
        user: Option<&str>,
        kind: Option<&str>,
        (since_ms, until_ms): (i64, i64),
        limit: i64,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        Ok(self
            .store
            .recent_audit_events(user, kind, since_ms, until_ms, limit)?)
    }

    /// One page of audit events (see [`crate::store::Store::audit_page`]).
    pub fn audit_page(
        &self,
        user: Option<&str>,
        since_ms: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        Ok(self.store.audit_page(user, since_ms, after, limit)?)
    }
}

impl TokenIssued {
    /// A fresh token: `kpt_` and 256 random bits, base64url.
    pub fn generate() -> Result<Self, VaultError> {
        Ok(Self {
            token: random_token("kpt_")?,
        })
    }
}

/// `prefix` and 256 random bits, base64url: API tokens, sign-in links, web sessions.
pub(super) fn random_token(prefix: &str) -> Result<zeroize::Zeroizing<String>, VaultError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut_slice())
        .map_err(|_| VaultError::Seal(keyport_keys::SealError::Random))?;
    Ok(zeroize::Zeroizing::new(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(raw.as_slice())
    )))
}

/// The stored form of a token: hex SHA-256. Tokens are 256 random bits, so a fast hash is enough.
pub fn token_hash(token: &str) -> String {
    keyport_keys::seal::hex(&Sha256::digest(token.as_bytes()))
}

fn seal_pair(
    master: &keyport_keys::MasterKey,
    user_id: &str,
    pair: &KeyPair,
) -> Result<NewUserKey, VaultError> {
    let bytes = pair.to_secret_bytes()?;
    Ok(NewUserKey {
        algorithm: pair.kind().as_str().to_string(),
        public_key: pair.public_line()?,
        fingerprint: pair.fingerprint(),
        private_sealed: master.seal(user_key_binding(user_id), bytes.expose())?,
    })
}

/// Parses login key lines; blank lines and `#` comments are skipped, as in `authorized_keys`.
fn parse_login_keys(lines: &[String]) -> Result<Vec<NewLoginKey>, VaultError> {
    let mut keys: Vec<NewLoginKey> = Vec::new();
    let mut invalid = Vec::new();
    for (i, line) in lines.iter().flat_map(|l| l.lines()).enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match LoginKey::parse(line).and_then(|k| {
            Ok(NewLoginKey {
                algorithm: k.algorithm(),
                public_key: k.canonical_line()?,
                fingerprint: k.fingerprint(),
                comment: k.comment(),
            })
        }) {
            Ok(key) if keys.iter().any(|k| k.fingerprint == key.fingerprint) => {}
            Ok(key) => keys.push(key),
            Err(e) => invalid.push(Violation::new("login-key", format!("line {}: {e}", i + 1))),
        }
    }
    if invalid.is_empty() {
        Ok(keys)
    } else {
        Err(VaultError::Invalid(invalid))
    }
}
