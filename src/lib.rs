//! keyport: an SSH server that injects each user's secrets into every new session and serves a
//! per-user key pair from memory, with its metadata in SQLite and values sealed at rest.
//!
//! # Layout
//! - [`config`]: settings (defaults < file < env < flags) and `config print-default`.
//! - [`datadir`]: the data dir and keyport's private files (0700 / 0600, atomic writes).
//! - [`keyring`]: where the master key comes from; crash-safe rotation files.
//! - [`store`]: the SQLite store behind one narrow interface; migrations.
//! - [`secrets`]: secret specs, patches, metadata, and the validation rules.
//! - [`ssh`]: the SSH server: logins, session channels, processes with secrets injected.
//! - [`relay`]: relay mode: `user:workspace` sessions run on the workspace's own sshd.
//! - [`agent`]: the in-memory ssh-agent behind each session's `SSH_AUTH_SOCK`.
//! - [`metrics`]: daemon-wide counters.
//! - [`shared`]: the daemon's one vault, shared by its listeners.
//! - [`sources`]: external sources: references resolved at session start (Vault/OpenBao,
//!   exec providers), their cache and leases.
//! - [`vault`]: the operations (users, keys, secrets, tokens, workspaces, rotation) with rules
//!   and audit.
//! - [`api`]: the HTTP API (axum), its auth rules and its OpenAPI document.
//! - [`web`]: the web pages (server-rendered, on the API listener) and signing in to them.
//! - [`when`]: times as shown and read: RFC 3339, ages, `since` filters.
//! - [`client`]: the CLI's HTTP client for the API.
//! - [`bootstrap`]: what `keyport serve` does on start-up (host key, first admin user).
//! - [`osuser`]: OS account lookups.
//! - [`cli`]: the command line: one module per subcommand group, and the exit codes.
//! - `testing`: support for keyport's own tests (root-only tests never pass silently).
//!
//! Key custody (generation, sealing, fingerprints) lives in the `keyport-keys` crate.

pub mod accept;
pub mod agent;
pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod config;
pub mod datadir;
pub mod keyring;
pub mod metrics;
pub mod osuser;
pub mod relay;
pub mod secrets;
pub mod shared;
pub mod sources;
pub mod ssh;
pub mod store;
pub mod tap;
#[doc(hidden)]
pub mod testing;
pub mod vault;
pub mod web;
pub mod when;
