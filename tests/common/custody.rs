//! Where a user's private key must never be: the forms it could take (raw scalar, hex,
//! base64, the OpenSSH binary form, its base64 as a PEM file holds it, PKCS#8 as PEM holds it)
//! and scans of files, process environments, API answers and bytes for any of them, also
//! while a session lives.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use keyport_keys::KeyPair;
use russh::keys::ssh_key::private::{EcdsaKeypair, KeypairData};

use super::{Daemon, Http, contains};

/// One private key's every encoding, and its public half (to recognise a PEM of it).
pub struct Custody {
    forms: Vec<(&'static str, Vec<u8>)>,
    public: russh::keys::PublicKey,
}

impl Custody {
    /// The forms of `pair`'s private key.
    pub fn of(pair: &KeyPair) -> Self {
        let raw = match pair.private().key_data() {
            KeypairData::Ed25519(kp) => kp.private.to_bytes().to_vec(),
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, .. }) => {
                private.as_slice().to_vec()
            }
            other => panic!("unexpected key type {other:?}"),
        };
        let blob = pair.to_secret_bytes().unwrap().expose().to_vec();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut forms = vec![
            ("raw scalar", raw.clone()),
            ("OpenSSH binary", blob.clone()),
            ("hex", hex.clone().into_bytes()),
            ("HEX", hex.to_uppercase().into_bytes()),
            ("base64", STANDARD_NO_PAD.encode(&raw).into_bytes()),
        ];
        // A PEM file holds base64(blob) in 70-character lines: a window inside one line that
        // starts within the scalar.
        if let Some(at) = blob.windows(raw.len()).position(|w| w == raw.as_slice()) {
            let b64 = STANDARD.encode(&blob);
            let mut k = at.div_ceil(3) * 4;
            if k % 70 + 24 > 70 {
                k = (k / 70 + 1) * 70;
            }
            forms.push(("OpenSSH PEM body", b64.as_bytes()[k..k + 24].to_vec()));
        }
        // PKCS#8 (RFC 8410) for ed25519: a fixed 16-byte prefix, then the seed; its PEM body
        // is one line. The window starts past the prefix.
        if raw.len() == 32 && matches!(pair.private().key_data(), KeypairData::Ed25519(_)) {
            let mut der = hex_bytes("302e020100300506032b657004220420");
            der.extend_from_slice(&raw);
            let b64 = STANDARD.encode(&der);
            forms.push(("PKCS#8 PEM body", b64.as_bytes()[24..64].to_vec()));
        }
        Self {
            forms,
            public: pair.private().public_key().clone(),
        }
    }

    /// The forms of several keys (e.g. before and after a regeneration), as one.
    pub fn all(pairs: &[&KeyPair]) -> Vec<Self> {
        pairs.iter().map(|p| Self::of(p)).collect()
    }

    /// Which form of the key `bytes` hold, if any (a PEM of the key counts, however wrapped).
    pub fn found_in(&self, bytes: &[u8]) -> Option<&'static str> {
        if let Some((name, _)) = self.forms.iter().find(|(_, n)| contains(bytes, n)) {
            return Some(name);
        }
        let text = std::str::from_utf8(bytes).ok()?;
        for (start, _) in text.match_indices("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let rest = &text[start..];
            let end = rest.find("-----END OPENSSH PRIVATE KEY-----")?;
            let pem = &rest[..end + "-----END OPENSSH PRIVATE KEY-----".len()];
            if russh::keys::PrivateKey::from_openssh(pem)
                .is_ok_and(|k| k.public_key().key_data() == self.public.key_data())
            {
                return Some("OpenSSH PEM");
            }
        }
        None
    }

    /// Files below `root` (to `depth` levels, `.git` included, build output skipped) that
    /// hold the key, with the form found.
    pub fn files_holding(&self, root: &Path, depth: usize) -> Vec<(PathBuf, &'static str)> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(root) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth > 0 && entry.file_name() != "target" {
                    found.extend(self.files_holding(&path, depth - 1));
                }
                continue;
            }
            if !meta.is_file() || meta.len() > 8 * 1024 * 1024 {
                continue;
            }
            if let Some(form) = std::fs::read(&path).ok().and_then(|b| self.found_in(&b)) {
                found.push((path, form));
            }
        }
        found
    }
}

/// The environments (`/proc/PID/environ`) of every process below `ancestor`, by pid.
pub fn environs_below(ancestor: u32) -> Vec<(u32, Vec<u8>)> {
    super::procs::below(ancestor)
        .into_iter()
        .filter_map(|(pid, _)| Some((pid, std::fs::read(format!("/proc/{pid}/environ")).ok()?)))
        .collect()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// An ssh client whose session is kept open; killed (ending the session) on drop.
pub struct SessionGuard(Child);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` in a session that stays open after it (until the guard drops); returns
/// the guard and what the script printed. Its stderr goes to `errors`.
pub fn live_session(
    daemon: &Daemon,
    user: &str,
    key: &Path,
    script: &str,
    errors: &Path,
) -> (SessionGuard, String) {
    let mut child = SessionGuard(
        daemon
            .ssh(user, key)
            .arg(format!("{script}\necho session-ready; exec sleep 300"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(errors).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut out = String::new();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "session-ready" => break,
            Some(Ok(line)) => out.push_str(&format!("{line}\n")),
            _ => panic!(
                "the session ended early:\n{out}\n{}",
                std::fs::read_to_string(errors).unwrap_or_default()
            ),
        }
    }
    (child, out)
}

pub fn assert_nowhere(keys: &[Custody], places: &[(PathBuf, usize)], when: &str) {
    for key in keys {
        for (root, depth) in places {
            let found = key.files_holding(root, *depth);
            assert!(found.is_empty(), "{when}: the private key is in {found:?}");
        }
    }
}

pub fn assert_no_process_holds(keys: &[Custody], daemon: u32) {
    let environs = environs_below(daemon);
    assert!(!environs.is_empty(), "no session process found");
    for key in keys {
        for (pid, env) in &environs {
            assert_eq!(key.found_in(env), None, "the environment of pid {pid}");
        }
    }
}

pub fn assert_no_answer_holds(keys: &[Custody], daemon: &Daemon, api: &Http) {
    let mut answers: Vec<String> = [
        "users/me/key",
        "users/me/secrets",
        "users/me/tokens",
        "users/me/login-keys",
        "audit",
    ]
    .iter()
    .map(|path| api.get(path).body)
    .collect();
    answers.push(Http::new(&daemon.url, None).get("metrics").body);
    answers.push(Http::new(&daemon.url, None).get("openapi.json").body);
    for key in keys {
        for answer in &answers {
            assert_eq!(
                key.found_in(answer.as_bytes()),
                None,
                "an API answer: {answer}"
            );
        }
    }
}
