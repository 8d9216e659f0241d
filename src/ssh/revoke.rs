//! Revocation that reaches live sessions: whenever the vault changed (a user or login key
//! removed — over the API or on the data dir by another process), every live connection is
//! checked again against its user and the login key it authenticated with; one that no longer
//! logs in is disconnected (the client prints the reason on stderr) and its programs end with
//! their channels. A removed user's written files get the ledger's rules at once: removed if
//! still what keyport wrote, kept and reported if the user changed them.

use std::sync::Arc;
use std::time::Duration;

use russh::Disconnect;
use tracing::{info, warn};

use super::SshContext;
use crate::vault::{SessionSecrets, SessionUser};

/// How often the vault is looked at for changes.
const POLL: Duration = Duration::from_millis(500);

/// Watches the vault until the daemon shuts down.
pub async fn watch(ctx: Arc<SshContext>) {
    let mut seen = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(mark) = ctx.vault.call(|v| v.change_mark()).await else {
            continue;
        };
        if seen == Some(mark) {
            continue;
        }
        seen = Some(mark);
        end_revoked(&ctx).await;
        clean_removed(&ctx).await;
    }
}

/// Disconnects every live connection whose user or login key is gone.
async fn end_revoked(ctx: &Arc<SshContext>) {
    let live = ctx.live.snapshot();
    if live.is_empty() {
        return;
    }
    let checked = ctx
        .vault
        .call(move |v| {
            Ok(live
                .iter()
                .filter(|(_, l)| {
                    // Gone, or a later user of the same name: either way not who logged in.
                    let still = v.login(&l.user, &l.key).ok().flatten();
                    still.is_none_or(|record| record.id != l.user_id)
                })
                .cloned()
                .collect::<Vec<_>>())
        })
        .await;
    let Ok(revoked) = checked else {
        return;
    };
    for (id, login) in revoked {
        info!(connection = id, user = %login.user, "access revoked: ending the connection");
        ctx.live.remove(id);
        let handle = login.handle.clone();
        tokio::spawn(async move {
            let bye = handle.disconnect(
                Disconnect::ByApplication,
                "keyport: your access was revoked".into(),
                "en".into(),
            );
            let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
        });
    }
}

/// Applies the ledger's rules to the files of users that were removed.
async fn clean_removed(ctx: &Arc<SshContext>) {
    let Ok(orphans) = ctx.vault.call(|v| v.orphaned_files()).await else {
        return;
    };
    for (os_user, user) in orphans {
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
