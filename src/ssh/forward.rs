//! Port forwarding, when `[forwarding]` turns it on: `ssh -L` (direct-tcpip channels keyport
//! connects for the client) and `ssh -R` (tcpip-forward listeners on keyport's loopback address
//! whose connections come back to the client as forwarded-tcpip channels). Each target or port
//! is checked against its allow-list before anything is connected or bound; every forwarded
//! connection is audited with its bytes in each direction when it ends. The channel side is a
//! russh stream, so forwarded data has the same consumption-gated windows as sessions: a slow
//! target slows the client, nothing queues without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::ChannelOpenFailure;
use russh::server::{ChannelOpenHandle, Handle, Msg};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::SshContext;
use super::channel::Login;
use crate::config::{Forwarding, LocalTarget, RemotePorts};
use crate::tap::Tap;
use crate::vault::Actor;

/// How long keyport tries to reach an `ssh -L` target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[forwarding]`, parsed once.
#[derive(Debug, Default)]
pub struct Policy {
    local: bool,
    local_targets: Vec<LocalTarget>,
    remote: bool,
    remote_ports: Vec<RemotePorts>,
    max_remote_listeners: usize,
}

impl Policy {
    /// The policy `config` describes (already checked when the config was loaded; entries that
    /// do not parse allow nothing).
    pub fn new(config: &Forwarding) -> Self {
        Self {
            local: config.local,
            local_targets: config.local_targets().unwrap_or_default(),
            remote: config.remote,
            remote_ports: config.remote_ports().unwrap_or_default(),
            max_remote_listeners: config.max_remote_listeners,
        }
    }

    /// The port to connect to, if the policy allows `host`:`port`.
    fn allows_local(&self, host: &str, port: u32) -> Option<u16> {
        let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
        let listed = self.local_targets.iter().any(|t| t.allows(host, port));
        (self.local && listed).then_some(port)
    }

    /// Port 0 (any free port, which the kernel picks) is allowed only where one entry allows
    /// every port: no other list can say in advance that the port picked is on it.
    fn allows_remote(&self, port: u16) -> bool {
        let allowed = if port == 0 {
            self.remote_ports.iter().any(RemotePorts::allows_all)
        } else {
            self.remote_ports.iter().any(|r| r.allows(port))
        };
        self.remote && allowed
    }
}

/// `ssh -L`: connects to `host`:`port` for the client if the policy allows it, then relays.
/// Refusals are channel-open failures: administratively prohibited by policy, connect failed
/// when the target cannot be reached.
#[allow(clippy::too_many_arguments)]
pub fn open_local(
    ctx: &Arc<SshContext>,
    login: Arc<Login>,
    channel: russh::Channel<Msg>,
    reply: ChannelOpenHandle,
    host: &str,
    port: u32,
    origin: String,
    stop: &CancellationToken,
) {
    let target = format!("{host}:{port}");
    let Some(port) = ctx.forwarding.allows_local(host, port) else {
        info!(user = %login.user, target = %target, "ssh -L refused by policy");
        drop(reply); // administratively prohibited
        return;
    };
    let (ctx2, host, stop) = (ctx.clone(), host.to_string(), stop.clone());
    ctx.tasks.spawn(async move {
        let connect = TcpStream::connect((host.as_str(), port));
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                info!(user = %login.user, target = %target, error = %e, "ssh -L connect failed");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
            Err(_) => {
                info!(user = %login.user, target = %target, "ssh -L connect timed out");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        reply.accept().await;
        let bytes = relay(channel.into_stream(), tcp, &stop).await;
        let detail = json!({
            "target": target, "origin": origin, "source": login.peer.to_string(),
            "bytes_to_target": bytes.0, "bytes_from_target": bytes.1,
        });
        audit(&ctx2, &login, "forward.local", detail).await;
    });
}

/// One connection's forwards: its `ssh -R` listeners, and a token every forwarded
/// connection (either direction) stops on, cancelled when the SSH connection ends — a target
/// that neither sends nor closes does not keep a relay alive after it.
pub struct Forwards {
    listeners: HashMap<(String, u32), CancellationToken>,
    /// Cancelled on drop (the connection ended) and on daemon shutdown.
    pub stop: CancellationToken,
    max_listeners: usize,
}

impl Forwards {
    /// `tcpip-forward`: listens on the loopback address, on `port` (0: a free one, written
    /// back), if the policy allows it. As sshd with `GatewayPorts no`, the address the client
    /// names is not used for binding; ports below 1024 only for sessions running as root.
    pub async fn listen(
        &mut self,
        ctx: &Arc<SshContext>,
        login: Arc<Login>,
        handle: Handle,
        address: &str,
        port: &mut u32,
    ) -> bool {
        let Ok(requested) = u16::try_from(*port) else {
            return false;
        };
        let privileged = requested != 0 && requested < 1024;
        let full = self.listeners.len() >= self.max_listeners;
        if !ctx.forwarding.allows_remote(requested) || (privileged && !login.root_session) || full {
            info!(user = %login.user, port = requested, full, "ssh -R refused");
            return false;
        }
        let listener = match TcpListener::bind(("127.0.0.1", requested)).await {
            Ok(listener) => listener,
            Err(e) => {
                info!(user = %login.user, port = requested, error = %e, "ssh -R cannot listen");
                return false;
            }
        };
        let Ok(bound) = listener.local_addr().map(|a| a.port()) else {
            return false;
        };
        if requested == 0 {
            *port = u32::from(bound);
        }
        let stop = self.stop.child_token();
        self.listeners
            .insert((address.to_string(), *port), stop.clone());
        info!(user = %login.user, port = bound, "ssh -R listening");
        let forward = Remote {
            ctx: ctx.clone(),
            login,
            handle,
            address: address.to_string(),
            port: *port,
            connection: self.stop.clone(),
        };
        ctx.tasks.spawn(forward.serve(listener, stop));
        true
    }

    /// `cancel-tcpip-forward`.
    pub fn cancel(&mut self, address: &str, port: u32) -> bool {
        match self.listeners.remove(&(address.to_string(), port)) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }
}

impl Forwards {
    /// A connection's forwards, stopping with the daemon.
    pub fn new(ctx: &SshContext) -> Self {
        Self {
            listeners: HashMap::new(),
            stop: ctx.shutdown.child_token(),
            max_listeners: ctx.forwarding.max_remote_listeners,
        }
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        // Every listener's token is a child of `stop`: all of this connection's forwards end.
        self.stop.cancel();
    }
}

/// One `ssh -R` listener.
struct Remote {
    ctx: Arc<SshContext>,
    login: Arc<Login>,
    handle: Handle,
    /// The address and port as the client named them (the forwarded-tcpip channel repeats
    /// them, so the client finds its forward).
    address: String,
    port: u32,
    /// The SSH connection's token: its forwarded connections end with it.
    connection: CancellationToken,
}

impl Remote {
    async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => {
                        // Out of descriptors, most likely: let others finish first.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let this = this.clone();
            this.ctx.tasks.clone().spawn(async move {
                let opened = this
                    .handle
                    .channel_open_forwarded_tcpip(
                        this.address.clone(),
                        this.port,
                        peer.ip().to_string(),
                        u32::from(peer.port()),
                    )
                    .await;
                let Ok(channel) = opened else {
                    return; // the client refused it: the TCP connection is dropped
                };
                let bytes = relay(channel.into_stream(), tcp, &this.connection).await;
                let detail = json!({
                    "port": this.port, "origin": peer.to_string(),
                    "source": this.login.peer.to_string(),
                    "bytes_to_client": bytes.1, "bytes_from_client": bytes.0,
                });
                audit(&this.ctx, &this.login, "forward.remote", detail).await;
            });
        }
    }
}

