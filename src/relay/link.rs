//! A client connection's way to its workspace: the route, looked up once, and the one
//! upstream connection its channels share; and, for each session channel, the upstream
//! channel opened *before* the client's open is answered, so an sshd that refuses a session
//! (`MaxSessions`) refuses the client's too — OpenSSH's mux client then opens a connection of
//! its own, as it does against sshd. Each upstream connection is made known to the live
//! file-secret watcher (`ssh::live`), so a changed file secret is written there at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use russh::{Channel, ChannelOpenFailure};
use serde_json::json;

use super::RelayError;
use super::upstream::{self, Upstream};
use crate::ssh::{LiveUpstream, Login, Rewritten, SshContext};
use crate::vault::{Route, SessionSecrets, SessionUser};

/// A client connection's way to its workspace: the route, once looked up, and the one
/// upstream connection its channels share.
pub struct Link {
    /// What the user typed after `:`.
    pub workspace: String,
    state: tokio::sync::Mutex<Option<Linked>>,
    /// The daemon's tasks: the upstream's end is one of them.
    tasks: tokio_util::task::TaskTracker,
}

struct Linked {
    route: Route,
    upstream: Arc<Upstream>,
}

impl Linked {
    /// Ends the upstream connection (its agent channels and any channel still open there
    /// would otherwise keep it alive), in a task the daemon waits for at shutdown.
    fn disconnect(self, tasks: &tokio_util::task::TaskTracker) {
        tasks.spawn(async move {
            let _ = self
                .upstream
                .handle
                .disconnect(russh::Disconnect::ByApplication, "client left", "en")
                .await;
        });
    }
}

impl Drop for Link {
    /// The client connection is gone: so is its upstream connection.
    fn drop(&mut self) {
        if let Some(linked) = self.state.get_mut().take() {
            linked.disconnect(&self.tasks);
        }
    }
}

impl Link {
    /// A link to `workspace`, not connected yet (the first session channel connects).
    pub fn new(workspace: String, tasks: tokio_util::task::TaskTracker) -> Self {
        Self {
            workspace,
            state: tokio::sync::Mutex::new(None),
            tasks,
        }
    }
}

/// A session channel's upstream side, before the client is answered.
pub enum Opened {
    /// The upstream channel is open.
    Ready(Box<Ready>),
    /// The workspace could not be reached: the client's channel is accepted, to be told why.
    Failed(RelayError),
    /// The workspace's sshd refused the channel: the client's open is refused alike.
    Refused(ChannelOpenFailure),
}

impl Opened {
    /// Closes the upstream channel, if one was opened: a channel dropped unclosed stays open
    /// on the sshd, counted against its `MaxSessions`.
    pub async fn close(self) {
        if let Opened::Ready(ready) = self {
            let _ = ready.channel.close().await;
        }
    }
}

/// An open upstream channel, and what it runs on.
pub struct Ready {
    pub(super) route: Route,
    pub(super) upstream: Arc<Upstream>,
    pub(super) channel: Channel<russh::client::Msg>,
}

/// Connects the link if it is not yet, and opens an upstream session channel.
pub async fn open(ctx: &Arc<SshContext>, login: &Arc<Login>, link: &Link) -> Opened {
    let (route, upstream) = match linked(ctx, login, link).await {
        Ok(linked) => linked,
        Err(e) => return Opened::Failed(e),
    };
    let live = Live {
        upstream: Arc::downgrade(&upstream),
        route: route.clone(),
    };
    let place = (login.user_id, super::files::place(&route));
    ctx.live_files.upstream(place, Arc::new(live));
    match upstream.handle.channel_open_session().await {
        Ok(channel) => Opened::Ready(Box::new(Ready {
            route,
            upstream,
            channel,
        })),
        Err(russh::Error::ChannelOpenFailure(reason)) => Opened::Refused(reason),
        Err(e) => Opened::Failed(RelayError::Other(format!(
            "the workspace's sshd connection was lost: {e}"
        ))),
    }
}

