//! The russh `Handler`, kept thin: it authenticates, accepts session channels and hands each
//! to its own task, and replies to channel requests inside the callback (russh keeps one
//! want-reply flag per channel, so a deferred reply could answer a later request). The
//! requests themselves reach the channel task through its `Channel`, which that task owns
//! and drains; the few russh does not parse (`break`, `eow@openssh.com`) through a
//! [`Control`] queue.
//!
//! Every request gets sshd's answer (session.c, serverloop.c): a session channel takes a
//! pty, env and agent requests and one program, and after the program only window changes,
//! signals, breaks and end-of-write; X11 forwarding is off; `no-more-sessions@openssh.com`
//! ends the connection at the next session channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Disconnect};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::SshContext;
use super::channel::{self, Control, Login};
use super::forward::Forwards;
use crate::secrets::env::client_env_accepted;

/// One SSH connection.
pub struct Connection {
    ctx: Arc<SshContext>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    id: u64,
    login: Option<Arc<Login>>,
    rejected_offers: u32,
    tried_user: Option<String>,
    /// Until login: the connection's place at the gate, and the flag its task watches.
    pre_auth: Option<PreAuth>,
    /// Cuts the connection's stream.
    cut: tokio_util::sync::CancellationToken,
    channels: HashMap<ChannelId, SessionChannel>,
    no_more_sessions: bool,
    forwards: Forwards,
    /// The workspace a `user:workspace` login relays to (`crate::relay`).
    link: Option<Arc<crate::relay::Link>>,
}

/// `alice:dev1` → (`alice`, `Some("dev1")`): warpgate's user:target convention.
fn split_login(user: &str) -> (&str, Option<&str>) {
    match user.split_once(':') {
        Some((name, workspace)) => (name, Some(workspace)),
        None => (user, None),
    }
}

/// What the handler knows of one session channel, to answer its requests as sshd does.
struct SessionChannel {
    pty: bool,
    /// A program (shell, exec, subsystem) was accepted: the channel is no longer "larval".
    started: bool,
    /// The program runs on the pty (a subsystem never does): `break` has a line to break.
    terminal: bool,
    /// Client env requests accepted so far (at most [`channel::MAX_CLIENT_ENV`]), and their
    /// bytes (at most `[ssh] client_env_bytes`).
    env: usize,
    env_bytes: usize,
    control: mpsc::Sender<Control>,
}

/// What a connection holds until it logs in (see `listen.rs`).
pub struct PreAuth {
    /// Its place among unauthenticated connections.
    pub ticket: super::gate::Ticket,
    /// Set once logged in: the login grace time no longer applies.
    pub authenticated: Arc<std::sync::atomic::AtomicBool>,
    /// Cuts the connection's stream (kept after login, for revocation).
    pub cut: tokio_util::sync::CancellationToken,
}

/// How many handler-only requests may wait for a channel's task.
const CONTROL_QUEUE: usize = 8;

impl Connection {
    /// A connection from `peer`.
    pub fn new(
        ctx: Arc<SshContext>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        id: u64,
        pre_auth: PreAuth,
    ) -> Self {
        let forwards = Forwards::new(&ctx);
        Self {
            ctx,
            peer,
            local,
            id,
            login: None,
            rejected_offers: 0,
            tried_user: None,
            cut: pre_auth.cut.clone(),
            pre_auth: Some(pre_auth),
            channels: HashMap::new(),
            no_more_sessions: false,
            forwards,
            link: None,
        }
    }

    /// Whether `channel` is a session channel still taking set-up requests (sshd answers
    /// pty, env, x11 and agent requests only before the program starts).
    fn larval(&self, channel: ChannelId) -> bool {
        self.channels.get(&channel).is_some_and(|c| !c.started)
    }

    /// Marks the program on `channel` started, if it was not: a second program is refused.
    fn start(&mut self, channel: ChannelId, on_pty: bool) -> bool {
        match self.channels.get_mut(&channel) {
            Some(c) if !c.started => {
                c.started = true;
                c.terminal = c.pty && on_pty;
                true
            }
            _ => false,
        }
    }

