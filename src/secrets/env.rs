//! The environment of a new session, composed from design.md's five levels, lowest first:
//!
//! 1. a clean base (never the daemon's own environment, which may hold the master key);
//! 2. the operator's env from the config (the "template" env);
//! 3. the client's `env` requests whose names match the accept list (like sshd's `AcceptEnv`;
//!    the others are refused and reported, not applied);
//! 4. the user's enabled env secrets, which override 2 and 3;
//! 5. keyport's own variables (`SSH_AUTH_SOCK`, `GIT_SSH_COMMAND`, `KEYPORT_*`), which no
//!    secret may take.
//!
//! Pure: the caller gathers the inputs (the store, the SSH channel, the passwd entry).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use keyport_keys::SecretBytes;

/// What goes into a session's environment.
#[derive(Debug, Default)]
pub struct EnvInputs<'a> {
    /// Level 1: `HOME USER LOGNAME SHELL PATH`, `TERM` for a pty, `SSH_CLIENT SSH_CONNECTION
    /// SSH_TTY`.
    pub base: Vec<(String, String)>,
    /// Level 2: the operator's env.
    pub operator: Option<&'a BTreeMap<String, String>>,
    /// Level 3: what the client asked for, in order.
    pub client: &'a [(String, String)],
    /// The accept list for level 3 (`*` and `?` wildcards).
    pub accept: &'a [String],
    /// Level 4: the user's enabled env secrets (name, value).
    pub secrets: &'a [(String, SecretBytes)],
    /// Level 5: keyport's own variables.
    pub keyport: Vec<(String, String)>,
}

/// A composed environment. `Debug` shows names only: values may be secrets.
#[derive(Default)]
pub struct SessionEnv {
    vars: BTreeMap<String, zeroize::Zeroizing<Vec<u8>>>,
    /// Client env names that were refused (not on the accept list).
    pub refused: Vec<String>,
}

impl std::fmt::Debug for SessionEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEnv")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .field("refused", &self.refused)
            .finish()
    }
}

impl SessionEnv {
    /// The variables, ready for `Command::envs` after `env_clear`.
    pub fn to_os_pairs(&self) -> Vec<(OsString, OsString)> {
        self.vars
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from_vec(v.to_vec())))
            .collect()
    }

    /// One variable's value.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.vars.get(name).map(|v| v.as_slice())
    }

    /// Appends `dir` to `PATH` (whatever earlier levels made it; `dir` alone if unset), so
    /// what it holds is found last: a program the session's own `PATH` names wins.
    pub fn append_path(&mut self, dir: &str) {
        let path = match self.vars.get("PATH") {
            Some(path) if !path.is_empty() => {
                let mut joined = path.to_vec();
                joined.push(b':');
                joined.extend_from_slice(dir.as_bytes());
                joined
            }
            _ => dir.as_bytes().to_vec(),
        };
        self.vars
            .insert("PATH".into(), zeroize::Zeroizing::new(path));
    }

    /// The names set, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }
}

/// Composes the environment; later levels override earlier ones.
pub fn compose_env(inputs: &EnvInputs<'_>) -> SessionEnv {
    let mut env = SessionEnv::default();
    let mut set = |k: &str, v: &[u8]| {
        env.vars
            .insert(k.to_string(), zeroize::Zeroizing::new(v.to_vec()));
    };
    for (k, v) in &inputs.base {
        set(k, v.as_bytes());
    }
    for (k, v) in inputs.operator.into_iter().flatten() {
        set(k, v.as_bytes());
    }
    let mut refused = Vec::new();
    for (k, v) in inputs.client {
        if client_env_accepted(inputs.accept, k, v) {
            set(k, v.as_bytes());
        } else {
            refused.push(k.clone());
        }
    }
    for (k, v) in inputs.secrets {
        set(k, v.expose());
    }
    for (k, v) in &inputs.keyport {
        set(k, v.as_bytes());
    }
    env.refused = refused;
    env
}

/// Whether `name` matches one of `patterns` (`*` any run, `?` any one character), as
/// sshd's `AcceptEnv` matches.
pub fn accepted(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|p| wildcard(p.as_bytes(), name.as_bytes()))
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| wildcard(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && wildcard(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && wildcard(rest, &text[1..]),
    }
}

/// Whether a client `env` request is applied: a valid name on the accept list, a value without
/// NUL. The SSH handler replies with the same answer.
pub fn client_env_accepted(accept: &[String], name: &str, value: &str) -> bool {
    valid_name(name) && accepted(accept, name) && !value.contains('\0')
}

