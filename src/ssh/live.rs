//! Live file secrets: a change to a user's file secrets — one created, updated (value, path,
//! enabled) or deleted, over the API or on the data dir by another process — reaches every
//! place where the user has a live session within a second, with no new session: each OS
//! account where one of their local connections runs, and each workspace login a relayed
//! connection of theirs is connected to. The pass is the one a session start runs
//! (`files.rs`, `relay::files`): the ledger's rules (a file no secret wants any more removed
//! if unchanged, kept and audited as `file.kept-changed` if the user edited it; an edited file
//! about to be replaced saved beside it first), the deliveries, the `file.*` audit events, and
//! one `files.refresh` event naming the user, the place and the secrets written, removed or
//! kept — never a value. Environment variables cannot follow: a running program keeps the
//! environment it started with.
//!
//! Noticing a change costs a user nothing unless something happened to them:
//! - every 250 ms the vault's change mark (the last audit id) is read; when it moved, the
//!   users the new audit events name are the ones looked at — every change to a user's
//!   secrets is audited under their name, in the change's own transaction;
//! - for each place of theirs a pass ran at (a session start's, or this watcher's), the file
//!   secrets as they are now are compared with those that pass applied ([`Seen`]: names,
//!   paths and value hashes); only a difference runs a pass. Env secrets, descriptions and
//!   other users' changes never touch the files; a place is forgotten when its last live
//!   connection ends, so nothing is written where no session lives (the next session's pass
//!   writes it, as before).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::SshContext;
use super::files::Owner;
use crate::secrets::files::Report;
use crate::vault::{Actor, SessionSecrets, SessionUser};

/// How often the change mark is read: a change is applied within this and one pass.
const POLL: Duration = Duration::from_millis(250);

/// Passes tried again (the vault busy, say) at most this many times in a row.
const RETRIES: u32 = 8;

/// A digest of a user's file secrets: each one's name, paths and value hash.
type Digest32 = [u8; 32];

/// What the pass at each place last applied, per (keyport user id, place): an OS account's
/// name, or a workspace login's ledger place (`workspace:…`).
#[derive(Default)]
pub struct Seen {
    places: Mutex<HashMap<Owner, Place>>,
    /// Relayed connections' upstreams, per place (several connections may share one).
    upstreams: Mutex<HashMap<Owner, Vec<Arc<dyn LiveUpstream>>>>,
    /// Counts every pass recorded, so the watcher looks at places it has not seen yet.
    seq: AtomicU64,
}

struct Place {
    who: SessionUser,
    files: Digest32,
    relayed: bool,
    seq: u64,
}

/// What a pass on a workspace did, if it applied anything: the report, and the file secrets
/// with their paths as resolved there.
pub type Rewritten = Option<(Arc<Report>, Arc<SessionSecrets>)>;

/// A relayed connection's workspace, where its user's files can be written again.
pub trait LiveUpstream: Send + Sync {
    /// Whether the connection to the workspace is still up.
    fn is_up(&self) -> bool;
    /// Tells two registrations of the same upstream connection apart from others.
    fn id(&self) -> usize;
    /// Writes `who`'s file secrets there again, with the rules of a relayed session's start;
    /// `None` if nothing could be written.
    fn rewrite<'a>(
        &'a self,
        ctx: &'a Arc<SshContext>,
        who: &'a SessionUser,
        secrets: &'a SessionSecrets,
    ) -> Pin<Box<dyn Future<Output = Rewritten> + Send + 'a>>;
}

impl Seen {
    /// A local pass for `who` at OS account `key.1` applied `secrets`' files.
    pub(super) fn saw(&self, key: Owner, who: &SessionUser, secrets: &SessionSecrets) {
        self.record(key, who, secrets, false);
    }

    /// A relayed session's pass for `who` at workspace place `key.1` applied `secrets`' files.
    pub fn saw_relayed(&self, key: Owner, who: &SessionUser, secrets: &SessionSecrets) {
        self.record(key, who, secrets, true);
    }

    /// A relayed connection reached `key`'s place through `upstream`.
    pub fn upstream(&self, key: Owner, upstream: Arc<dyn LiveUpstream>) {
        let mut upstreams = super::lock(&self.upstreams);
        let known = upstreams.entry(key).or_default();
        known.retain(|u| u.is_up());
        if !known.iter().any(|u| u.id() == upstream.id()) {
            known.push(upstream);
        }
    }

