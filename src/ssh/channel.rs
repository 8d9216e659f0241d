//! One session channel, in its own task: it owns the `Channel` and drains it (an unread
//! channel would stall every channel of the connection), collects the pty and env requests,
//! starts the program with the user's secrets as they are now, and relays I/O, window sizes,
//! signals, breaks and end-of-write until the program ends; then exit-status (or exit-signal),
//! EOF, close.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keyport_keys::SecretBytes;
use nix::sys::signal::Signal;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelId, ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::SshContext;
use super::input::InputQueue;
use super::prepare::{Prepared, Refused, Start, prepare};
use super::process::{self, Identity, Program};
use super::reaper::Reaper;
use super::spawn::{Launch, Leader, SessionChild, Spawner};
use super::terminal::{self, Terminal};
use crate::secrets::env::client_env_accepted;
use crate::secrets::mask::Masker;
use crate::vault::SessionUser;

/// An authenticated login, shared by the connection's channels.
#[derive(Debug)]
pub struct Login {
    /// keyport user.
    pub user: String,
    /// Their row id (names can be reused after a removal; ids cannot).
    pub user_id: i64,
    /// Their OS account (used when the daemon runs as root).
    pub os_user: String,
    /// Whether their sessions run as root (ports below 1024 for `ssh -R`).
    pub root_session: bool,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address the client connected to.
    pub local: Option<SocketAddr>,
}

impl Login {
    /// Who the session acts for.
    pub fn session_user(&self) -> SessionUser {
        SessionUser {
            id: self.user_id,
            name: self.user.clone(),
        }
    }
}

/// The client's `pty-req`, as the program's terminal will be.
pub struct PtyRequest {
    /// `TERM`.
    pub term: String,
    /// Columns, as last given (a window change before the program counts).
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// RFC 4254 §8 terminal modes.
    pub modes: Vec<(russh::Pty, u32)>,
}

/// The program a session channel asked for.
#[derive(Debug)]
pub enum Asked {
    /// `shell`.
    Shell,
    /// `exec COMMAND`.
    Exec(Vec<u8>),
    /// `subsystem NAME` (locally only `sftp`, when an sftp-server is installed).
    Subsystem(String),
}

