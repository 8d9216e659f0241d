//! Micro benchmarks (divan) for the work keyport adds to a session start, and for the key
//! service's signatures: env composition, file materialisation, sealing, agent signatures, and
//! the store reads of a session start. `cargo bench --bench micro`; the end-to-end comparison
//! with OpenSSH's sshd is `benches/e2e.sh`. Results: `benches/RESULTS.md`.
//!
//! Files and data dirs go under Cargo's per-target temp dir (`target/tmp`), on the same disk
//! as the checkout, so fsyncs cost what they cost in a home directory (not tmpfs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use divan::{Bencher, black_box};
use keyport::secrets::env::{EnvInputs, compose_env};
use keyport::secrets::files::{self, Plan, Wanted};
use keyport::secrets::{Limits, SecretSpec};
use keyport::vault::{Actor, NewUserSpec, SessionSecrets, SessionUser, Vault};
use keyport_keys::{Binding, KeyPair, KeyType, MasterKey, SecretBytes};

fn main() {
    divan::main();
}

/// A temp dir on the checkout's disk.
fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A value shaped like a token (40 bytes), different for each `i` and `round`.
fn value(i: usize, round: u64) -> SecretBytes {
    SecretBytes::new(format!("ghp_{round:016x}{i:020}").into_bytes())
}

/// Session environment composition with 0, 10 and 100 env secrets, on top of what a session
/// always has (base, operator env, one accepted client variable, keyport's own).
mod env {
    use super::*;

    #[divan::bench(args = [0, 10, 100])]
    fn compose(bencher: Bencher, secrets: usize) {
        let s = |v: &str| v.to_string();
        let operator: BTreeMap<String, String> = [(s("EDITOR"), s("vim"))].into();
        let client = [(s("LANG"), s("C.UTF-8"))];
        let accept = [s("LANG"), s("LC_*"), s("COLORTERM")];
        let secrets: Vec<(String, SecretBytes)> = (0..secrets)
            .map(|i| (format!("SECRET_{i}"), value(i, 0)))
            .collect();
        let base = vec![
            (s("HOME"), s("/home/alice")),
            (s("USER"), s("alice")),
            (s("LOGNAME"), s("alice")),
            (s("SHELL"), s("/bin/bash")),
            (s("PATH"), s("/usr/local/bin:/usr/bin:/bin")),
            (s("SSH_CLIENT"), s("127.0.0.1 50000 2222")),
            (s("SSH_CONNECTION"), s("127.0.0.1 50000 127.0.0.1 2222")),
        ];
        let keyport = vec![
            (s("KEYPORT_SESSION"), s("17")),
            (s("KEYPORT_USER"), s("alice")),
            (s("SSH_AUTH_SOCK"), s("/run/keyport/s17/agent")),
            (s("GIT_SSH_COMMAND"), s("/usr/bin/keyport gitssh --")),
        ];
        bencher.bench_local(|| {
            // The inputs are rebuilt per session in the daemon too (base, keyport vars).
            let env = compose_env(&EnvInputs {
                base: base.clone(),
                operator: Some(&operator),
                client: &client,
                accept: &accept,
                secrets: &secrets,
                keyport: keyport.clone(),
            });
            // What the spawn does with it.
            black_box(env.to_os_pairs())
        });
    }
}

/// `files::apply` for 100 file secrets: the steady state (every file already holds its value,
/// nothing is written) and a session after every value changed (100 atomic replaces).
mod materialise {
    use super::*;

    const FILES: usize = 100;

    fn plan(dir: &Path, round: u64) -> Plan {
        Plan {
            write: (0..FILES)
                .map(|i| Wanted {
                    path: dir.join(format!("cfg/secret-{i}")).display().to_string(),
                    content: value(i, round),
                    // What the previous round wrote: replaced, not saved as the user's edit.
                    previous: round
                        .checked_sub(1)
                        .map(|r| keyport::secrets::files::sha256_hex(value(i, r).expose())),
                })
                .collect(),
            remove: vec![],
        }
    }

    #[divan::bench(sample_count = 200)]
    fn unchanged_100(bencher: Bencher) {
        let dir = temp_dir();
        let plan = plan(dir.path(), 0);
        assert_eq!(files::apply(&plan).written.len(), FILES);
        bencher.bench_local(|| {
            let report = files::apply(black_box(&plan));
            debug_assert_eq!(report.unchanged.len(), FILES);
            report
        });
    }

    #[divan::bench(sample_count = 20, sample_size = 1)]
    fn all_changed_100(bencher: Bencher) {
        let dir = temp_dir();
        assert_eq!(files::apply(&plan(dir.path(), 0)).written.len(), FILES);
        let mut round = 0;
        bencher
            .with_inputs(|| {
                round += 1;
                plan(dir.path(), round)
            })
            .bench_local_refs(|plan| {
                let report = files::apply(plan);
                assert_eq!(report.written.len(), FILES);
                report
            });
    }
}

/// AES-256-GCM sealing with a binding, at a token-sized, a 4 KiB and the largest (64 KiB) value.
mod seal {
    use super::*;

