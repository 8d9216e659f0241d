//! One relayed session channel: the client's channel on keyport, one channel on the
//! workspace's sshd, 1:1.
//!
//! Set-up, before the program: the user's secrets as they are now, file secrets written
//! upstream (`files.rs`), then on the upstream channel the session env as `env` requests,
//! the pty, agent forwarding and the program — all with want-reply, pipelined: OpenSSH
//! answers a channel's requests in order, so the replies are counted back in order
//! (notes/relay.md §1.6) and every env name the sshd refused is told to the client with the
//! `AcceptEnv` line that would admit it.
//!
//! Then two pumps, one per direction, each taking one message and awaiting its delivery on
//! the other leg before taking the next: with both legs' windows gated on consumption
//! (vendor/russh/README.md), a slow reader on either side slows the sender through the SSH
//! windows, and nothing waits in keyport but the one message in hand.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use keyport_keys::SecretBytes;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::RelayError;
use super::link::{Link, Opened, Ready};
use super::upstream::Upstream;
use crate::agent::{SessionAgent, SignLimit};
use crate::secrets::env::{EnvInputs, compose_env};
use crate::secrets::mask::Masker;
use crate::sources::Hold;
use crate::ssh::{Asked, Control, Login, PtyRequest, SshContext, prepare};
use crate::vault::Route;

/// A session channel whose program runs on the workspace.
pub struct Start {
    /// The client's channel.
    pub channel: Channel<Msg>,
    /// The client's connection.
    pub handle: Handle,
    /// The daemon.
    pub ctx: Arc<SshContext>,
    /// Who logged in.
    pub login: Arc<Login>,
    /// The connection's way to its workspace.
    pub link: Arc<Link>,
    /// The upstream channel opened for this one before the client's open was answered.
    pub opened: Opened,
    /// The client's pty request, if any.
    pub pty: Option<PtyRequest>,
    /// Client env keyport accepted.
    pub client_env: Vec<(String, String)>,
    /// Whether the client forwarded its agent on this channel (`ssh -A`).
    pub agent_forward: bool,
    /// The program asked for.
    pub program: Asked,
    /// `break` and `eow@openssh.com`, which russh leaves to the handler.
    pub control: mpsc::Receiver<Control>,
}

/// Runs one relayed session channel to its end.
pub async fn run(start: Start) {
    let session = start.ctx.next_session_id();
    let id = start.channel.id();
    let (rx, tx) = start.channel.split();
    let ctx = start.ctx.clone();
    let asks = Asks {
        pty: start.pty.as_ref(),
        client_env: &start.client_env,
        agent_forward: start.agent_forward.then(|| start.handle.clone()),
        program: &start.program,
    };
    let ready = match start.opened {
        Opened::Ready(ready) => set_up(&start.ctx, &start.login, *ready, session, asks).await,
        Opened::Failed(e) => Err(e),
        // The client's open was refused: there is no channel to run.
        Opened::Refused(_) => return,
    };
    let Started {
        channel: up,
        notices,
        early,
        masker,
        hold: _hold,
    } = match ready {
        Ok(started) => started,
        Err(e) => {
            fail(
                &ctx,
                &start.login,
                &start.link.workspace,
                &tx,
                &e,
                start.pty.is_some(),
            )
            .await;
            return;
        }
    };
    ctx.metrics.relay_sessions.fetch_add(1, Ordering::Relaxed);
    let eol = if start.pty.is_some() { "\r\n" } else { "\n" };
    if !notices.is_empty() {
        let mut err = tx.make_writer_ext(Some(1));
        for notice in &notices {
            let _ = err
                .write_all(format!("keyport: {notice}{eol}").as_bytes())
                .await;
        }
        let _ = err.flush().await;
    }
    let (up_rx, up_tx) = up.split();
    tokio::join!(
        to_upstream(rx, &up_tx, start.control),
        to_client(early, up_rx, &tx, &start.handle, id, masker),
    );
    debug!(session, "relayed session ended");
}