    fn record(&self, key: Owner, who: &SessionUser, secrets: &SessionSecrets, relayed: bool) {
        let files = digest(secrets);
        // Counted and inserted under one lock: a look that read the count sees the place.
        let mut places = super::lock(&self.places);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let place = Place {
            who: who.clone(),
            files,
            relayed,
            seq,
        };
        places.insert(key, place);
    }

    fn seq(&self) -> u64 {
        let _places = super::lock(&self.places);
        self.seq.load(Ordering::Relaxed)
    }

    /// Forgets the places with no live connection any more (but none recorded after `upto`),
    /// and returns those to look at: places of `users`, places recorded after `since`, and
    /// `retry`.
    fn due(&self, local: &HashSet<i64>, look: &Look<'_>) -> Vec<Due> {
        let mut upstreams = super::lock(&self.upstreams);
        upstreams.retain(|_, known| {
            known.retain(|u| u.is_up());
            !known.is_empty()
        });
        let mut places = super::lock(&self.places);
        let live = |key: &Owner, place: &Place| {
            if place.relayed {
                upstreams.contains_key(key)
            } else {
                local.contains(&place.who.id)
            }
        };
        places.retain(|key, place| place.seq > look.upto || live(key, place));
        places
            .iter()
            .filter(|(key, place)| {
                live(key, place)
                    && (place.seq > look.since
                        || look.users.contains(&place.who.name)
                        || look.retry.contains_key(key))
            })
            .map(|(key, place)| Due {
                key: key.clone(),
                who: place.who.clone(),
                files: place.files,
                upstream: upstreams.get(key).and_then(|known| known.first().cloned()),
            })
            .collect()
    }

    /// What the last pass at `key` applied.
    fn files(&self, key: &Owner) -> Option<Digest32> {
        super::lock(&self.places).get(key).map(|p| p.files)
    }
}

/// What one look at the places goes by.
struct Look<'a> {
    /// Passes recorded up to here were counted before the live connections were listed.
    upto: u64,
    /// Passes recorded after this one are new since the last look.
    since: u64,
    /// Users the audit log named since the last look.
    users: &'a BTreeSet<String>,
    /// Places whose look failed last time, with the attempts so far.
    retry: &'a HashMap<Owner, u32>,
}

/// A place to look at.
struct Due {
    key: Owner,
    who: SessionUser,
    files: Digest32,
    /// A relayed place's connection to its workspace.
    upstream: Option<Arc<dyn LiveUpstream>>,
}

/// The digest of `secrets`' file secrets: names, paths as set and resolved, value hashes.
fn digest(secrets: &SessionSecrets) -> Digest32 {
    let mut items: Vec<[Vec<u8>; 4]> = secrets
        .files
        .iter()
        .enumerate()
        .map(|(i, (name, path, value))| {
            let typed = secrets.file_paths.get(i).map_or("", String::as_str);
            [
                name.as_bytes().to_vec(),
                path.as_bytes().to_vec(),
                typed.as_bytes().to_vec(),
                Sha256::digest(value.expose()).to_vec(),
            ]
        })
        .collect();
    items.sort();
    let mut sha = Sha256::new();
    for field in items.iter().flatten() {
        sha.update((field.len() as u64).to_be_bytes());
        sha.update(field);
    }
    sha.finalize().into()
}

/// Applies changed file secrets to live sessions until the daemon shuts down.
pub async fn watch(ctx: Arc<SshContext>) {
    let mut after: Option<i64> = None;
    let mut since = 0;
    let mut retry: HashMap<Owner, u32> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Another replica's change, announced: look now rather than at the next tick.
    let mut changes = ctx.vault.changes();
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Ok(()) = changes.changed() => {}
        }
        // Read before the live connections are listed: a pass recorded later is kept.
        let upto = ctx.live_files.seq();
        let Ok(mark) = ctx.vault.call(|v| v.change_mark()).await else {
            continue;
        };
        let from = *after.get_or_insert(mark);
        if mark == from && upto == since && retry.is_empty() {
            continue;
        }
        let users = if mark > from {
            match ctx.vault.call(move |v| v.users_audited(from, mark)).await {
                Ok(users) => users,
                Err(_) => continue,
            }
        } else {
            BTreeSet::new()
        };
        let local: HashSet<i64> = ctx
            .live
            .snapshot()
            .into_iter()
            .filter(|(_, live)| !live.relayed)
            .map(|(_, live)| live.user_id)
            .collect();
        let look = Look {
            upto,
            since,
            users: &users,
            retry: &retry,
        };
        let due = ctx.live_files.due(&local, &look);
        (after, since) = (Some(mark), upto);
        let mut passes = tokio::task::JoinSet::new();
        for place in due {
            passes.spawn(refresh(ctx.clone(), place));
        }
        let mut failed = HashMap::new();
        while let Some(done) = passes.join_next().await {
            let Ok(Err(key)) = done else {
                continue;
            };
            let attempts = retry.get(&key).copied().unwrap_or(0) + 1;
            if attempts < RETRIES {
                failed.insert(key, attempts);
            } else {
                let (user_id, place) = (key.0, key.1);
                warn!(
                    user_id,
                    place, "live file secrets: given up until the next change"
                );
            }
        }
        retry = failed;
    }
}