/// A name a shell can hold: no `=`, no NUL, not empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn the_session_bin_dir_goes_last_on_any_path() {
        let mut env = compose_env(&EnvInputs {
            base: vec![(s("PATH"), s("/usr/local/bin:/usr/bin"))],
            operator: None,
            client: &[],
            accept: &[],
            secrets: &[],
            keyport: vec![],
        });
        env.append_path("/tmp/keyport-x/bin");
        assert_eq!(
            env.get("PATH"),
            Some(&b"/usr/local/bin:/usr/bin:/tmp/keyport-x/bin"[..])
        );
        let mut bare = SessionEnv::default();
        bare.append_path("/tmp/keyport-x/bin");
        assert_eq!(bare.get("PATH"), Some(&b"/tmp/keyport-x/bin"[..]));
    }

    #[test]
    fn accept_list_wildcards() {
        let list = [s("LANG"), s("LC_*"), s("COLORTERM"), s("X?Z")];
        for (name, ok) in [
            ("LANG", true),
            ("LC_ALL", true),
            ("LC_", true),
            ("COLORTERM", true),
            ("XYZ", true),
            ("XZ", false),
            ("LANGUAGE", false),
            ("lang", false),
            ("PATH", false),
            ("LD_PRELOAD", false),
        ] {
            assert_eq!(accepted(&list, name), ok, "{name}");
        }
        assert!(!accepted(&[], "LANG"));
        assert!(accepted(&[s("*")], "ANYTHING"));
    }

    #[test]
    fn each_level_overrides_the_ones_below() {
        let operator: BTreeMap<String, String> = [
            (s("EDITOR"), s("vim")),
            (s("TOKEN"), s("from-operator")),
            (s("PATH"), s("/opt/bin")),
        ]
        .into();
        let client = [
            (s("LANG"), s("C.UTF-8")),
            (s("TOKEN"), s("from-client")),
            (s("LC_TOKEN"), s("from-client-lc")),
            (s("LD_PRELOAD"), s("/tmp/evil.so")),
            (s("LC_BAD"), s("nul\0inside")),
        ];
        let accept = [s("LANG"), s("LC_*"), s("TOKEN")];
        let secrets = [
            (s("TOKEN"), SecretBytes::from("from-secret")),
            (s("GH_TOKEN"), SecretBytes::from("ghp_x")),
        ];
        let env = compose_env(&EnvInputs {
            base: vec![(s("HOME"), s("/home/alice")), (s("PATH"), s("/usr/bin"))],
            operator: Some(&operator),
            client: &client,
            accept: &accept,
            secrets: &secrets,
            keyport: vec![(s("SSH_AUTH_SOCK"), s("/run/k/agent"))],
        });
        assert_eq!(env.get("HOME"), Some(&b"/home/alice"[..]));
        assert_eq!(
            env.get("PATH"),
            Some(&b"/opt/bin"[..]),
            "operator over base"
        );
        assert_eq!(env.get("EDITOR"), Some(&b"vim"[..]));
        assert_eq!(env.get("LANG"), Some(&b"C.UTF-8"[..]));
        assert_eq!(
            env.get("TOKEN"),
            Some(&b"from-secret"[..]),
            "secret over client and operator"
        );
        assert_eq!(env.get("LC_TOKEN"), Some(&b"from-client-lc"[..]));
        assert_eq!(env.get("GH_TOKEN"), Some(&b"ghp_x"[..]));
        assert_eq!(env.get("SSH_AUTH_SOCK"), Some(&b"/run/k/agent"[..]));
        assert_eq!(env.get("LD_PRELOAD"), None, "refused, not applied");
        assert_eq!(env.refused, ["LD_PRELOAD", "LC_BAD"]);
        let shown = format!("{env:?}");
        assert!(
            !shown.contains("from-secret") && !shown.contains("ghp_x"),
            "{shown}"
        );
        assert_eq!(env.to_os_pairs().len(), 8);
    }

    #[test]
    fn keyport_variables_win_over_everything() {
        let client = [(s("SSH_AUTH_SOCK"), s("/tmp/other"))];
        let env = compose_env(&EnvInputs {
            client: &client,
            accept: &[s("*")],
            keyport: vec![(s("SSH_AUTH_SOCK"), s("/run/k/agent"))],
            ..EnvInputs::default()
        });
        assert_eq!(env.get("SSH_AUTH_SOCK"), Some(&b"/run/k/agent"[..]));
    }

    #[test]
    fn nothing_from_the_daemons_environment() {
        let env = compose_env(&EnvInputs::default());
        assert_eq!(env.names().count(), 0);
    }
}
