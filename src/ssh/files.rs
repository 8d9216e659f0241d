//! Materialising a user's file secrets before a session's program starts (and for the
//! workspace owner at daemon start): the plan comes from the vault, is applied with the OS
//! user's own permissions — directly when the daemon already is that user, else on a thread
//! that takes on the user's filesystem identity — and the outcome goes to the ledger.
//!
//! Most sessions change nothing: when every wanted file still has the content, and the exact
//! inode, size and times, that the last complete pass for this user left, the pass is skipped
//! ([`Applied`]). Any change to a file (even `touch` or `chmod`) moves its ctime, and any
//! change of a secret changes what is wanted; either brings the full pass back.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use super::SshContext;
use super::process::Identity;
use crate::secrets::files::{self, Delivery};
use crate::vault::{SessionSecrets, SessionUser};

/// Writes `user`'s file secrets and removes the ones no longer wanted. Failures are logged,
/// audited and recorded as the secret's delivery; they do not stop the session. Returns what
/// the user should be told.
pub async fn materialize(
    ctx: &Arc<SshContext>,
    identity: &Identity,
    who: &SessionUser,
    secrets: Arc<SessionSecrets>,
) -> Delivery {
    let user = who.name.as_str();
    let os_user = identity.os.name.clone();
    // By id: a later user given a removed user's name starts with nothing remembered.
    let key = (who.id, os_user.clone());
    let wanted_now = wanted(&secrets);
    if !wanted_now.is_empty() && ctx.applied.unchanged(&key, &wanted_now) {
        return Delivery::default();
    }
    ctx.applied.forget(&key);
    let (name, os, wanted) = (user.to_string(), os_user.clone(), secrets.clone());
    let plan = match ctx
        .vault
        .call(move |v| v.file_plan(&name, &os, &wanted))
        .await
    {
        Ok(plan) if plan.write.is_empty() && plan.remove.is_empty() => {
            ctx.applied.remember(key, &wanted_now);
            return Delivery::default();
        }
        Ok(plan) => plan,
        Err(e) => {
            warn!(user, error = %e, "cannot plan file secrets");
            return Delivery::default();
        }
    };
    let switch = identity.switch.clone();
    let report = tokio::task::spawn_blocking(move || match switch {
        None => Some(files::apply(&plan)),
        Some(switch) => switch.run_as(move || files::apply(&plan)).ok(),
    })
    .await
    .ok()
    .flatten();
    let Some(report) = report else {
        warn!(user, "file secrets were not applied");
        return Delivery::default();
    };
    for (path, why) in &report.failed {
        warn!(user, path, error = %why, "file secret not written");
    }
    if !report.kept_changed.is_empty() {
        debug!(
            user,
            files = report.kept_changed.len(),
            "left files the user changed"
        );
    }
    let delivery = Delivery::of(&report, &secrets.files);
    // Only a pass that did everything it planned may be skipped next time.
    let clean = report.failed.is_empty() && report.kept_changed.is_empty();
    let name = user.to_string();
    let report = Arc::new(report);
    let result = ctx
        .vault
        .call(move |v| v.record_files(&name, &os_user, &secrets, &report))
        .await;
    match result {
        Err(e) => warn!(user, error = %e, "cannot record written files"),
        Ok(()) if clean => ctx.applied.remember(key, &wanted_now),
        Ok(()) => {}
    }
    delivery
}

/// Each wanted file's path and content hash, sorted.
fn wanted(secrets: &SessionSecrets) -> Vec<(String, String)> {
    let mut wanted: Vec<_> = secrets
        .files
        .iter()
        .map(|(_, path, value)| (path.clone(), files::sha256_hex(value.expose())))
        .collect();
    wanted.sort();
    wanted
}

/// A file's identity and times, as `lstat` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// `path`'s stamp, if it is a regular file (never following a link).
    fn of(path: &str) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.file_type().is_file().then(|| Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// (keyport user id, OS user).
type Owner = (i64, String);
/// A file as a pass left it: path, content hash, stamp.
type Left = (String, String, Stamp);

/// What the last complete, clean pass left, per (keyport user id, OS user).
#[derive(Debug, Default)]
pub struct Applied(Mutex<HashMap<Owner, Vec<Left>>>);

impl Applied {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, Vec<Left>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `wanted` is what the last pass for `key` wrote, and every file is still as it
    /// left it.
    fn unchanged(&self, key: &Owner, wanted: &[(String, String)]) -> bool {
        let map = self.lock();
        let Some(last) = map.get(key) else {
            return false;
        };
        last.len() == wanted.len()
            && last
                .iter()
                .zip(wanted)
                .all(|((path, hash, stamp), (want_path, want_hash))| {
                    path == want_path
                        && hash == want_hash
                        && Stamp::of(path).as_ref() == Some(stamp)
                })
    }

    fn remember(&self, key: Owner, wanted: &[(String, String)]) {
        let stamps: Option<Vec<_>> = wanted
            .iter()
            .map(|(path, hash)| Stamp::of(path).map(|s| (path.clone(), hash.clone(), s)))
            .collect();
        if let Some(stamps) = stamps {
            self.lock().insert(key, stamps);
        }
    }

    fn forget(&self, key: &Owner) {
        self.lock().remove(key);
    }
}

/// At daemon start: writes the workspace owner's file secrets, so they are in place before
/// anyone logs in (the incumbent races its first session here).
pub async fn materialize_owner(ctx: Arc<SshContext>, owner: String) {
    let name = owner.clone();
    let found = ctx
        .vault
        .call(move |v| Ok((v.user(&name)?, v.session_secrets(&name)?.0)))
        .await;
    let (record, secrets) = match found {
        Ok(found) => found,
        Err(e) => {
            debug!(owner, error = %e, "no file secrets written at start");
            return;
        }
    };
    match super::process::identity(&record.os_user) {
        Ok(identity) => {
            let who = SessionUser {
                id: record.id,
                name: owner.clone(),
            };
            let _ = materialize(&ctx, &identity, &who, Arc::new(secrets)).await;
        }
        Err(e) => warn!(owner, error = %e, "cannot write the owner's file secrets"),
    }
}