/// The link's route and upstream connection: connects on first use, unless the user's
/// upstream keeps failing lately.
async fn linked(
    ctx: &Arc<SshContext>,
    login: &Arc<Login>,
    link: &Link,
) -> Result<(Route, Arc<Upstream>), RelayError> {
    let mut state = link.state.lock().await;
    // Looked up for every channel (one indexed read): a grant revoked, a workspace removed or
    // re-pinned since the connection's first session counts for its next one.
    // A session a blocking requirement refuses is refused here, before anything upstream
    // (a login, a certificate) happens on its behalf.
    let (user_id, name, user) = (login.user_id, link.workspace.clone(), login.user.clone());
    let groups = crate::ssh::prepare::user_groups(ctx, login).await;
    let found = ctx
        .vault
        .call(move |v| {
            let Some(route) = v.workspace_route(user_id, &name)? else {
                return Ok(None);
            };
            let checks = v.session_checks(&user, Some(&route.workspace), &groups)?;
            Ok(Some((route, checks)))
        })
        .await
        .map_err(|e| RelayError::Other(format!("cannot look up the workspace: {e}")))?;
    if let Some((route, checks)) = &found
        && let Some(reason) = checks.blocked()
    {
        let detail = json!({ "workspace": route.workspace, "missing": checks.blocking() });
        return Err(RelayError::Blocked { reason, detail });
    }
    let route = found.map(|(route, _)| route);
    let Some(route) = route else {
        // Whatever was connected is this user's no longer.
        if let Some(gone) = state.take() {
            gone.disconnect(&ctx.tasks);
        }
        return Err(RelayError::NoWorkspace {
            workspace: link.workspace.clone(),
            user: login.user.clone(),
        });
    };
    if let Some(linked) = state.take() {
        // The same workspace, as it was, over a connection that is still up: reused.
        if linked.route == route && !linked.upstream.handle.is_closed() {
            let upstream = linked.upstream.clone();
            *state = Some(linked);
            return Ok((route, upstream));
        }
        linked.disconnect(&ctx.tasks);
    }
    let relay = &ctx.relay;
    let key = (login.user_id, route.workspace_id);
    if let Some(held) = relay.holds.held(key, &route.host_keys, &relay.settings) {
        return Err(held);
    }
    let who = login.session_user();
    let dial = upstream::Dial {
        vault: &ctx.vault,
        route: &route,
        user: &who,
        timeout: std::time::Duration::from_secs(relay.settings.connect_timeout_secs),
        keepalive: (relay.settings.keepalive_secs > 0)
            .then(|| std::time::Duration::from_secs(relay.settings.keepalive_secs)),
        window: ctx.channel_window,
        tasks: ctx.tasks.clone(),
        ca: &relay.ca,
    };
    let (upstream, announced) = match upstream::connect(dial).await {
        Ok(connected) => connected,
        Err(e) => {
            relay.holds.failed(key, &route.host_keys, &e);
            return Err(e);
        }
    };
    relay.holds.succeeded(key);
    let upstream = Arc::new(upstream);
    ctx.tasks.spawn(upstream::learn_host_keys(
        Arc::downgrade(&upstream),
        announced,
        ctx.vault.clone(),
        route.workspace_id,
    ));
    *state = Some(Linked {
        route: route.clone(),
        upstream: upstream.clone(),
    });
    Ok((route, upstream))
}

/// An upstream connection, as the live file-secret watcher reaches it: held weakly, so the
/// watcher never keeps a connection up.
struct Live {
    upstream: Weak<Upstream>,
    route: Route,
}

impl LiveUpstream for Live {
    fn is_up(&self) -> bool {
        self.upstream
            .upgrade()
            .is_some_and(|upstream| !upstream.handle.is_closed())
    }

    fn id(&self) -> usize {
        self.upstream.as_ptr() as usize
    }

    fn rewrite<'a>(
        &'a self,
        ctx: &'a Arc<SshContext>,
        who: &'a SessionUser,
        secrets: &'a SessionSecrets,
    ) -> Pin<Box<dyn Future<Output = Rewritten> + Send + 'a>> {
        Box::pin(async move {
            let upstream = self.upstream.upgrade()?;
            super::files::rewrite(ctx, &upstream, &self.route, who, secrets)
                .await
                .1
        })
    }
}