/// Requests russh passes to the handler only (see `handler.rs`), for the running program.
#[derive(Debug)]
pub enum Control {
    /// `break` (RFC 4335), on a pty.
    Break,
    /// `eow@openssh.com`: the client will read no more output; as sshd, stop reading the
    /// program's stdout (it sees EPIPE / SIGPIPE on its next write).
    EndOfWrite,
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

/// Runs one session channel to its end: here, or on the login's workspace (`relayed`: its
/// link, and the upstream channel opened for this one).
pub async fn run(
    mut channel: Channel<Msg>,
    handle: Handle,
    ctx: Arc<SshContext>,
    login: Arc<Login>,
    control: mpsc::Receiver<Control>,
    relayed: Option<(Arc<crate::relay::Link>, crate::relay::Opened)>,
) {
    let mut pty = None;
    let mut client_env = Vec::new();
    let mut env_bytes = 0;
    let mut agent_forward = false;
    let asked = loop {
        match channel.wait().await {
            // The first pty counts; the handler refuses any other.
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                terminal_modes,
                ..
            }) if pty.is_none() => {
                pty = Some(PtyRequest {
                    term,
                    cols: clamp(col_width),
                    rows: clamp(row_height),
                    modes: terminal_modes,
                });
            }
            // Only what the handler accepted is kept (refused names are not held at all).
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) if client_env.len() < MAX_CLIENT_ENV
                && env_bytes + variable_name.len() + variable_value.len()
                    <= ctx.client_env_bytes
                && client_env_accepted(&ctx.accept_env, &variable_name, &variable_value) =>
            {
                env_bytes += variable_name.len() + variable_value.len();
                client_env.push((variable_name, variable_value));
            }
            // The terminal starts at the size the client last gave.
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(pty) = &mut pty {
                    (pty.cols, pty.rows) = (clamp(col_width), clamp(row_height));
                }
            }
            Some(ChannelMsg::AgentForward { .. }) => agent_forward = true,
            Some(ChannelMsg::Exec { command, .. }) => break Asked::Exec(command),
            Some(ChannelMsg::RequestShell { .. }) => break Asked::Shell,
            // A workspace's sshd decides which subsystems it has.
            Some(ChannelMsg::RequestSubsystem { name, .. })
                if relayed.is_some() || (name == "sftp" && process::sftp_server().is_some()) =>
            {
                break Asked::Subsystem(name);
            }
            Some(ChannelMsg::Close) | None => {
                if let Some((_, opened)) = relayed {
                    opened.close().await;
                }
                return;
            }
            Some(_) => {}
        }
    };
    if let Some((link, opened)) = relayed {
        let start = crate::relay::Start {
            channel,
            handle,
            ctx,
            login,
            link,
            opened,
            pty,
            client_env,
            agent_forward,
            program: asked,
            control,
        };
        return crate::relay::run(start).await;
    }
    let program = match asked {
        Asked::Shell => Program::Shell,
        Asked::Exec(command) => Program::Exec(command),
        Asked::Subsystem(_) => Program::Sftp,
    };
    let session = ctx.next_id();
    ctx.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveSession(ctx.clone());
    let id = channel.id();
    let (rx, tx) = channel.split();
    let start = Start {
        session,
        program: &program,
        pty: pty.as_ref(),
        client_env: &client_env,
        forward: agent_forward.then(|| handle.clone()),
    };
    let outcome = match prepare(&ctx, &login, start).await {
        Ok(Prepared {
            identity,
            env,
            dir: _dir,
            notices,
            masked,
            hold: _hold,
        }) => {
            let interactive = pty.is_some() && !matches!(program, Program::Sftp);
            if interactive && !notices.is_empty() {
                let mut err = tx.make_writer_ext(Some(1));
                for notice in &notices {
                    let _ = err.write_all(format!("{notice}\r\n").as_bytes()).await;
                }
                let _ = err.flush().await;
            }
            let launch = Launch::new(&identity, &program, env, ctx.umask);
            let io = Io {
                rx,
                tx: &tx,
                control,
                reaper: ctx.reaper.as_ref(),
                spawner: &ctx.spawner,
            };
            Ok(match &pty {
                Some(pty) if !matches!(program, Program::Sftp) => {
                    relay_pty(io, &identity, launch, pty, &masked).await
                }
                _ => relay_pipes(io, launch).await,
            })
        }
        Err(refused) => Err(refused),
    };
    let refused = match outcome {
        Ok(Ok(status)) => return finish(&tx, &handle, id, status).await,
        Ok(Err(e)) => Refused::from(e.to_string()),
        Err(refused) => refused,
    };
    debug!(session, error = %refused.message, "session not started");
    let mut err = tx.make_writer_ext(Some(1));
    let _ = err
        .write_all(format!("keyport: {}\r\n", refused.message).as_bytes())
        .await;
    let _ = err.flush().await;
    let _ = tx.exit_status(refused.exit).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Most client `env` requests one channel may make.
pub const MAX_CLIENT_ENV: usize = 64;
/// How long a program may take to end after the client closed the channel.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The channel's two halves, the requests only the handler sees, and who to tell about the
/// program's session.
struct Io<'a> {
    rx: russh::ChannelReadHalf,
    tx: &'a ChannelWriteHalf<Msg>,
    control: mpsc::Receiver<Control>,
    reaper: Option<&'a Reaper>,
    spawner: &'a Spawner,
}

/// What the channel loop does with one message while the program runs.
fn on_message(
    msg: Option<ChannelMsg>,
    input: &InputQueue,
    terminal: Option<&Terminal>,
    pgid: u32,
    running: bool,
) -> bool {
    // Requests after the program started (pty, env, a second exec, x11, agent) are refused by
    // the handler and change nothing here.
    let pty = terminal.is_some();
    match msg {
        Some(ChannelMsg::Data { data }) => input.data(data),
        // No program reads a client's extended data: granted back, as sshd ignores it.
        Some(ChannelMsg::ExtendedData { data, .. }) => input.discard(data.len()),
        // A pty has no stdin to close: the line discipline sees ^D if the user types it.
        Some(ChannelMsg::Eof) if !pty => input.close(),
        Some(ChannelMsg::WindowChange {
            col_width,
            row_height,
            ..
        }) => {
            if let Some(terminal) = terminal {
                terminal.resize(clamp(row_height), clamp(col_width));
            }
        }
        Some(ChannelMsg::Signal { signal }) => {
            if let (true, Some(sig)) = (running, process::to_signal(&signal)) {
                process::signal_group(pgid, sig);
            }
        }
        Some(ChannelMsg::Close) | None => {
            input.close();
            // The client is gone: a hangup, as a terminal's end sends, so shells run their
            // exit traps (a lock file left by a SIGKILLed shell start-up stalls every later
            // one); whatever still runs after CLOSE_GRACE is killed.
            if running {
                process::signal_group(pgid, Signal::SIGHUP);
            }
            return false;
        }
        Some(_) => {}
    }
    true
}

