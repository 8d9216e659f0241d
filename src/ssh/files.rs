//! Materialising a user's file secrets before a session's program starts (and for the
//! workspace owner at daemon start): the plan comes from the vault, is applied with the OS
//! user's own permissions — directly when the daemon already is that user, else on a thread
//! that takes on the user's filesystem identity — and the outcome goes to the ledger.

use std::sync::Arc;

use tracing::{debug, warn};

use super::SshContext;
use super::process::Identity;
use crate::secrets::files;
use crate::vault::SessionSecrets;

/// Writes `user`'s file secrets and removes the ones no longer wanted. Failures are logged
/// and audited; they do not stop the session.
pub async fn materialize(
    ctx: &Arc<SshContext>,
    identity: &Identity,
    user: &str,
    secrets: Arc<SessionSecrets>,
) {
    let os_user = identity.os.name.clone();
    let (name, os, wanted) = (user.to_string(), os_user.clone(), secrets.clone());
    let plan = match ctx
        .vault
        .call(move |v| v.file_plan(&name, &os, &wanted))
        .await
    {
        Ok(plan) if plan.write.is_empty() && plan.remove.is_empty() => return,
        Ok(plan) => plan,
        Err(e) => {
            warn!(user, error = %e, "cannot plan file secrets");
            return;
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
        return;
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
    let name = user.to_string();
    let report = Arc::new(report);
    let result = ctx
        .vault
        .call(move |v| v.record_files(&name, &os_user, &secrets, &report))
        .await;
    if let Err(e) = result {
        warn!(user, error = %e, "cannot record written files");
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
        Ok(identity) => materialize(&ctx, &identity, &owner, Arc::new(secrets)).await,
        Err(e) => warn!(owner, error = %e, "cannot write the owner's file secrets"),
    }
}