    fn reply(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// Whether `key` logs `user` in; unknown users and keys look the same.
    async fn check(
        &mut self,
        user: &str,
        key: &russh::keys::PublicKey,
    ) -> Option<crate::store::UserRecord> {
        if self.ctx.failed.blocked(self.peer.ip(), user) {
            return None;
        }
        let (name, key) = (user.to_string(), key.clone());
        self.ctx
            .vault
            .call(move |v| v.login(&name, &key))
            .await
            .ok()
            .flatten()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let (user, _) = split_login(user);
        self.tried_user = Some(user.to_string());
        if self.check(user, offer.public_key).await.is_some() {
            Ok(Auth::Accept)
        } else {
            self.rejected_offers += 1;
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let (user, workspace) = split_login(user);
        let Some(record) = self.check(user, key.public_key).await else {
            self.rejected_offers += 1;
            return Ok(Auth::reject());
        };
        let live = super::logins::Live {
            user: record.name.clone(),
            user_id: record.id,
            key: key.public_key.clone(),
            relayed: workspace.is_some(),
            handle: None,
            cut: self.cut.clone(),
        };
        if !self
            .ctx
            .live
            .reserve(self.id, live, self.ctx.max_connections_per_user)
        {
            // Not a failure of the key: not counted against the address.
            info!(connection = self.id, user = %record.name, "login refused: too many connections for the user");
            return Ok(Auth::reject());
        }
        info!(connection = self.id, user = %record.name, source = %self.peer, "ssh login");
        // Once, here (the password database may be remote): later callbacks must not wait on it.
        let os_user = record.os_user.clone();
        let root_session = tokio::task::spawn_blocking(move || {
            super::process::identity(&os_user).is_ok_and(|i| i.os.uid == 0)
        })
        .await
        .unwrap_or(false);
        // Whether the workspace exists and is theirs is told at the first session: a login
        // is about the key, and an unknown workspace must look like one they may not use.
        self.link = workspace.map(|w| {
            Arc::new(crate::relay::Link::new(
                w.to_string(),
                self.ctx.tasks.clone(),
            ))
        });
        self.login = Some(Arc::new(Login {
            user: record.name,
            user_id: record.id,
            os_user: record.os_user,
            root_session,
            peer: self.peer,
            local: self.local,
        }));
        Ok(Auth::Accept)
    }

    /// Logged in: the place at the gate is given back, and the login is registered (for the
    /// per-user cap and for revocation).
    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(pre) = self.pre_auth.take() {
            pre.authenticated
                .store(true, std::sync::atomic::Ordering::Release);
            drop(pre.ticket);
        }
        self.ctx.live.set_handle(self.id, session.handle());
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(login) = self.login.clone() else {
            return Ok(()); // dropping `reply` refuses the channel
        };
        // A relayed channel whose upstream open was refused never ran: it does not count.
        self.channels.retain(|_, c| !c.control.is_closed());
        if self.channels.len() >= self.ctx.max_sessions {
            // sshd's MaxSessions: the open is refused, the connection goes on.
            debug!(
                connection = self.id,
                "session channel refused: max_sessions open"
            );
            return Ok(());
        }
        if self.no_more_sessions {
            // As sshd (serverloop.c): the client promised not to open another.
            session.disconnect(
                Disconnect::ByApplication,
                "Possible attack: attempt to open a session after additional sessions disabled",
                "en",
            )?;
            return Ok(());
        }
        let id = channel.id();
        let (control, requests) = mpsc::channel(CONTROL_QUEUE);
        self.channels.insert(
            id,
            SessionChannel {
                pty: false,
                started: false,
                terminal: false,
                env: 0,
                env_bytes: 0,
                control,
            },
        );
        let handle = session.handle();
        let ctx = self.ctx.clone();
        let Some(link) = self.link.clone() else {
            reply.accept().await;
            self.ctx
                .tasks
                .spawn(channel::run(channel, handle, ctx, login, requests, None));
            return Ok(());
        };
        // The upstream channel first (in the channel's task: the callback must not wait on
        // the network); the client's open is answered as the workspace's sshd answered.
        self.ctx.tasks.spawn(async move {
            let opened = crate::relay::open(&ctx, &login, &link).await;
            if let crate::relay::Opened::Refused(reason) = opened {
                debug!(user = %login.user, workspace = %link.workspace, ?reason, "the workspace refused a session channel");
                reply.reject(reason).await;
                return;
            }
            reply.accept().await;
            channel::run(channel, handle, ctx, login, requests, Some((link, opened))).await;
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A relayed login's forwards would belong on its workspace: not offered (yet).
        let Some(login) = self.login.clone().filter(|_| self.link.is_none()) else {
            return Ok(());
        };
        let origin = format!("{originator_address}:{originator_port}");
        super::forward::open_local(
            &self.ctx,
            login,
            channel,
            reply,
            host_to_connect,
            port_to_connect,
            origin,
            &self.forwards.stop,
        );
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(login) = self.login.clone().filter(|_| self.link.is_none()) else {
            return Ok(false);
        };
        let handle = session.handle();
        Ok(self
            .forwards
            .listen(&self.ctx, login, handle, address, port)
            .await)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.forwards.cancel(address, port))
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // One pty per channel, before its program (sshd: "you already have a pty").
        let ok = match self.channels.get_mut(&channel) {
            Some(c) if !c.started && !c.pty => {
                c.pty = true;
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    /// X11 forwarding is off (sshd's `X11Forwarding no`): refused, so the client's next
    /// request gets its own answer.
    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Self::reply(session, channel, false)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.channels.contains_key(&channel);
        Self::reply(session, channel, ok)
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: russh::Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let running = self.channels.get(&channel).is_some_and(|c| c.started);
        let ok = running && super::process::to_signal(&signal).is_some();
        Self::reply(session, channel, ok)
    }

    /// The requests russh leaves to us (vendor/russh/README.md).
    async fn channel_request(
        &mut self,
        channel: ChannelId,
        request: &str,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(state) = self.channels.get(&channel).filter(|c| c.started) else {
            return Ok(false);
        };
        let control = match request {
            // RFC 4335: a pty gets a line break; sshd refuses it without one.
            "break" if state.terminal && data.len() == 4 => Control::Break,
            "eow@openssh.com" if data.is_empty() => Control::EndOfWrite,
            _ => return Ok(false),
        };
        Ok(state.control.try_send(control).is_ok())
    }

    async fn global_request(
        &mut self,
        request: &str,
        _data: &[u8],
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if request == "no-more-sessions@openssh.com" && self.login.is_some() {
            self.no_more_sessions = true;
            return Ok(true);
        }
        // Anything else (keepalive@openssh.com included) is refused, as sshd does.
        Ok(false)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The same rules the channel task applies when it collects the environment.
        let accepted = client_env_accepted(&self.ctx.accept_env, variable_name, variable_value);
        let bytes = variable_name.len() + variable_value.len();
        let cap = self.ctx.client_env_bytes;
        let ok = match self.channels.get_mut(&channel) {
            Some(c)
                if !c.started
                    && accepted
                    && c.env < channel::MAX_CLIENT_ENV
                    && c.env_bytes + bytes <= cap =>
            {
                c.env += 1;
                c.env_bytes += bytes;
                true
            }
            _ => false,
        };
        Self::reply(session, channel, ok)
    }

    /// `ssh -A`: the channel's session agent will also serve the client's keys.
    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.larval(channel))
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.start(channel, true);
        Self::reply(session, channel, ok)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = self.start(channel, true);
        Self::reply(session, channel, ok)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A workspace's sshd answers for its own subsystems (a refusal there ends the
        // channel with a message).
        let known =
            self.link.is_some() || (name == "sftp" && super::process::sftp_server().is_some());
        let ok = known && self.start(channel, false);
        Self::reply(session, channel, ok)
    }
}

impl Drop for Connection {
    /// A connection that offered keys and never logged in is one failure for its address.
    /// Audited coalesced (`logins.rs`): at most one row per address per window.
    fn drop(&mut self) {
        // Registered at the key check (an accepted key whose login then failed too).
        self.ctx.live.remove(self.id);
        if self.login.is_some() {
            return;
        }
        if self.rejected_offers == 0 {
            return;
        }
        let user = self.tried_user.clone().unwrap_or_default();
        self.ctx
            .metrics
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(connection = self.id, user = %user, source = %self.peer, "ssh login failed");
        let Some(row) = self.ctx.failed.record(self.peer.ip(), &user) else {
            return;
        };
        let ctx = self.ctx.clone();
        self.ctx
            .tasks
            .spawn(async move { super::listen::audit_failure(&ctx, row).await });
    }
}
