//! Materialising a user's file secrets before a session's program starts (and for the
//! workspace owner at daemon start): the plan comes from the vault, is applied with the OS
//! user's own permissions — directly when the daemon already is that user, else on a thread
//! that takes on the user's filesystem identity — and the outcome goes to the ledger.
//!
//! Most sessions change nothing: when every wanted file still has the content, and the exact
//! inode, size and times, that the last complete pass for this user left, the pass is skipped
//! ([`Applied`]). Any change to a file (even `touch` or `chmod`) moves its ctime, and any
//! change of a secret changes what is wanted; either brings the full pass back.
//!
//! Passes for one user and OS account run one at a time (a session start and the live
//! watcher, `live.rs`, may meet), and each tells the watcher which secrets the files now hold.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use super::SshContext;
use super::process::Identity;
use crate::secrets::files::{self, Delivery, Report};
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
    pass(ctx, identity, who, secrets).await.delivery
}

/// What one file-secret pass did.
#[derive(Debug, Default)]
pub(super) struct Pass {
    /// What the session's user should be told.
    pub(super) delivery: Delivery,
    /// What applying the plan did; `None` when there was nothing to do (or it failed).
    pub(super) report: Option<Arc<Report>>,
}

/// [`materialize`], for the session start and the live watcher (`live.rs`) alike: one pass
/// at a time per user and OS account, so the last pass to write is also the last to tell the
/// watcher which secrets the files now hold.
pub(super) async fn pass(
    ctx: &Arc<SshContext>,
    identity: &Identity,
    who: &SessionUser,
    secrets: Arc<SessionSecrets>,
) -> Pass {
    // By id: a later user given a removed user's name starts with nothing remembered.
    let key = (who.id, identity.os.name.clone());
    let _turn = ctx.applied.turn(&key).await;
    let Some(pass) = apply_plan(ctx, identity, who, &key, secrets.clone()).await else {
        return Pass::default();
    };
    ctx.live_files.saw(key, who, &secrets);
    pass
}

/// Plans, applies and records one pass; `None` if it could not be carried out at all.
async fn apply_plan(
    ctx: &Arc<SshContext>,
    identity: &Identity,
    who: &SessionUser,
    key: &Owner,
    secrets: Arc<SessionSecrets>,
) -> Option<Pass> {
    let user = who.name.as_str();
    let os_user = identity.os.name.clone();
    let wanted_now = wanted(&secrets);
    if !wanted_now.is_empty() && ctx.applied.unchanged(key, &wanted_now) {
        return Some(Pass::default());
    }
    ctx.applied.forget(key);
    let (name, os, wanted) = (user.to_string(), os_user.clone(), secrets.clone());
    let plan = match ctx
        .vault
        .call(move |v| v.file_plan(&name, &os, &wanted))
        .await
    {
        Ok(plan) if plan.write.is_empty() && plan.remove.is_empty() => {
            ctx.applied.remember(key.clone(), &wanted_now);
            return Some(Pass::default());
        }
        Ok(plan) => plan,
        Err(e) => {
            warn!(user, error = %e, "cannot plan file secrets");
            return None;
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
        return None;
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
    let recorded = report.clone();
    let result = ctx
        .vault
        .call(move |v| v.record_files(&name, &os_user, &secrets, &recorded))
        .await;
    match result {
        Err(e) => warn!(user, error = %e, "cannot record written files"),
        Ok(()) if clean => ctx.applied.remember(key.clone(), &wanted_now),
        Ok(()) => {}
    }
    Some(Pass {
        delivery,
        report: Some(report),
    })
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
pub(super) type Owner = (i64, String);
/// A file as a pass left it: path, content hash, stamp.
type Left = (String, String, Stamp);

/// What the last complete, clean pass left, per (keyport user id, OS user); and whose pass
/// runs now.
#[derive(Debug, Default)]
pub struct Applied {
    left: Mutex<HashMap<Owner, Vec<Left>>>,
    turns: Mutex<HashMap<Owner, Arc<tokio::sync::Mutex<()>>>>,
}

/// The one pass running for a (keyport user id, place); the next waits for it to end.
pub(crate) struct Turn<'a> {
    applied: &'a Applied,
    key: Owner,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    /// Forgets the lock when no other pass waits for it (the map holds one handle, this
    /// turn the other).
    fn drop(&mut self) {
        let mut turns = super::lock(&self.applied.turns);
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            turns.remove(&self.key);
        }
    }
}

impl Applied {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, Vec<Left>>> {
        super::lock(&self.left)
    }

    /// Waits for `key`'s running pass, if any, to end (a relayed place's too: `relay::files`).
    pub(crate) async fn turn(&self, key: &Owner) -> Turn<'_> {
        let lock = super::lock(&self.turns)
            .entry(key.clone())
            .or_default()
            .clone();
        Turn {
            applied: self,
            key: key.clone(),
            _held: lock.lock_owned().await,
        }
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
    let found = async {
        let record = ctx.vault.call(move |v| v.user(&name)).await?;
        let who = SessionUser {
            id: record.id,
            name: owner.clone(),
        };
        let secrets = ctx.vault.user_secrets(&who).await?;
        Ok::<_, crate::shared::SharedError>((record, who, secrets))
    };
    let (record, who, secrets) = match found.await {
        Ok(found) => found,
        Err(e) => {
            debug!(owner, error = %e, "no file secrets written at start");
            return;
        }
    };
    match super::process::identity(&record.os_user) {
        Ok(identity) => {
            let _ = materialize(&ctx, &identity, &who, Arc::new(secrets)).await;
        }
        Err(e) => warn!(owner, error = %e, "cannot write the owner's file secrets"),
    }
}
