//! The russh `Handler`, kept thin: it authenticates, accepts session channels and hands each
//! to its own task, and replies to channel requests inside the callback (russh keeps one
//! want-reply flag per channel, so a deferred reply could answer a later request). The
//! requests themselves reach the channel task through its `Channel`, which that task owns
//! and drains.

use std::net::SocketAddr;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use serde_json::json;
use tracing::{debug, info};

use super::SshContext;
use super::channel::{self, Login};
use crate::secrets::env::client_env_accepted;
use crate::vault::Actor;

/// One SSH connection.
pub struct Connection {
    ctx: Arc<SshContext>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    id: u64,
    login: Option<Arc<Login>>,
    rejected_offers: u32,
    tried_user: Option<String>,
}

impl Connection {
    /// A connection from `peer`.
    pub fn new(ctx: Arc<SshContext>, peer: SocketAddr, local: Option<SocketAddr>, id: u64) -> Self {
        Self {
            ctx,
            peer,
            local,
            id,
            login: None,
            rejected_offers: 0,
            tried_user: None,
        }
    }

    /// Whether `key` logs `user` in; unknown users and keys look the same.
    async fn check(
        &mut self,
        user: &str,
        key: &russh::keys::PublicKey,
    ) -> Option<crate::store::UserRecord> {
        if self.ctx.blocked(self.peer.ip(), user) {
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
        let Some(record) = self.check(user, key.public_key).await else {
            self.rejected_offers += 1;
            return Ok(Auth::reject());
        };
        info!(connection = self.id, user = %record.name, source = %self.peer, "ssh login");
        self.login = Some(Arc::new(Login {
            user: record.name,
            user_id: record.id,
            os_user: record.os_user,
            peer: self.peer,
            local: self.local,
        }));
        Ok(Auth::Accept)
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
        reply.accept().await;
        let handle = session.handle();
        let ctx = self.ctx.clone();
        self.ctx
            .tasks
            .spawn(channel::run(channel, handle, ctx, login));
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
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The same rule the channel task applies when it composes the environment.
        if client_env_accepted(&self.ctx.accept_env, variable_name, variable_value) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    /// `ssh -A`: the channel's session agent will also serve the client's keys.
    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" && super::process::sftp_server().is_some() {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

impl Drop for Connection {
    /// A connection that offered keys and never logged in is one failure for its address.
    fn drop(&mut self) {
        if self.login.is_some() || self.rejected_offers == 0 {
            return;
        }
        let user = self.tried_user.clone().unwrap_or_default();
        self.ctx.record_failure(self.peer.ip(), &user);
        debug!(connection = self.id, user = %user, source = %self.peer, "ssh login failed");
        let (ctx, source, offers) = (
            self.ctx.clone(),
            self.peer.to_string(),
            self.rejected_offers,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let detail = json!({ "source": source, "rejected_keys": offers });
                let _ = ctx
                    .vault
                    .call(move |v| {
                        v.record_use(&Actor::System, &user, "ssh.login-failed", detail.clone())
                    })
                    .await;
            });
        }
    }
}
