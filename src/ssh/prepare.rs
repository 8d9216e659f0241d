//! What a session gets, decided once before its program starts: who runs it, with which
//! environment (the clean base, operator env, accepted client env, the user's secrets as they
//! are now, keyport's own), its file secrets written, its session directory, and the
//! injection audited.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::server::Handle;
use serde_json::json;
use tracing::info;

use super::SshContext;
use super::channel::{Login, PtyRequest};
use super::process::{self, Identity, Program};
use super::sessiondir::SessionDir;
use crate::secrets::env::{EnvInputs, SessionEnv, compose_env};
use crate::shared::SessionStart;
use crate::vault::{Actor, SessionChecks};

/// What the client asked for, once it asked for a program.
pub(super) struct Start<'a> {
    pub(super) session: u64,
    pub(super) program: &'a Program,
    pub(super) pty: Option<&'a PtyRequest>,
    pub(super) client_env: &'a [(String, String)],
    /// The connection, when the client forwarded its agent on this channel.
    pub(super) forward: Option<Handle>,
}

/// Who runs the program, with which environment and session directory; records the
/// injection.
pub(super) async fn prepare(
    ctx: &Arc<SshContext>,
    login: &Login,
    start: Start<'_>,
) -> Result<Prepared, Refused> {
    let Start {
        session,
        program,
        pty,
        client_env,
        forward,
    } = start;
    let identity = process::identity(&login.os_user).map_err(|e| e.to_string())?;
    let started = session_secrets(ctx, login, None, session).await?;
    let (secrets, names, checks) = (started.secrets, started.names, started.checks);
    let kind = match program {
        Program::Shell => "shell",
        Program::Exec(_) => "exec",
        Program::Sftp => "sftp",
    };
    if let Some(reason) = checks.blocked() {
        record_use(
            ctx,
            login,
            "session.blocked",
            blocked_detail(session, kind, &checks),
        );
        return Err(Refused {
            message: reason,
            exit: 1,
        });
    }
    let os = &identity.os;
    let peer = login.peer;
    let local = login.local.unwrap_or(peer);
    let mut base = vec![
        ("HOME".to_string(), os.home.clone()),
        ("USER".into(), os.name.clone()),
        ("LOGNAME".into(), os.name.clone()),
        ("SHELL".into(), process::login_shell(os)),
        ("PATH".into(), process::default_path(os.uid == 0).into()),
        (
            "SSH_CLIENT".into(),
            format!("{} {} {}", peer.ip(), peer.port(), local.port()),
        ),
        (
            "SSH_CONNECTION".into(),
            format!(
                "{} {} {} {}",
                peer.ip(),
                peer.port(),
                local.ip(),
                local.port()
            ),
        ),
    ];
    if let Some(pty) = pty {
        base.push(("TERM".into(), pty.term.clone()));
    }
    let secrets = Arc::new(secrets);
    // Files first: the program may read them as soon as it starts.
    let delivery =
        super::files::materialize(ctx, &identity, &login.session_user(), secrets.clone()).await;
    // Only what reached the session counts as received.
    let failed: Vec<&String> = delivery.failed.iter().map(|(name, _, _)| name).collect();
    let names: Vec<String> = names.into_iter().filter(|n| !failed.contains(&n)).collect();

    // Shells and commands get the key service; sftp-server has no use for it.
    let dir = match program {
        Program::Sftp => None,
        _ => Some(
            SessionDir::create(ctx, &identity, login.session_user(), session, forward)
                .await
                .map_err(|e| format!("cannot create the session directory: {e}"))?,
        ),
    };
    let mut keyport = vec![
        ("KEYPORT_SESSION".into(), session.to_string()),
        ("KEYPORT_USER".into(), login.user.clone()),
    ];
    keyport.extend(dir.iter().flat_map(|d| d.env(&ctx.keyport_binary)));
    let mut env = compose_env(&EnvInputs {
        base,
        operator: Some(&ctx.operator_env),
        client: client_env,
        accept: &ctx.accept_env,
        secrets: &secrets.env,
        keyport,
    });
    // After every level: an operator or client PATH still finds the in-session CLI.
    if let Some(dir) = &dir {
        env.append_path(&dir.bin().display().to_string());
    }
    info!(session, user = %login.user, source = %peer, kind, secrets = names.len(), "session start");
    let detail = json!({
        "session": session, "source": peer.to_string(), "kind": kind,
        "secrets": names, "refused_env": env.refused, "failed_files": failed,
    });
    record_start(ctx, login, "session.start", &names, detail);
    let notices = checks
        .notices()
        .into_iter()
        .chain(delivery.notices())
        .map(|line| format!("keyport: {line}"))
        .collect();
    Ok(Prepared {
        identity,
        env,
        dir,
        notices,
        masked: secrets.masked.clone(),
        hold: started.hold,
    })
}