/// Copies both ways until both ends are done (or `stop`: the SSH connection ended, or the
/// daemon shuts down); returns the bytes the channel sent to the socket and the socket sent to
/// the channel.
async fn relay<C>(channel: C, tcp: TcpStream, stop: &CancellationToken) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (from_channel, from_tcp) = (AtomicU64::new(0), AtomicU64::new(0));
    let count = |counter: &AtomicU64, n: usize| {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    };
    let mut channel = Tap::new(channel, |n| count(&from_channel, n), |_| {});
    let mut tcp = Tap::new(tcp, |n| count(&from_tcp, n), |_| {});
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut channel, &mut tcp) => {}
        () = stop.cancelled() => {}
    }
    (
        from_channel.load(Ordering::Relaxed),
        from_tcp.load(Ordering::Relaxed),
    )
}

async fn audit(ctx: &SshContext, login: &Login, action: &'static str, detail: serde_json::Value) {
    let user = login.user.clone();
    let _ = ctx
        .vault
        .call(move |v| v.record_use(&Actor::User(user.clone()), &user, action, detail.clone()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(remote_allow: &[&str]) -> Policy {
        Policy::new(&Forwarding {
            remote: true,
            remote_allow: remote_allow.iter().map(|s| s.to_string()).collect(),
            ..Forwarding::default()
        })
    }

    #[test]
    fn port_zero_needs_every_port_allowed() {
        // The kernel picks an ephemeral port: only "any" can promise it is allowed.
        assert!(!policy(&["1-9999", "60000-65535"]).allows_remote(0));
        assert!(!policy(&["8080"]).allows_remote(0));
        assert!(policy(&["any"]).allows_remote(0));
        assert!(policy(&["8080"]).allows_remote(8080));
        assert!(!policy(&["8080"]).allows_remote(8081));
        let off = Policy::new(&Forwarding {
            remote_allow: vec!["any".into()],
            ..Forwarding::default()
        });
        assert!(!off.allows_remote(8080), "remote = false");
    }

    #[test]
    fn local_targets_need_the_switch_and_a_real_port() {
        let on = Policy::new(&Forwarding {
            local: true,
            local_allow: vec!["Db:5432".into()],
            ..Forwarding::default()
        });
        assert_eq!(on.allows_local("db", 5432), Some(5432));
        assert_eq!(on.allows_local("db", 5432 + 65536), None, "no wrap-around");
        assert_eq!(on.allows_local("db", 0), None);
        let off = Policy::new(&Forwarding {
            local_allow: vec!["any".into()],
            ..Forwarding::default()
        });
        assert_eq!(off.allows_local("db", 5432), None, "local = false");
    }
}