/// Looks at one place: a pass if the user's file secrets differ from what the last pass
/// there applied. `Err` if it should be tried again.
async fn refresh(ctx: Arc<SshContext>, due: Due) -> Result<(), Owner> {
    let secrets = ctx.vault.user_secrets(&due.who).await;
    // A removed user's connections are being ended (`revoke.rs`): tried until they are.
    let Ok(secrets) = secrets else {
        return Err(due.key);
    };
    let now = digest(&secrets);
    if now == due.files {
        return Ok(());
    }
    let (user, place) = (due.who.name.clone(), due.key.1.clone());
    // Before the pass: it forgets what it removes.
    let Ok(written) = ctx
        .vault
        .call(move |v| v.written_files(&user, &place))
        .await
    else {
        return Err(due.key);
    };
    let secrets = Arc::new(secrets);
    let done = match &due.upstream {
        Some(upstream) => upstream.rewrite(&ctx, &due.who, &secrets).await,
        None => {
            let account = due.key.1.clone();
            let identity =
                tokio::task::spawn_blocking(move || super::process::identity(&account)).await;
            let Ok(Ok(identity)) = identity else {
                let (user, os_user) = (&due.who.name, &due.key.1);
                warn!(user, os_user, "live file secrets: no such account");
                return Ok(());
            };
            let pass = super::files::pass(&ctx, &identity, &due.who, secrets.clone()).await;
            pass.report.map(|report| (report, secrets))
        }
    };
    if let Some((report, placed)) = done {
        audit(&ctx, &due, &placed, &written, &report).await;
    }
    // Not recorded (the plan could not be made, the account not entered): again next time.
    if ctx.live_files.files(&due.key) != Some(now) {
        return Err(due.key);
    }
    Ok(())
}

/// Audits a pass that did something as `files.refresh`: the secrets' names (`placed`: the file
/// secrets with their paths where the pass wrote them), never a value.
async fn audit(
    ctx: &Arc<SshContext>,
    due: &Due,
    placed: &SessionSecrets,
    written_before: &BTreeMap<String, String>,
    report: &Report,
) {
    let name_of = |path: &String| {
        placed
            .files
            .iter()
            .find(|(_, p, _)| p == path)
            .map(|(name, _, _)| name.clone())
            .or_else(|| written_before.get(path).cloned())
            .unwrap_or_else(|| path.clone())
    };
    let names = |paths: Vec<&String>| -> Vec<String> { paths.into_iter().map(name_of).collect() };
    let written = names(report.written.iter().map(|(p, _)| p).collect());
    let removed = names(report.removed.iter().collect());
    let kept = names(report.kept_changed.iter().collect());
    let saved = names(report.saved.iter().map(|(p, _)| p).collect());
    let failed = names(report.failed.iter().map(|(p, _)| p).collect());
    if written.is_empty() && removed.is_empty() && kept.is_empty() && failed.is_empty() {
        return;
    }
    info!(
        user = %due.who.name,
        place = %due.key.1,
        written = written.len(),
        removed = removed.len(),
        "file secrets refreshed in live sessions"
    );
    let mut detail = json!({
        "written": written,
        "removed": removed,
        "kept_changed": kept,
        "saved_edits": saved,
        "failed": failed,
    });
    // Where, as the deliveries name it: an OS account here, a workspace login's place there.
    let at = if due.upstream.is_some() {
        "place"
    } else {
        "os_user"
    };
    detail[at] = json!(due.key.1);
    let user = due.who.name.clone();
    let recorded = ctx
        .vault
        .call(move |v| v.record_use(&Actor::System, &user, "files.refresh", detail.clone()))
        .await;
    if let Err(e) = recorded {
        warn!(user = %due.who.name, error = %e, "cannot audit a live file pass");
    }
}
