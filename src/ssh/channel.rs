//! One session channel, in its own task: it owns the `Channel` and drains it (an unread
//! channel would stall every channel of the connection), collects the pty and env requests,
//! starts the program with the user's secrets as they are now, and relays I/O, window sizes
//! and signals until the program ends; then exit-status (or exit-signal), EOF, close.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use super::SshContext;
use super::process::{self, Identity, Program};
use crate::secrets::env::{EnvInputs, SessionEnv, compose_env};
use crate::vault::Actor;

/// An authenticated login, shared by the connection's channels.
#[derive(Debug)]
pub struct Login {
    /// keyport user.
    pub user: String,
    /// Their OS account (used when the daemon runs as root).
    pub os_user: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: Option<SocketAddr>,
}

struct PtyRequest {
    term: String,
    cols: u16,
    rows: u16,
}

/// Counts a running session for the metrics while it lives.
struct ActiveSession(Arc<SshContext>);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0
            .metrics
            .sessions_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs one session channel to its end.
pub async fn run(
    mut channel: Channel<Msg>,
    handle: Handle,
    ctx: Arc<SshContext>,
    login: Arc<Login>,
) {
    let mut pty = None;
    let mut client_env = Vec::new();
    let program = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some(PtyRequest {
                    term,
                    cols: clamp(col_width),
                    rows: clamp(row_height),
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => client_env.push((variable_name, variable_value)),
            Some(ChannelMsg::Exec { command, .. }) => break Program::Exec(command),
            Some(ChannelMsg::RequestShell { .. }) => break Program::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. })
                if name == "sftp" && process::sftp_server().is_some() =>
            {
                break Program::Sftp;
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let session = ctx.next_id();
    ctx.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveSession(ctx.clone());
    let id = channel.id();
    let (rx, tx) = channel.split();
    let outcome = match prepare(&ctx, &login, session, &program, pty.as_ref(), &client_env).await {
        Ok((identity, env)) => match &pty {
            Some(pty) if !matches!(program, Program::Sftp) => {
                relay_pty(rx, &tx, &identity, &program, env, pty).await
            }
            _ => relay_pipes(rx, &tx, &identity, &program, env).await,
        },
        Err(message) => Err(std::io::Error::other(message)),
    };
    match outcome {
        Ok(status) => finish(&tx, &handle, id, status).await,
        Err(e) => {
            debug!(session, error = %e, "session failed to start");
            let mut err = tx.make_writer_ext(Some(1));
            let _ = err.write_all(format!("keyport: {e}\r\n").as_bytes()).await;
            let _ = err.flush().await;
            let _ = tx.exit_status(127).await;
            let _ = tx.eof().await;
            let _ = tx.close().await;
        }
    }
}

fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Who runs the program and with which environment; records the injection.
async fn prepare(
    ctx: &Arc<SshContext>,
    login: &Login,
    session: u64,
    program: &Program,
    pty: Option<&PtyRequest>,
    client_env: &[(String, String)],
) -> Result<(Identity, SessionEnv), String> {
    let identity = process::identity(&login.os_user).map_err(|e| e.to_string())?;
    let user = login.user.clone();
    let (secrets, names) = ctx
        .vault
        .call(move |v| v.session_secrets(&user))
        .await
        .map_err(|e| format!("cannot read your secrets: {e}"))?;
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
    super::files::materialize(ctx, &identity, &login.user, secrets.clone()).await;
    let env_secrets: Vec<_> = secrets.env.clone();
    let env = compose_env(&EnvInputs {
        base,
        operator: Some(&ctx.operator_env),
        client: client_env,
        accept: &ctx.accept_env,
        secrets: &env_secrets,
        keyport: vec![
            ("KEYPORT_SESSION".into(), session.to_string()),
            ("KEYPORT_USER".into(), login.user.clone()),
        ],
    });
    if !names.is_empty() {
        ctx.metrics.injections.fetch_add(1, Ordering::Relaxed);
    }
    let kind = match program {
        Program::Shell => "shell",
        Program::Exec(_) => "exec",
        Program::Sftp => "sftp",
    };
    info!(session, user = %login.user, source = %peer, kind, secrets = names.len(), "session start");
    let detail = json!({
        "session": session, "source": peer.to_string(), "kind": kind,
        "secrets": names, "refused_env": env.refused,
    });
    let (vault, user) = (ctx.vault.clone(), login.user.clone());
    ctx.tasks.spawn(async move {
        let actor = Actor::User(user.clone());
        let _ = vault
            .call(move |v| v.record_use(&actor, &user, "session.start", detail.clone()))
            .await;
    });
    Ok((identity, env))
}

/// exec and subsystems: stdout and stderr kept apart, stdin EOF passed on.
async fn relay_pipes(
    mut rx: russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    identity: &Identity,
    program: &Program,
    env: SessionEnv,
) -> std::io::Result<ExitStatus> {
    let (argv0, args) = process::argv(&process::login_shell(&identity.os), program);
    let mut cmd = tokio::process::Command::new(process::executable(identity, program));
    cmd.arg0(argv0)
        .args(args)
        .env_clear()
        .envs(env.to_os_pairs())
        .current_dir(&identity.os.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(switch) = identity.switch.clone() {
        // SAFETY: `apply` makes only async-signal-safe syscalls on data prepared before fork.
        unsafe {
            cmd.pre_exec(move || switch.apply());
        }
    }
    drop(env);
    let mut child = cmd.spawn()?;
    let pgid = child.id().unwrap_or(0);
    let mut stdin = child.stdin.take();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let mut out = tx.make_writer();
    let mut err = tx.make_writer_ext(Some(1));
    let pump = async {
        tokio::join!(copy_out(stdout, &mut out), copy_out(stderr, &mut err));
    };
    tokio::pin!(pump);
    let (mut status, mut pumped, mut open) = (None, false, true);
    while status.is_none() || !pumped {
        tokio::select! {
            msg = rx.wait(), if open => match msg {
                Some(ChannelMsg::Data { data }) => write_stdin(&mut stdin, &data).await,
                Some(ChannelMsg::Eof) => stdin = None,
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(sig) = process::to_signal(&signal) {
                        process::signal_group(pgid, sig);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    open = false;
                    process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                }
                Some(_) => {}
            },
            exited = child.wait(), if status.is_none() => status = Some(exited?),
            () = &mut pump, if !pumped => pumped = true,
        }
    }
    status.ok_or_else(|| std::io::Error::other("no exit status"))
}

async fn write_stdin(stdin: &mut Option<tokio::process::ChildStdin>, data: &Bytes) {
    if let Some(pipe) = stdin
        && pipe.write_all(data).await.is_err()
    {
        *stdin = None;
    }
}

async fn copy_out<R, W>(from: Option<R>, to: &mut W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Some(mut from) = from {
        let _ = tokio::io::copy(&mut from, to).await;
        let _ = to.flush().await;
    }
}

/// pty shells and commands: one stream, window changes, the line discipline's signals.
async fn relay_pty(
    mut rx: russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    identity: &Identity,
    program: &Program,
    env: SessionEnv,
    request: &PtyRequest,
) -> std::io::Result<ExitStatus> {
    let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
    pty.resize(pty_process::Size::new(request.rows, request.cols))
        .map_err(std::io::Error::other)?;
    let (argv0, args) = process::argv(&process::login_shell(&identity.os), program);
    let mut cmd = pty_process::Command::new(process::executable(identity, program))
        .arg0(argv0)
        .args(args)
        .env_clear()
        .envs(env.to_os_pairs())
        .current_dir(&identity.os.home)
        .kill_on_drop(true);
    if let Some(switch) = identity.switch.clone() {
        // SAFETY: `apply` makes only async-signal-safe syscalls on data prepared before fork.
        cmd = unsafe { cmd.pre_exec(move || switch.apply()) };
    }
    drop(env);
    let mut child = cmd.spawn(pts).map_err(std::io::Error::other)?;
    // The child is a session leader (setsid): its pid is its process group.
    let pgid = child.id().unwrap_or(0);
    let (mut reader, mut writer) = pty.into_split();
    let mut out = tx.make_writer();
    let pump = async {
        let mut buf = vec![0u8; 32 * 1024];
        // EIO once the last process holding the pts exits: that is the end of output.
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            if out.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = out.flush().await;
    };
    tokio::pin!(pump);
    let (mut open, mut pumped) = (true, false);
    let status = loop {
        tokio::select! {
            msg = rx.wait(), if open => match msg {
                Some(ChannelMsg::Data { data }) => {
                    let _ = writer.write_all(&data).await;
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let _ = writer.resize(pty_process::Size::new(clamp(row_height), clamp(col_width)));
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(sig) = process::to_signal(&signal) {
                        process::signal_group(pgid, sig);
                    }
                }
                Some(ChannelMsg::Close) | None => {
                    open = false;
                    process::signal_group(pgid, nix::sys::signal::Signal::SIGHUP);
                }
                Some(_) => {}
            },
                        exited = child.wait() => break exited?,
            () = &mut pump, if !pumped => pumped = true,
        }
    };
    // Background jobs may keep the pts open: drain briefly, then drop the master (HUP).
    if !pumped {
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut pump).await;
    }
    Ok(status)
}

/// exit-status, or exit-signal when a signal ended the program; then EOF and close.
async fn finish(tx: &ChannelWriteHalf<Msg>, handle: &Handle, id: ChannelId, status: ExitStatus) {
    match (status.code(), status.signal()) {
        (Some(code), _) => {
            let _ = tx.exit_status(u32::try_from(code).unwrap_or(255)).await;
        }
        (None, Some(signal)) => {
            let _ = handle
                .exit_signal_request(
                    id,
                    process::from_signal(signal),
                    status.core_dumped(),
                    String::new(),
                    "en".into(),
                )
                .await;
        }
        (None, None) => {
            let _ = tx.exit_status(255).await;
        }
    }
    let _ = tx.eof().await;
    let _ = tx.close().await;
}
