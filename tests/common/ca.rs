//! keyport as the workspaces' SSH user CA (relay mode's `--auth ca`): the daemon's config
//! file, workspace sshds that trust only the CA lines given (scoped to the workspace login with
//! `Match User`, no authorized_keys entry for the relayed login), the `keyport ca` CLI's
//! answers, what sshd logs of each certificate it accepts, and scans for certificates and
//! private keys left on disk or unsealed in the data dir.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use russh::keys::ssh_key::private::Ed25519Keypair;

use super::relay::Gateway;
use super::sshd::Sshd;
use super::{Sandbox, contains};

/// The `[ca] gateway` the tests give: the middle part of every key id.
pub const GATEWAY: &str = "gw1";

/// A keyport daemon whose config file (`KEYPORT_CONFIG`, for the daemon and for the CLI
/// run here alike: the CA lines and the workspace snippet name `[ca] gateway`) says
/// `[ca] gateway = "gw1"`. Fields drop in order: the daemon first, then its config.
pub struct CaGateway {
    pub gw: Gateway,
    config: tempfile::NamedTempFile,
}

impl std::ops::Deref for CaGateway {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gw
    }
}

impl CaGateway {
    /// `None` without root. The config is `[ca] gateway = "gw1"` plus `ca` (more `[ca]`
    /// keys), then `rest` (other tables, e.g. [`NO_HOLD`]).
    pub fn start(ca: &str, rest: &str) -> Option<Self> {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!("[ca]\ngateway = \"{GATEWAY}\"\n{ca}\n{rest}\n"),
        )
        .unwrap();
        let gw = Gateway::start(&[("KEYPORT_CONFIG", config.path().to_str().unwrap())])?;
        Some(Self { gw, config })
    }

    /// `keyport ARGS` on the data dir, with the daemon's config.
    pub fn run(&self, args: &[&str]) -> Output {
        self.gw
            .sb
            .keyport()
            .env("KEYPORT_CONFIG", self.config.path())
            .args(args)
            .output()
            .unwrap()
    }

    /// [`CaGateway::run`], insisting it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keyport {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `keyport ca show`: the `TrustedUserCAKeys` lines, in its order.
    pub fn ca_lines(&self) -> Vec<String> {
        self.ok(&["ca", "show"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `keyport ca status -o json`.
    pub fn ca_status(&self) -> serde_json::Value {
        let out = self.ok(&["ca", "status", "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ca status is not JSON ({e}): {out}"))
    }

    /// `keyport workspace add NAME --address … --os-user LOGIN --owner OWNER --host-key …
    /// --auth ca`; returns what it printed (the sshd snippet).
    pub fn add_ca_workspace(&self, name: &str, sshd: &Sshd, login: &str, owner: &str) -> String {
        self.ok(&[
            "workspace",
            "add",
            name,
            "--address",
            &sshd.address(),
            "--os-user",
            login,
            "--owner",
            owner,
            "--host-key",
            sshd.host_line(),
            "--auth",
            "ca",
        ])
    }

    /// `keyport workspace show NAME -o json`'s `auth`.
    pub fn workspace_auth(&self, name: &str) -> String {
        let out = self.ok(&["workspace", "show", name, "-o", "json"]);
        let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
        shown["auth"]
            .as_str()
            .unwrap_or_else(|| panic!("no auth in: {out}"))
            .to_string()
    }
}

/// `[relay]` that never holds a (user, workspace) after failures: tests that expect
/// refusals on purpose.
pub const NO_HOLD: &str = "[relay]\nfailure_hold_secs = 0\n";

/// The CA `id` in a `ca status` answer.
pub fn status_ca<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["cas"].as_array()?.iter().find(|c| c["id"] == id)
}

/// Workspace `name` in a `ca status` answer.
pub fn status_workspace<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["workspaces"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("no workspace {name} in ca status: {status}"))
}

/// The `SHA256:` fingerprint of a public key line.
pub fn fingerprint(line: &str) -> String {
    keyport_keys::LoginKey::parse(line)
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .fingerprint()
}

/// A workspace's sshd that trusts the CA lines in its `user_ca.pub` for its login only.
pub struct CaSshd {
    pub sshd: Sshd,
    /// The `TrustedUserCAKeys` file (0644), rewritten by [`CaSshd::trust`].
    pub ca_file: PathBuf,
    pub login: String,
}