    const BINDING: Binding<'static> = Binding {
        purpose: "secret",
        owner: "42",
        item: "GH_TOKEN",
    };

    #[divan::bench(args = [40, 4096, 65536])]
    fn seal(bencher: Bencher, len: usize) {
        let key = MasterKey::generate().unwrap();
        let plain = vec![7u8; len];
        bencher.bench_local(|| key.seal(BINDING, black_box(&plain)).unwrap());
    }

    #[divan::bench(args = [40, 4096, 65536])]
    fn unseal(bencher: Bencher, len: usize) {
        let key = MasterKey::generate().unwrap();
        let blob = key.seal(BINDING, &vec![7u8; len]).unwrap();
        bencher.bench_local(|| key.unseal(BINDING, black_box(&blob)).unwrap());
    }
}

/// What the in-memory agent does for one `SSH_AGENTC_SIGN_REQUEST`: the signature alone, and
/// the whole message (parse the request, sign, encode the answer). The data is shaped like a
/// publickey userauth request (RFC 4252 §7), about 150 bytes.
mod agent {
    use super::*;
    use keyport_keys::agent::{Request, Response};

    const TYPES: [KeyType; 2] = [KeyType::Ed25519, KeyType::EcdsaP256];

    fn data() -> Vec<u8> {
        (0..150u8).collect()
    }

    #[divan::bench(args = TYPES)]
    fn sign(bencher: Bencher, kind: KeyType) {
        let pair = KeyPair::generate(kind, "c").unwrap();
        let data = data();
        bencher.bench_local(|| pair.sign(black_box(&data)).unwrap());
    }

    #[divan::bench(args = TYPES)]
    fn sign_request(bencher: Bencher, kind: KeyType) {
        let pair = KeyPair::generate(kind, "c").unwrap();
        let payload = Request::Sign {
            key: pair.public_blob().unwrap(),
            data: data(),
            flags: 0,
        }
        .encode();
        bencher.bench_local(|| {
            let Ok(Request::Sign { data, .. }) = Request::parse(black_box(&payload)) else {
                panic!("not a sign request");
            };
            Response::Signature(pair.sign(&data).unwrap()).encode()
        });
    }
}

/// The vault work of a session start (the daemon does it on its blocking vault thread, under
/// the vault's one lock): the user's enabled secrets read and opened, and — for file secrets —
/// the plan, its application (nothing changed) and the ledger check.
mod store {
    use super::*;

    /// A data dir with user `bench` (running as the current OS user) holding `n` secrets,
    /// each with an env and a file target. The files live in the returned dir's `files/`.
    fn vault_with(n: usize) -> (tempfile::TempDir, Vault) {
        let dir = temp_dir();
        let mut vault = Vault::open(&dir.path().join("data"), Limits::default()).unwrap();
        let os_user = keyport::osuser::current().unwrap().name;
        vault
            .add_user(
                &Actor::System,
                &NewUserSpec {
                    name: "bench".into(),
                    os_user: Some(os_user),
                    ..NewUserSpec::default()
                },
            )
            .unwrap();
        for i in 0..n {
            let spec = SecretSpec {
                source: None,
                required: false,
                name: format!("secret-{i}"),
                value: value(i, 0),
                description: String::new(),
                env: Some(format!("SECRET_{i}")),
                file: Some(dir.path().join(format!("files/s{i}")).display().to_string()),
                enabled: None,
                lifecycle: Default::default(),
            };
            vault.create_secret(&Actor::System, "bench", &spec).unwrap();
        }
        (dir, vault)
    }

    /// What a session of `bench` gets (stored values only: no sources here).
    fn opened(vault: &Vault) -> (SessionSecrets, Vec<String>) {
        let user = vault.user("bench").unwrap();
        let who = SessionUser {
            id: user.id,
            name: user.name,
        };
        let values = vault
            .session_secrets(&who)
            .unwrap()
            .into_iter()
            .map(|o| (o.record, o.value.unwrap()))
            .collect();
        SessionSecrets::compose(values)
    }

    #[divan::bench(args = [0, 10, 100], sample_count = 100)]
    fn session_secrets(bencher: Bencher, n: usize) {
        let (_dir, vault) = vault_with(n);
        bencher.bench_local(|| {
            let (secrets, names) = opened(&vault);
            assert_eq!(names.len(), n);
            secrets
        });
    }

    /// session_secrets + file_plan + apply + record_files, with nothing to write: the whole
    /// vault and file work keyport adds to a session start for `n` env+file secrets.
    #[divan::bench(args = [0, 10, 100], sample_count = 100)]
    fn session_start_unchanged(bencher: Bencher, n: usize) {
        let (_dir, mut vault) = vault_with(n);
        let os_user = keyport::osuser::current().unwrap().name;
        let run = |vault: &mut Vault| {
            let (secrets, _) = opened(vault);
            let plan = vault.file_plan("bench", &os_user, &secrets).unwrap();
            let report = files::apply(&plan);
            vault
                .record_files("bench", &os_user, &secrets, &report)
                .unwrap();
            report
        };
        assert_eq!(run(&mut vault).written.len(), n);
        bencher.bench_local(|| {
            let report = run(&mut vault);
            debug_assert_eq!(report.unchanged.len(), n);
            report
        });
    }
}