/// What the client asked for, for the upstream channel.
struct Asks<'a> {
    pty: Option<&'a PtyRequest>,
    client_env: &'a [(String, String)],
    /// The client's connection, when it forwarded its agent.
    agent_forward: Option<Handle>,
    program: &'a Asked,
}

/// A relayed program, started: its channel, what the client is told first, and whatever
/// the sshd sent before its last reply (passed on first, so nothing is lost).
struct Started {
    channel: Channel<russh::client::Msg>,
    notices: Vec<String>,
    early: Vec<ChannelMsg>,
    /// A pty session's output masker (`secrets::mask`), when the user has values to mask.
    masker: Option<Masker>,
    /// The leases its values came with, held until it ends.
    hold: crate::sources::Hold,
}

/// Writes file secrets and starts the program upstream; the upstream channel is closed if
/// it does not start (an unclosed channel stays open on the sshd, against its MaxSessions).
async fn set_up(
    ctx: &Arc<SshContext>,
    login: &Arc<Login>,
    ready: Ready,
    session: u64,
    asks: Asks<'_>,
) -> Result<Started, RelayError> {
    let Ready {
        route,
        upstream,
        mut channel,
    } = ready;
    match start(ctx, login, &route, &upstream, &mut channel, session, asks).await {
        Ok((notices, early, masker, hold)) => Ok(Started {
            channel,
            notices,
            early,
            masker,
            hold,
        }),
        Err(e) => {
            let _ = channel.close().await;
            Err(e)
        }
    }
}

/// The session's secrets as they are now, its files written upstream, then its env, pty,
/// agent forwarding and program as pipelined requests whose replies are counted in order.
#[allow(clippy::too_many_arguments)]
async fn start(
    ctx: &Arc<SshContext>,
    login: &Arc<Login>,
    route: &Route,
    upstream: &Upstream,
    channel: &mut Channel<russh::client::Msg>,
    session: u64,
    asks: Asks<'_>,
) -> Result<(Vec<String>, Vec<ChannelMsg>, Option<Masker>, Hold), RelayError> {
    let who = login.session_user();
    let started = prepare::session_secrets(ctx, login, Some(&route.workspace), session)
        .await
        .map_err(RelayError::Other)?;
    let (secrets, names, checks) = (started.secrets, started.names, started.checks);
    if let Some(reason) = checks.blocked() {
        let kind = match asks.program {
            Asked::Shell => "shell",
            Asked::Exec(_) => "exec",
            Asked::Subsystem(_) => "subsystem",
        };
        let mut detail = prepare::blocked_detail(session, kind, &checks);
        detail["workspace"] = route.workspace.clone().into();
        return Err(RelayError::Blocked { reason, detail });
    }
    let files = super::files::write(ctx, upstream, route, &who, &secrets).await;
    // As in local sessions: what happened to files is told to interactive sessions only
    // (git, scp and scripts see clean stderr); a workspace without SFTP is told to all.
    let mut notices = files.always;
    if asks.pty.is_some() {
        notices.extend(checks.notices());
        notices.extend(files.interactive);
    }
    // Only what reached the workspace counts as received.
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| !files.failed.contains(n))
        .collect();

    let keyport = vec![
        ("KEYPORT_USER".to_string(), login.user.clone()),
        ("KEYPORT_WORKSPACE".to_string(), route.workspace.clone()),
    ];
    let env = compose_env(&EnvInputs {
        base: Vec::new(),
        operator: Some(&ctx.operator_env),
        client: asks.client_env,
        accept: &ctx.accept_env,
        secrets: &secrets.env,
        keyport,
    });
    // Always: the workspace's git and ssh get the user's key from keyport's memory. The agent
    // is made for the connection's first relayed session only.
    let ask_agent = upstream.agent.allow(|| SessionAgent {
        vault: ctx.vault.clone(),
        metrics: ctx.metrics.clone(),
        user: who.clone(),
        session,
        forward: asks.agent_forward,
        limit: SignLimit::new(ctx.signatures_per_minute),
    });
    let replies = super::requests::send(channel, &env, asks.pty, ask_agent, asks.program).await?;
    if replies.agent_refused {
        // `AllowAgentForwarding no` there: the session goes on.
        notices.push(format!(
            "{}'s sshd refused agent forwarding: git inside gets no keyport key \
             (AllowAgentForwarding yes there)",
            route.workspace
        ));
    }
    if !replies.refused.is_empty() {
        notices.push(format!(
            "{}'s sshd refused {}; add to its sshd_config: AcceptEnv {}",
            route.workspace,
            replies.refused.join(", "),
            replies.refused.join(" ")
        ));
    }
    if !replies.unsendable.is_empty() {
        notices.push(format!(
            "not sent (not UTF-8, which an SSH env request cannot carry): {}",
            replies.unsendable.join(", ")
        ));
    }
    let kind = match asks.program {
        Asked::Shell => "shell",
        Asked::Exec(_) => "exec",
        Asked::Subsystem(_) => "subsystem",
    };
    info!(session, user = %login.user, workspace = %route.workspace, kind, secrets = names.len(), "relayed session start");
    let detail = json!({
        "session": session, "source": login.peer.to_string(), "kind": kind,
        "workspace": route.workspace, "upstream": route.address, "login": route.os_user,
        "host_key": upstream.host_key, "secrets": names, "refused_env": replies.refused,
        "refused_client_env": env.refused, "failed_files": files.failed,
    });
    prepare::record_start(ctx, login, "relay.start", &names, detail);
    // As in local sessions: a pty's output is masked; exec without one, sftp and scp never.
    let interactive = asks.pty.is_some() && !matches!(asks.program, Asked::Subsystem(_));
    let masker = interactive
        .then(|| Masker::new(secrets.masked.iter().map(SecretBytes::expose)))
        .flatten();
    Ok((notices, replies.early, masker, started.hold))
}