impl CaSshd {
    /// sshd `name` letting `login` in, trusting `lines` for it (`Match User login`, then
    /// `TrustedUserCAKeys` and each of `in_match`). Its authorized_keys is empty.
    ///
    /// The Match block is in a file of its own, `Include`d at the end of the config: the
    /// harness may append global lines after the test's (e.g. `PerSourcePenaltyExemptList`
    /// on OpenSSH ≥ 9.8), and a Match block ends with the file it is in.
    pub fn start(
        sb: &Sandbox,
        name: &str,
        login: &str,
        lines: &[String],
        in_match: &[&str],
    ) -> Self {
        let dir = sb.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("user_ca.pub");
        let block = dir.join("keyport.conf");
        let mut text = format!(
            "Match User {login}\n    TrustedUserCAKeys {}\n",
            ca_file.display()
        );
        for line in in_match {
            text.push_str(&format!("    {line}\n"));
        }
        std::fs::write(&block, text).unwrap();
        let ca = Self {
            sshd: Sshd::build(sb, name)
                .login(login)
                .config(&format!("Include {}", block.display()))
                .start(),
            ca_file,
            login: login.to_string(),
        };
        ca.trust(lines);
        ca
    }

    /// Replaces the trusted CA lines (sshd reads the file at each authentication).
    pub fn trust(&self, lines: &[String]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&self.ca_file, lines.join("\n") + "\n").unwrap();
        std::fs::set_permissions(&self.ca_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// `user`'s `ca.certificate` audit events for `workspace`.
pub fn certificates(gw: &Gateway, user: &str, workspace: &str) -> Vec<serde_json::Value> {
    gw.audit(user, "ca.certificate")
        .into_iter()
        .filter(|e| e["detail"]["workspace"] == workspace)
        .collect()
}

/// One certificate login as sshd logged it (`Accepted publickey for LOGIN … ED25519-CERT
/// SHA256:… ID KEYID (serial N) CA ED25519 SHA256:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub login: String,
    /// The certified key's fingerprint.
    pub key: String,
    pub key_id: String,
    pub serial: String,
    /// `ED25519`, `ECDSA`.
    pub ca_type: String,
    pub ca_fingerprint: String,
}

/// Every certificate login in an sshd log.
pub fn accepted_certificates(log: &str) -> Vec<Accepted> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("Accepted publickey for ").nth(1)?;
            let login = rest.split_whitespace().next()?.to_string();
            let t: Vec<&str> = rest.split("ssh2: ").nth(1)?.split_whitespace().collect();
            if t.len() < 9 || !t[0].ends_with("-CERT") || t[2] != "ID" || t[4] != "(serial" {
                return None;
            }
            Some(Accepted {
                login,
                key: t[1].to_string(),
                key_id: t[3].to_string(),
                serial: t[5].trim_end_matches(')').to_string(),
                ca_type: t[7].to_string(),
                ca_fingerprint: t[8].to_string(),
            })
        })
        .collect()
}

/// The text every certificate type name ends with.
pub const CERT_TYPE_TEXT: &[u8] = b"-cert-v01@openssh.com";

/// What a certificate looks like on disk whatever else is there: its blob's start (the
/// length-prefixed type name, raw), and the base64 of that in a `-cert.pub` file (whole
/// 3-byte groups).
pub fn certificate_forms() -> Vec<(String, Vec<u8>)> {
    let mut forms = Vec::new();
    for name in [
        "ssh-ed25519-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    ] {
        let mut blob = (name.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(name.as_bytes());
        forms.push((format!("a {name} blob"), blob.clone()));
        blob.truncate(blob.len() / 3 * 3);
        forms.push((
            format!("base64 of a {name}"),
            STANDARD.encode(&blob).into_bytes(),
        ));
    }
    forms
}

/// How [`leaks`] looks at a tree.
pub struct Scan<'a> {
    /// Only files modified at or after this (None: every file).
    pub since: Option<SystemTime>,
    /// Also a certificate type name as text ([`CERT_TYPE_TEXT`]): not where anyone's files
    /// may be, since keyport's refusal message names `ssh-ed25519-cert-v01@openssh.com` (for
    /// `PubkeyAcceptedAlgorithms`) and a test run's output redirected to /tmp holds it.
    pub text: bool,
    /// Files that may hold a PEM private key (the sandbox's client keys, sshd host keys):
    /// they are still parsed, and must not be one of `forbidden`.
    pub private_ok: &'a dyn Fn(&Path) -> bool,
    /// Paths not looked at (another test's sandbox, a file sshd writes).
    pub skip: &'a dyn Fn(&Path) -> bool,
    /// Fingerprints of keys whose private half must be nowhere (the CA's, the certified
    /// per-connection keys').
    pub forbidden: &'a [String],
}

