//! Relay mode: `ssh alice:dev1@gateway` reaches workspace `dev1`'s own sshd through keyport,
//! with alice's env and file secrets and her in-memory key carried upstream.
//!
//! # Layout
//! - `scan.rs`: reading a workspace's host key once, for an admin to pin.

pub mod scan;