/// Tells the client why, audits the failure, and ends the channel with 255 (as `ssh` exits
/// when it cannot connect).
async fn fail(
    ctx: &Arc<SshContext>,
    login: &Login,
    workspace: &str,
    tx: &ChannelWriteHalf<Msg>,
    e: &RelayError,
    pty: bool,
) {
    let kind = e.kind();
    debug!(user = %login.user, workspace, kind, "relay failed");
    ctx.metrics.count_relay_failure(kind);
    // An unknown workspace is the user's typo (or probe), not an upstream failure; a
    // session refused by policy is the user's to fix.
    match e {
        RelayError::NoWorkspace { .. } => {}
        RelayError::Blocked { detail, .. } => {
            prepare::record_use(ctx, login, "session.blocked", detail.clone());
        }
        _ => {
            let detail = json!({ "workspace": workspace, "kind": kind, "error": e.to_string() });
            prepare::record_use(ctx, login, "relay.failed", detail);
        }
    }
    let mut line = format!("keyport: {workspace}: {e}\n");
    if pty {
        line = line.replace('\n', "\r\n");
    }
    let mut err = tx.make_writer_ext(Some(1));
    let _ = err.write_all(line.as_bytes()).await;
    let _ = err.flush().await;
    // 255 as `ssh` when it cannot connect; 1 for a policy refusal, as a local session's.
    let status = if matches!(e, RelayError::Blocked { .. }) {
        1
    } else {
        255
    };
    let _ = tx.exit_status(status).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// Client → workspace: data, EOF, window changes, signals, breaks, close — in order, each
/// delivered (the upstream window permitting) before the next is taken.
async fn to_upstream(
    mut rx: ChannelReadHalf,
    up: &russh::ChannelWriteHalf<russh::client::Msg>,
    mut control: mpsc::Receiver<Control>,
) {
    loop {
        tokio::select! {
            msg = rx.wait() => {
                let delivered = match msg {
                    Some(ChannelMsg::Data { data }) => up.data_bytes(data).await,
                    Some(ChannelMsg::ExtendedData { data, ext }) => {
                        up.extended_data_bytes(ext, data).await
                    }
                    Some(ChannelMsg::Eof) => up.eof().await,
                    Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                        up.window_change(col_width, row_height, pix_width, pix_height).await
                    }
                    Some(ChannelMsg::Signal { signal }) => up.signal(signal).await,
                    Some(ChannelMsg::Close) | None => {
                        let _ = up.close().await;
                        return;
                    }
                    Some(_) => Ok(()),
                };
                if delivered.is_err() {
                    // The upstream channel is gone; its end reaches the client the other way.
                    return;
                }
            }
            Some(request) = control.recv() => {
                let (name, data) = match request {
                    Control::Break => ("break", 0u32.to_be_bytes().to_vec()),
                    Control::EndOfWrite => ("eow@openssh.com", Vec::new()),
                };
                let _ = up.request(name, false, data).await;
            }
        }
    }
}