/// Runs `child` until it exits and its output is relayed (or the client has gone), feeding it
/// the client's input; kills its group if it outlives a closed channel by [`CLOSE_GRACE`].
async fn supervise(
    rx: &mut russh::ChannelReadHalf,
    control: &mut mpsc::Receiver<Control>,
    child: &mut SessionChild,
    input: InputQueue,
    pump: impl std::future::Future<Output = ()>,
    terminal: Option<Terminal>,
    eow: &CancellationToken,
) -> std::io::Result<ExitStatus> {
    let pty = terminal.is_some();
    let pgid = child.id();
    tokio::pin!(pump);
    let (mut status, mut pumped, mut open) = (None, false, true);
    let mut kill_at: Option<tokio::time::Instant> = None;
    // Output nobody will read (the client closed) is not waited for.
    while status.is_none() || (!pumped && open) {
        tokio::select! {
            msg = rx.wait(), if open => {
                open = on_message(msg, &input, terminal.as_ref(), pgid, status.is_none());
                if !open {
                    kill_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
            Some(request) = control.recv() => match request {
                Control::Break => {
                    if let Some(terminal) = &terminal {
                        let sent = terminal.send_break();
                        debug!(pgid, sent, "break sent to the terminal");
                    }
                }
                Control::EndOfWrite => eow.cancel(),
            },
            exited = child.wait(), if status.is_none() => status = Some(exited?),
            () = &mut pump, if !pumped => pumped = true,
            () = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)),
                if kill_at.is_some() && status.is_none() => {
                process::signal_group(pgid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    }
    if pty && !pumped {
        // Background jobs may keep the pts open: drain briefly, then drop the master (HUP).
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut pump).await;
    }
    status.ok_or_else(|| std::io::Error::other("no exit status"))
}

/// exec and subsystems: stdout and stderr kept apart, stdin EOF passed on.
async fn relay_pipes(io: Io<'_>, launch: Launch) -> std::io::Result<ExitStatus> {
    let Io {
        mut rx,
        tx,
        mut control,
        reaper,
        spawner,
    } = io;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let ((stdin, to_stdin), (from_stdout, stdout), (from_stderr, stderr)) =
        (pipe()?, pipe()?, pipe()?);
    let mut child = spawner
        .spawn(&launch, Leader::Session, [stdin, stdout, stderr])
        .await?;
    drop(launch);
    // Its own session (setsid): its pid is the session's id.
    let _tracked = reaper.map(|r| r.track(child.id()));
    let input = InputQueue::spawn(pipe::Sender::from_owned_fd(to_stdin)?, rx.window_credit());
    let stdout = pipe::Receiver::from_owned_fd(from_stdout)?;
    let stderr = pipe::Receiver::from_owned_fd(from_stderr)?;
    let (eow, never) = (CancellationToken::new(), CancellationToken::new());
    let pump = async {
        tokio::join!(
            copy_out(stdout, tx, None, &eow),
            copy_out(stderr, tx, Some(1), &never)
        );
    };
    supervise(&mut rx, &mut control, &mut child, input, pump, None, &eow).await
}

/// Relays one output stream (`ext`: `None` stdout, `Some(1)` stderr) until it ends or `stop`
/// (the client's end-of-write) is cancelled; either way the pipe's read end is closed when
/// this returns. What is read goes to russh as it is, not copied again: each read fills the
/// free end of one buffer and that part is handed over (`data_bytes`), so a burst of output
/// costs one allocation per [`READ_BUFFER`]. A buffer is held only while output flows: a
/// program that prints nothing costs the daemon none.
async fn copy_out(
    from: pipe::Receiver,
    to: &ChannelWriteHalf<Msg>,
    ext: Option<u32>,
    stop: &CancellationToken,
) {
    let relay = async {
        let mut enlarged = false;
        while from.readable().await.is_ok() {
            let mut buf = bytes::BytesMut::new();
            loop {
                // Room for what a full default pipe holds (so a read can find it full), or a
                // new buffer.
                if buf.capacity() < DEFAULT_PIPE {
                    buf.reserve(READ_BUFFER);
                }
                match from.try_read_buf(&mut buf) {
                    // End of output.
                    Ok(0) => return,
                    Ok(n) => {
                        // A full default pipe: the program prints faster than it is sent.
                        if n >= DEFAULT_PIPE && !enlarged {
                            enlarge(&from);
                            enlarged = true;
                        }
                        let chunk = buf.split().freeze();
                        let sent = match ext {
                            None => to.data_bytes(chunk).await,
                            Some(ext) => to.extended_data_bytes(ext, chunk).await,
                        };
                        // A channel the client closed.
                        if sent.is_err() {
                            return;
                        }
                    }
                    // Drained: the buffer goes until more comes.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return,
                }
            }
        }
    };
    tokio::select! {
        () = relay => {}
        () = stop.cancelled() => {}
    }
}

/// How much output one read may take; a new buffer is this big.
const READ_BUFFER: usize = 256 * 1024;

/// Linux's default pipe size.
const DEFAULT_PIPE: usize = 64 * 1024;

/// What an output pipe grows to once a read finds it full (the program prints faster than
/// the client takes it): the program then blocks, and wakes, a sixteenth as often, and each
/// read takes more. Only pipes that stream grow (the kernel counts a pipe's size against its
/// creator's `fs.pipe-user-pages-soft`, a fixed share for an account without
/// CAP_SYS_RESOURCE), and the kernel gives pages only as a pipe fills. Best effort: refused, the
/// pipe keeps its size.
const OUTPUT_PIPE: nix::libc::c_int = 1 << 20;

fn enlarge(pipe: &impl AsFd) {
    let _ = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE));
}