/// Files below `root` (to `depth` levels, `target` dirs skipped) holding a certificate, a PEM
/// private key not allowed there, or a PEM private key of a forbidden key; with what.
pub fn leaks(root: &Path, depth: usize, scan: &Scan<'_>) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    let mut forms = certificate_forms();
    if scan.text {
        forms.push(("a certificate type name".into(), CERT_TYPE_TEXT.to_vec()));
    }
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if (scan.skip)(&path) {
            continue;
        }
        if meta.is_dir() {
            if depth > 0 && entry.file_name() != "target" {
                found.extend(leaks(&path, depth - 1, scan));
            }
            continue;
        }
        if !meta.is_file() || meta.len() > 8 * 1024 * 1024 {
            continue;
        }
        if let Some(since) = scan.since
            && meta.modified().is_ok_and(|m| m < since)
        {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for (what, form) in &forms {
            if contains(&bytes, form) {
                found.push((path.clone(), what.clone()));
            }
        }
        if !contains(&bytes, b"BEGIN OPENSSH PRIVATE KEY") {
            continue;
        }
        if !(scan.private_ok)(&path) {
            found.push((path.clone(), "a PEM private key".into()));
        }
        for fp in pem_fingerprints(&bytes) {
            if scan.forbidden.contains(&fp) {
                found.push((path.clone(), format!("the private key of {fp}")));
            }
        }
    }
    found
}

/// The public fingerprints of the OpenSSH PEM private keys in `bytes`.
fn pem_fingerprints(bytes: &[u8]) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    const END: &str = "-----END OPENSSH PRIVATE KEY-----";
    let text = String::from_utf8_lossy(bytes);
    text.match_indices(BEGIN)
        .filter_map(|(at, _)| {
            let rest = &text[at..];
            let pem = &rest[..rest.find(END)? + END.len()];
            let key = russh::keys::PrivateKey::from_openssh(pem).ok()?;
            Some(key.fingerprint(russh::keys::HashAlg::Sha256).to_string())
        })
        .collect()
}

/// Whether `path` is another test's harness sandbox (a temp dir with `home/.ssh/`), other
/// than `mine`.
pub fn other_sandbox(path: &Path, mine: &Path) -> bool {
    path != mine
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
        && path.join("home/.ssh").is_dir()
}

/// Asserts no file in the data dir holds a CA's private key unsealed: no PEM, no OpenSSH
/// private key blob (its `openssh-key-v1` magic, raw or base64) in any file, and no value in
/// any table that decodes (raw, base64 or hex) as the private half of one of `ca_lines`, as
/// an OpenSSH private key or a bare ed25519 seed.
pub fn assert_ca_sealed(sb: &Sandbox, ca_lines: &[String]) {
    let publics: Vec<russh::keys::PublicKey> = ca_lines
        .iter()
        .map(|l| russh::keys::PublicKey::from_openssh(l).unwrap())
        .collect();
    let magic_b64 = STANDARD.encode(b"openssh-key-v1\0");
    let needles: [(&str, &[u8]); 3] = [
        ("a PEM private key", b"PRIVATE KEY"),
        ("an OpenSSH private key blob", b"openssh-key-v1"),
        ("a base64 OpenSSH private key blob", magic_b64.as_bytes()),
    ];
    let mut dirs = vec![sb.data()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for (what, needle) in needles {
                assert!(!contains(&bytes, needle), "{} holds {what}", path.display());
            }
        }
    }
    let is_ca = |key: &russh::keys::PrivateKey| {
        publics
            .iter()
            .any(|p| p.key_data() == key.public_key().key_data())
    };
    let conn = rusqlite::Connection::open(sb.db()).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let bytes = match row.get::<_, rusqlite::types::Value>(i).unwrap() {
                    rusqlite::types::Value::Blob(b) => b,
                    rusqlite::types::Value::Text(t) => t.into_bytes(),
                    _ => continue,
                };
                let decoded = STANDARD.decode(bytes.trim_ascii()).unwrap_or_default();
                let unhexed = unhex(&bytes).unwrap_or_default();
                for candidate in [&bytes, &decoded, &unhexed] {
                    let key = russh::keys::PrivateKey::from_bytes(candidate)
                        .ok()
                        .or_else(|| {
                            russh::keys::PrivateKey::from_openssh(candidate.as_slice()).ok()
                        });
                    assert!(
                        !key.as_ref().is_some_and(is_ca),
                        "table {table} holds a CA private key unsealed"
                    );
                    // A bare ed25519 seed, raw, base64 or hex.
                    if let Ok(seed) = <[u8; 32]>::try_from(candidate.as_slice()) {
                        let pair = Ed25519Keypair::from_seed(&seed);
                        assert!(
                            !publics
                                .iter()
                                .any(|p| p.key_data().ed25519() == Some(&pair.public)),
                            "table {table} holds a CA's ed25519 seed unsealed"
                        );
                    }
                }
            }
        }
    }
}

/// `hex`'s bytes, when it is an even number of hex digits.
fn unhex(hex: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(hex).ok()?;
    if text.len() % 2 != 0 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