/// Workspace → client: output, stderr, EOF, exit status or signal, then close; a pty's
/// output through `masker`, if it has one.
async fn to_client(
    early: Vec<ChannelMsg>,
    mut up: ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    handle: &Handle,
    id: ChannelId,
    mut masker: Option<Masker>,
) {
    let mut early = early.into_iter();
    // The sshd's EOF is passed on only with (after) the exit status, as sshd and keyport's
    // local sessions send them: a client that has its EOF and has sent its own closes the
    // channel at once, and an exit status behind that close would never reach it.
    let mut eof = false;
    loop {
        let next = match early.next() {
            Some(msg) => Some(msg),
            // Held bytes (what may be the start of a value) wait only so long for more.
            None => match Masker::within_hold(masker.as_ref(), up.wait()).await {
                Some(msg) => msg,
                None => {
                    if send_held(tx, &mut masker).await.is_err() {
                        break;
                    }
                    continue;
                }
            },
        };
        // What the masker holds goes before stderr and the end of the output.
        let ends_output = matches!(
            next,
            Some(
                ChannelMsg::ExtendedData { .. }
                    | ChannelMsg::Eof
                    | ChannelMsg::ExitStatus { .. }
                    | ChannelMsg::ExitSignal { .. }
                    | ChannelMsg::Close
            ) | None
        );
        if ends_output && send_held(tx, &mut masker).await.is_err() {
            break;
        }
        let delivered = match next {
            Some(ChannelMsg::Data { data }) => match &mut masker {
                Some(masker) => match shown(masker, data) {
                    Some(data) => tx.data_bytes(data).await,
                    None => Ok(()),
                },
                None => tx.data_bytes(data).await,
            },
            Some(ChannelMsg::ExtendedData { data, ext }) => tx.extended_data_bytes(ext, data).await,
            Some(ChannelMsg::Eof) => {
                eof = true;
                Ok(())
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                let sent = tx.exit_status(exit_status).await;
                sent.and(end_of_output(tx, &mut eof).await)
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            }) => {
                let _ = handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await;
                end_of_output(tx, &mut eof).await
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => Ok(()),
        };
        if delivered.is_err() {
            break;
        }
    }
    let _ = end_of_output(tx, &mut eof).await;
    let _ = tx.close().await;
}

/// What of a pty's output `data` may go now (`None`: nothing): the chunk itself when the
/// masker had nothing to hide or hold in it.
fn shown(masker: &mut Masker, data: Bytes) -> Option<Bytes> {
    let shown = masker.push(&data);
    let copy = match shown {
        [] => return None,
        _ if std::ptr::eq(shown, &data[..]) => None,
        _ => Some(Bytes::copy_from_slice(shown)),
    };
    Some(copy.unwrap_or(data))
}

/// Sends what the masker holds, as it is.
async fn send_held(
    tx: &ChannelWriteHalf<Msg>,
    masker: &mut Option<Masker>,
) -> Result<(), russh::Error> {
    match masker.as_mut().map(Masker::flush) {
        Some(held) if !held.is_empty() => tx.data_bytes(Bytes::copy_from_slice(held)).await,
        _ => Ok(()),
    }
}

/// Sends the EOF held back, if there is one.
async fn end_of_output(tx: &ChannelWriteHalf<Msg>, eof: &mut bool) -> Result<(), russh::Error> {
    if std::mem::take(eof) {
        tx.eof().await
    } else {
        Ok(())
    }
}