/// The user's secrets as they are now (references resolved), if the login's user is still
/// the same account (local and relayed sessions alike), with the names of all of them, what
/// the user is to be told (or refused for) before session `session` — relayed to
/// `workspace`, if given — and the leases it holds.
pub(crate) async fn session_secrets(
    ctx: &Arc<SshContext>,
    login: &Login,
    workspace: Option<&str>,
    session: u64,
) -> Result<SessionStart, String> {
    let groups = user_groups(ctx, login).await;
    let mut started = ctx
        .vault
        .session_start(&login.session_user(), workspace, groups, session)
        .await
        .map_err(|e| format!("cannot read your secrets: {e}"))?;
    record_uses(ctx, login, std::mem::take(&mut started.resolutions));
    Ok(started)
}

/// The OS groups of the login's account when a requirement is scoped to groups, looked up
/// off the vault's thread (a directory service may be slow); none otherwise.
pub(crate) async fn user_groups(ctx: &Arc<SshContext>, login: &Login) -> Vec<String> {
    if !ctx.vault.policy().needs_groups() {
        return Vec::new();
    }
    let os_user = login.os_user.clone();
    tokio::task::spawn_blocking(move || {
        crate::osuser::lookup(&os_user)
            .map(|os| crate::osuser::group_names(&os))
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// The audit detail of a session refused for a missing required secret.
pub(crate) fn blocked_detail(
    session: u64,
    kind: &str,
    checks: &SessionChecks,
) -> serde_json::Value {
    json!({ "session": session, "kind": kind, "missing": checks.blocking() })
}

/// Why a session's program was not started, and the exit status the client gets.
#[derive(Debug)]
pub(super) struct Refused {
    /// The line for the client's stderr (after `keyport: `).
    pub(super) message: String,
    /// 1 for a refusal by policy, 127 when the session could not be set up.
    pub(super) exit: u32,
}

impl From<String> for Refused {
    fn from(message: String) -> Self {
        Self { message, exit: 127 }
    }
}

/// Counts and audits a session start (`action`: `session.start`, `relay.start`) with the
/// secret names it received (`detail` says which, and what failed).
pub(crate) fn record_start(
    ctx: &Arc<SshContext>,
    login: &Login,
    action: &'static str,
    received: &[String],
    detail: serde_json::Value,
) {
    if !received.is_empty() {
        ctx.metrics.injections.fetch_add(1, Ordering::Relaxed);
    }
    record_use(ctx, login, action, detail);
}

/// Audits a use by the login's user (`detail`: names, never values), off the session's way.
pub(crate) fn record_use(
    ctx: &Arc<SshContext>,
    login: &Login,
    action: &'static str,
    detail: serde_json::Value,
) {
    record_uses(ctx, login, vec![(action, None, detail)]);
}

/// Audits uses by the login's user, in one transaction, off the session's way.
fn record_uses(ctx: &Arc<SshContext>, login: &Login, uses: Vec<crate::shared::Use>) {
    if uses.is_empty() {
        return;
    }
    let (vault, user) = (ctx.vault.clone(), login.user.clone());
    ctx.tasks.spawn(async move {
        let actor = Actor::User(user.clone());
        let _ = vault
            .call(move |v| v.record_uses(&actor, &user, &uses))
            .await;
    });
}

/// What a session gets, decided before its program starts.
pub(super) struct Prepared {
    pub(super) identity: Identity,
    pub(super) env: SessionEnv,
    /// Lives as long as the session: its sockets go away with it.
    pub(super) dir: Option<SessionDir>,
    /// Told on stderr to interactive (pty) sessions before their program starts.
    pub(super) notices: Vec<String>,
    /// Values a pty session's output shows as `***` (`secrets::mask`), longest first.
    pub(super) masked: Vec<keyport_keys::SecretBytes>,
    /// The leases the session's values came with, held until it ends.
    pub(super) hold: crate::sources::Hold,
}