/// pty shells and commands: one stream, window changes, the line discipline's signals; the
/// output with the `masked` values as `***` (`secrets::mask`).
async fn relay_pty(
    io: Io<'_>,
    identity: &Identity,
    mut launch: Launch,
    request: &PtyRequest,
    masked: &[SecretBytes],
) -> std::io::Result<ExitStatus> {
    let Io {
        mut rx,
        tx,
        mut control,
        reaper,
        spawner,
    } = io;
    let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
    pty.resize(pty_process::Size::new(request.rows, request.cols))
        .map_err(std::io::Error::other)?;
    terminal::apply_modes(&pts, &request.modes)?;
    // As sshd: the terminal belongs to the session's user (group tty, 0620), and SSH_TTY names it.
    if let Ok(tty) = nix::unistd::ttyname(pts.as_fd()) {
        launch.env.push(("SSH_TTY".into(), tty.into_os_string()));
    }
    if launch.switch.is_some() {
        let group = nix::unistd::Group::from_name("tty")
            .ok()
            .flatten()
            .map(|g| g.gid);
        let owner = nix::unistd::Uid::from_raw(identity.os.uid);
        let group = group.unwrap_or(nix::unistd::Gid::from_raw(identity.os.gid));
        nix::unistd::fchown(pts.as_fd(), Some(owner), Some(group))
            .map_err(std::io::Error::other)?;
    }
    // The daemon's own terminal too (a non-root daemon owns it already): 0620, as sshd.
    nix::sys::stat::fchmod(pts.as_fd(), nix::sys::stat::Mode::from_bits_truncate(0o620))
        .map_err(std::io::Error::other)?;
    // The pts is the program's stdio and its controlling terminal; the daemon keeps no copy
    // (the master reads EIO once the last process holding it is gone).
    let stdio: [OwnedFd; 3] = [
        pts.as_fd().try_clone_to_owned()?,
        pts.as_fd().try_clone_to_owned()?,
        pts.as_fd().try_clone_to_owned()?,
    ];
    drop(pts);
    // The program is a session leader (setsid): its pid is its process group.
    let mut child = spawner.spawn(&launch, Leader::Terminal, stdio).await?;
    drop(launch);
    let _tracked = reaper.map(|r| r.track(child.id()));
    let terminal = Terminal::new(pty.as_fd().try_clone_to_owned()?);
    let (mut reader, writer) = pty.into_split();
    let input = InputQueue::spawn(writer, rx.window_credit());
    let mut out = tx.make_writer();
    let mut masker = Masker::new(masked.iter().map(SecretBytes::expose));
    let pump = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // Held bytes (what may be the start of a value) wait only so long for more.
            let read = Masker::within_hold(masker.as_ref(), reader.read(&mut buf)).await;
            let shown = match (read, &mut masker) {
                // No more output within that time: the held bytes go as they are.
                (None, Some(masker)) => masker.flush(),
                // EIO once the last process holding the pts exits: that is the end of output.
                (None, None) | (Some(Ok(0) | Err(_)), _) => break,
                (Some(Ok(n)), Some(masker)) => masker.push(&buf[..n]),
                (Some(Ok(n)), None) => &buf[..n],
            };
            if out.write_all(shown).await.is_err() {
                break;
            }
        }
        if let Some(masker) = &mut masker {
            let _ = out.write_all(masker.flush()).await;
        }
        let _ = out.flush().await;
    };
    // A pty has one output stream; the client's end-of-write ends nothing on it (sshd
    // closes the master's read side, which a terminal's programs do not see either).
    let eow = CancellationToken::new();
    supervise(
        &mut rx,
        &mut control,
        &mut child,
        input,
        pump,
        Some(terminal),
        &eow,
    )
    .await
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
