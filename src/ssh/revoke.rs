//! Revocation that reaches live sessions: whenever the vault changed (a user or login key
//! removed — over the API or on the data dir by another process), or logins were registered
//! since the last look, every live connection is checked again against its user and the login
//! key it authenticated with. One that no longer stands is told (the client prints the reason
//! on stderr) and cut two seconds later if the message could not get through (a client that
//! stopped reading); its programs end with their channels. A check that fails (the vault
//! busy) revokes nothing and is tried again. A removed user's written files get the ledger's
//! rules at once: removed if still what keyport wrote, kept and reported if the user changed
//! them; a clean-up that cannot finish is retried at most once a minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::Disconnect;
use tracing::{info, warn};

use super::SshContext;
use crate::vault::{SessionSecrets, SessionUser};

/// How often the vault is looked at for changes.
const POLL: Duration = Duration::from_millis(500);

/// How often a removed user's clean-up that did not finish is tried again.
const CLEANUP_RETRY: Duration = Duration::from_secs(60);

/// Watches the vault until the daemon shuts down.
pub async fn watch(ctx: Arc<SshContext>) {
    let mut seen = None;
    let mut logins_seen = None;
    let mut attempted: HashMap<(String, String), Instant> = HashMap::new();
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
        let Ok(mark) = ctx.vault.call(|v| v.change_mark()).await else {
            continue;
        };
        // A login registered after a change may have been checked before it: look again.
        let logins = ctx.live.generation();
        if seen == Some(mark) && logins_seen == Some(logins) {
            continue;
        }
        if end_revoked(&ctx).await {
            (seen, logins_seen) = (Some(mark), Some(logins));
        }
        clean_removed(&ctx, &mut attempted).await;
    }
}

/// Ends every live connection whose user or login key is gone. False if the vault could not
/// say (nothing was ended then).
async fn end_revoked(ctx: &Arc<SshContext>) -> bool {
    let live = ctx.live.snapshot();
    if live.is_empty() {
        return true;
    }
    let checked = ctx
        .vault
        .call(move |v| {
            let mut revoked = Vec::new();
            for (id, l) in &live {
                if !v.login_stands(&l.user, l.user_id, &l.key)? {
                    revoked.push((*id, l.clone()));
                }
            }
            Ok(revoked)
        })
        .await;
    let Ok(revoked) = checked else {
        return false;
    };
    for (id, login) in revoked {
        info!(connection = id, user = %login.user, "access revoked: ending the connection");
        ctx.live.remove(id);
        ctx.tasks.spawn(async move {
            if let Some(handle) = login.handle {
                let bye = handle.disconnect(
                    Disconnect::ByApplication,
                    "keyport: your access was revoked".into(),
                    "en".into(),
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
            }
            // Told or not (a client that stopped reading never hears it), the connection ends.
            tokio::time::sleep(Duration::from_millis(500)).await;
            login.cut.cancel();
        });
    }
    true
}

/// Applies the ledger's rules to the files of users that were removed (each at most once a
/// minute while it does not finish: a file that cannot be removed stays in the ledger).
async fn clean_removed(ctx: &Arc<SshContext>, attempted: &mut HashMap<(String, String), Instant>) {
    let Ok(orphans) = ctx.vault.call(|v| v.orphaned_files()).await else {
        return;
    };
    attempted.retain(|key, _| orphans.contains(key));
    for (os_user, user) in orphans {
        let key = (os_user.clone(), user.clone());
        if attempted
            .get(&key)
            .is_some_and(|at| at.elapsed() < CLEANUP_RETRY)
        {
            continue;
        }
        attempted.insert(key, Instant::now());
        let account = os_user.clone();
        let identity =
            tokio::task::spawn_blocking(move || super::process::identity(&account)).await;
        let Ok(Ok(identity)) = identity else {
            warn!(
                user,
                os_user, "cannot clean up a removed user's files: no such account"
            );
            continue;
        };
        // Nothing is wanted any more: every file keyport wrote for them is stale.
        let who = SessionUser {
            id: 0,
            name: user.clone(),
        };
        let _ =
            super::files::materialize(ctx, &identity, &who, Arc::new(SessionSecrets::default()))
                .await;
        info!(user, os_user, "removed user's files cleaned up");
    }
}
