//! A relayed session's set-up requests on its upstream channel: the session env as `env`
//! requests, the pty, `auth-agent-req@openssh.com` (once per connection) and the program —
//! all with want-reply and
//! pipelined. OpenSSH answers a channel's requests in order (notes/relay.md §1.6), so the
//! replies are counted back in order: each env name the sshd refused is known, and nothing
//! waits a round trip per request.

use russh::{Channel, ChannelMsg};

use super::RelayError;
use crate::secrets::env::SessionEnv;
use crate::ssh::{Asked, PtyRequest};

/// What the sshd answered.
pub struct Replies {
    /// Env names it refused (not in its `AcceptEnv`).
    pub refused: Vec<String>,
    /// Env names not sent: their values are not UTF-8, which an `env` request cannot carry
    /// unchanged.
    pub unsendable: Vec<String>,
    /// It refused agent forwarding (`AllowAgentForwarding no`).
    pub agent_refused: bool,
    /// What it sent before its last reply (data, EOF, an exit status), to pass on first.
    pub early: Vec<ChannelMsg>,
}

/// Sends the requests and reads their replies; `Err` if the pty or the program was refused
/// or the connection was lost.
pub async fn send(
    channel: &mut Channel<russh::client::Msg>,
    env: &SessionEnv,
    pty: Option<&PtyRequest>,
    agent: bool,
    program: &Asked,
) -> Result<Replies, RelayError> {
    let mut sent: Vec<String> = Vec::new();
    let mut unsendable = Vec::new();
    for name in env.names() {
        let value = env.get(name).unwrap_or_default();
        let Ok(value) = std::str::from_utf8(value) else {
            unsendable.push(name.to_string());
            continue;
        };
        channel
            .set_env(true, name, value)
            .await
            .map_err(|e| lost(&e))?;
        sent.push(name.to_string());
    }
    if let Some(pty) = pty {
        channel
            .request_pty(
                true,
                &pty.term,
                pty.cols.into(),
                pty.rows.into(),
                0,
                0,
                &pty.modes,
            )
            .await
            .map_err(|e| lost(&e))?;
    }
    if agent {
        channel.agent_forward(true).await.map_err(|e| lost(&e))?;
    }
    match program {
        Asked::Shell => channel.request_shell(true).await,
        Asked::Exec(command) => channel.exec(true, command.clone()).await,
        Asked::Subsystem(name) => channel.request_subsystem(true, name.as_str()).await,
    }
    .map_err(|e| lost(&e))?;

    // env × N, then the pty, then the agent, then the program.
    let total = sent.len() + usize::from(pty.is_some()) + usize::from(agent) + 1;
    let mut replies = Replies {
        refused: Vec::new(),
        unsendable,
        agent_refused: false,
        early: Vec::new(),
    };
    let mut step = 0;
    while step < total {
        let ok = match channel.wait().await {
            Some(ChannelMsg::Success) => true,
            Some(ChannelMsg::Failure) => false,
            Some(ChannelMsg::Close) | None => {
                return Err(RelayError::Other(
                    "the workspace's sshd closed the session before it started".into(),
                ));
            }
            Some(ChannelMsg::WindowAdjusted { .. }) => continue,
            // An sshd that writes before it answers: kept, in order, for the client.
            Some(other) => {
                replies.early.push(other);
                continue;
            }
        };
        let last = step + 1 == total;
        if step < sent.len() {
            if !ok {
                replies.refused.push(sent[step].clone());
            }
        } else if step == sent.len() && pty.is_some() && !ok {
            return Err(RelayError::Other(
                "the workspace's sshd refused a terminal (pty)".into(),
            ));
        } else if last && !ok {
            return Err(RelayError::Other(match program {
                Asked::Subsystem(name) => format!("the workspace's sshd has no {name} subsystem"),
                _ => "the workspace's sshd refused to start the program".into(),
            }));
        } else if agent && step + 2 == total && !ok {
            replies.agent_refused = true;
        }
        step += 1;
    }
    Ok(replies)
}

fn lost(e: &russh::Error) -> RelayError {
    RelayError::Other(format!("the workspace's sshd connection was lost: {e}"))
}
