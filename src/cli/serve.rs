//! `keyport serve`: start-up (data dir, master key, host key, first user), then the SSH and
//! HTTP listeners until SIGTERM or SIGINT, when both stop accepting, tell their clients, and
//! wait for their tasks.

use std::net::SocketAddr;
use std::path::Path;

use clap::Args;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use std::sync::{Arc, OnceLock};

use crate::bootstrap::FirstUser;
use crate::config::Config;
use crate::sources::{AuditSink, Sources};
use crate::vault::Actor;

use crate::metrics::DaemonMetrics;
use crate::shared::VaultHandle;
use crate::{api, bootstrap, ssh};

/// `keyport serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// `--config`, `--data-dir`.
    #[command(flatten)]
    pub data: super::DataDirArgs,
    /// SSH listen address.
    #[arg(long, env = "KEYPORT_SSH_LISTEN", value_name = "ADDR")]
    pub ssh_listen: Option<SocketAddr>,
    /// HTTP API listen address.
    #[arg(long, env = "KEYPORT_API_LISTEN", value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
}

/// Runs the daemon.
pub fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(addr) = args.ssh_listen {
        config.ssh_listen = addr;
    }
    if let Some(addr) = args.api_listen {
        config.api_listen = addr;
    }
    let mut vault = super::open_vault(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A provider that cannot work is a start-up error, before anything listens.
    let handle = Arc::new(OnceLock::new());
    let audits = TaskTracker::new();
    let sources = runtime
        .block_on(async { start_sources(&config, &mut vault, handle.clone(), audits.clone()) })?;
    // Bind first: the credentials written at first start must name the real address (the
    // listeners may be on port 0).
    let (api, ssh) = runtime.block_on(async {
        let api = TcpListener::bind(config.api_listen)
            .await
            .map_err(|e| anyhow::anyhow!("api-listen {}: {e}", config.api_listen))?;
        let ssh = TcpListener::bind(config.ssh_listen)
            .await
            .map_err(|e| anyhow::anyhow!("ssh-listen {}: {e}", config.ssh_listen))?;
        Ok::<_, anyhow::Error>((api, ssh))
    })?;
    let (api_addr, ssh_addr) = (api.local_addr()?, ssh.local_addr()?);
    let startup = bootstrap::prepare(&mut vault, &format!("http://{api_addr}"))?;
    let host_key = vault.host_key()?.private().clone();
    let data_dir = vault.data_dir().to_path_buf();
    // Tests and scripts parse "host key fingerprint:", "created admin user", "ssh listening on"
    // and "api listening on": those lines keep their words.
    println!("keyport data dir: {}", vault.data_dir().display());
    let root = crate::osuser::is_root();
    if root {
        println!("{}", root_notice(&data_dir));
    }
    println!("host key fingerprint: {}", startup.host_fingerprint);
    if let Some(first) = &startup.first_user {
        println!(
            "created admin user {} with {} login key{} from ~/.ssh; CLI credentials in {}",
            first.name,
            first.login_keys,
            if first.login_keys == 1 { "" } else { "s" },
            first.credentials.display()
        );
    }
    println!("ssh listening on {ssh_addr}");
    println!("api listening on http://{api_addr}");
    for line in connect_hints(ssh_addr, startup.first_user.as_ref(), root) {
        println!("{line}");
    }
    runtime.block_on(async move {
        // Handlers first, then "ready": a SIGTERM right after the ready line must be caught.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = CancellationToken::new();
        let vault = VaultHandle::new(vault);
        if let Some(sources) = &sources {
            vault.set_sources(sources.clone());
        }
        let _ = handle.set(vault.clone());
        if let crate::store::Database::Postgres(url) = config.database()? {
            let woken = vault.clone();
            crate::store::postgres::listen(&url, move || woken.wake())?;
        }
        let metrics = Arc::new(DaemonMetrics::default());
        let tasks = TaskTracker::new();
        let web = config.web.checked().map_err(|(key, rule)| anyhow::anyhow!("{key}: {rule}"))?;
        let links = web_links(&web, api_addr);
        let mut state = api::AppState::new(vault.clone(), metrics.clone());
        if web.enabled {
            state = state.with_web_links(links.clone());
        }
        // Sessions' private sockets serve the API alone; the listener serves the pages too.
        let router = api::router(state);
        let listener_router = if web.enabled {
            let origin = links.base.clone().unwrap_or_else(|_| format!("http://{api_addr}"));
            crate::web::router(crate::web::WebState::new(vault.clone(), web, &origin))
                .merge(router.clone())
                .fallback(crate::web::not_found)
        } else {
            router.clone()
        };
        let mut ctx = ssh::SshContext::new(
            vault.clone(),
            metrics.clone(),
            shutdown.clone(),
            Some(router.clone()),
            &config,
        );
        // What a crashed daemon left goes before anyone logs in.
        let records = data_dir.join(ssh::sessiondir::RECORDS_DIR);
        ssh::sessiondir::sweep(&records);
        ctx.session_records = Some(records);
        match ssh::reaper::Reaper::start() {
            Ok(reaper) => ctx.reaper = Some(reaper),
            Err(e) => tracing::warn!(error = %e, "cannot start the session reaper: sessions may outlive a crash"),
        }
        let ctx = Arc::new(ctx);
        // The workspace owner's files are in place before anyone logs in.
        let owner = config.owner.clone().or_else(|| {
            (!crate::osuser::is_root())
                .then(|| crate::osuser::current().ok().map(|u| u.name))
                .flatten()
        });
        if let Some(owner) = owner {
            tasks.spawn(ssh::materialize_owner(ctx.clone(), owner));
        }
        tasks.spawn(ssh::run(
            ssh,
            ctx,
            ssh::server_config(host_key, &config.ssh),
        ));
        let node = node_id()?;
        tasks.spawn(heartbeats(
            vault.clone(),
            node.clone(),
            config.replicas.heartbeat(),
            shutdown.clone(),
        ));
        let (stop, http) = (shutdown.clone(), config.http.clone());
        tasks.spawn(async move {
            if let Err(e) = api::serve(api, listener_router, stop.cancelled_owned(), &http).await {
                tracing::error!(error = %e, "api server failed");
            }
        });
        tasks.close();
        // Read back from the kernel (set in `cli::run`), so the log says what is in force.
        match nix::sys::prctl::get_dumpable() {
            Ok(dumpable) => tracing::debug!(dumpable, "core dumps off"),
            Err(e) => tracing::warn!(error = %e, "cannot read the dumpable flag"),
        }
        info!(ssh = %ssh_addr, api = %api_addr, "keyport ready");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("shutting down");
        shutdown.cancel();
        tasks.wait().await;
        // Gone from the replicas' list at once (not only after [replicas] alive_secs).
        if let Err(e) = vault.call(move |v| v.leave(&node)).await {
            tracing::warn!(error = %e, "cannot remove this daemon's heartbeat");
        }
        // Every session has ended: their leases go now, and what that audits is written.
        if let Some(sources) = &sources {
            sources.stop().await;
        }
        audits.close();
        audits.wait().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// The daemon's sources, when `[sources]` configures a provider; lease ends are audited
/// through `handle` once it is set, as tasks of `audits`.
fn start_sources(
    config: &Config,
    vault: &mut crate::vault::Vault,
    handle: Arc<OnceLock<VaultHandle>>,
    audits: TaskTracker,
) -> anyhow::Result<Option<Arc<Sources>>> {
    let settings = config
        .sources
        .checked()
        .map_err(|(key, rule)| anyhow::anyhow!("{key}: {rule}"))?;
    if settings.vault.is_none() && settings.exec.is_empty() {
        return Ok(None);
    }
    let jwt_key = match Sources::needs_jwt_key(&settings) {
        true => Some(vault.jwt_key()?),
        false => None,
    };
    let audit: AuditSink = Arc::new(move |user, action, secret, detail| {
        let Some(vault) = handle.get().cloned() else {
            return;
        };
        let (user, secret) = (user.to_string(), secret.map(str::to_string));
        audits.spawn(async move {
            let uses = [(action, secret, detail)];
            let _ = vault
                .call(move |v| v.record_uses(&Actor::System, &user, &uses))
                .await;
        });
    });
    let sources = Sources::start(&settings, jwt_key, audit).map_err(anyhow::Error::msg)?;
    info!(
        vault = settings.vault.is_some(),
        exec = settings.exec.len(),
        "sources ready"
    );
    Ok(Some(sources))
}

/// What running as root means, said once at start: the issue this answers is a root daemon
/// that quietly went system-wide.
fn root_notice(data_dir: &Path) -> String {
    let which = if data_dir == Path::new(crate::datadir::SYSTEM_DATA_DIR) {
        "the system data dir"
    } else {
        "data dir"
    };
    format!(
        "running as root: {which} {} serves every user of this host; each user's sessions run \
         as their own OS account (`keyport user add NAME --os-user ACCOUNT`)",
        data_dir.display()
    )
}

/// How to connect, with the real listen address: `ssh -p PORT USER@HOST`, naming the admin
/// the first start created (or `USER`), and what the CLI uses.
fn connect_hints(ssh: SocketAddr, first: Option<&FirstUser>, root: bool) -> Vec<String> {
    // A wildcard listener is reached on loopback too; `ssh` takes a bare IPv6 address.
    let host = if ssh.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        ssh.ip().to_string()
    };
    let port = ssh.port();
    let Some(first) = first else {
        return vec![format!(
            "connect: ssh -p {port} USER@{host} (USER: a keyport user with a login key; \
             `keyport user list`)"
        )];
    };
    let mut lines = vec![format!("connect: ssh -p {port} {}@{host}", first.name)];
    if first.login_keys == 0 {
        lines.push(format!(
            "no public key in ~/.ssh: give {0} one before connecting, with \
             `keyport login-key add --user {0} \"$(cat KEY.pub)\"`",
            first.name
        ));
    }
    if root {
        lines.push(format!(
            "{0}'s sessions run as OS account {0}: add each person as their own user",
            first.name
        ));
    }
    lines.push(format!(
        "the CLI (`keyport whoami`, `keyport secret …`) uses the credentials in {}",
        first.credentials.display()
    ));
    lines
}

/// Where `web-login` links point: `web.url`, else the API's own address when browsers keep a
/// Secure cookie from it (loopback); otherwise why there are none.
fn web_links(web: &crate::config::WebOptions, api_addr: SocketAddr) -> api::WebLinks {
    let base = match &web.url {
        Some(url) => Ok(url.clone()),
        None if api_addr.ip().is_loopback() => Ok(format!("http://{api_addr}")),
        None => Err(format!(
            "set web.url to the https:// address browsers reach keyport at (a TLS proxy in front \
             of {api_addr}): over plain HTTP, browsers keep the Secure sign-in cookie from \
             loopback addresses only"
        )),
    };
    api::WebLinks {
        base,
        ttl: web.link_ttl,
    }
}

/// A node id for this start: random, so a restarted daemon is a new node.
fn node_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random node id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes this daemon's heartbeat every `every` until shutdown (see `[replicas]`).
async fn heartbeats(
    vault: crate::shared::VaultHandle,
    node: String,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let started = crate::store::now_ms();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = vault.heartbeat(node.clone(), started).await {
            tracing::warn!(error = %e, "heartbeat not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(login_keys: usize) -> FirstUser {
        FirstUser {
            name: "alice".into(),
            login_keys,
            credentials: "/home/alice/.config/keyport/cli.toml".into(),
        }
    }

    #[test]
    fn connect_hints_name_the_real_address_and_the_first_user() {
        let addr: SocketAddr = "127.0.0.1:40222".parse().unwrap();
        let lines = connect_hints(addr, Some(&first(1)), false);
        assert_eq!(lines[0], "connect: ssh -p 40222 alice@127.0.0.1");
        assert!(
            lines[1].contains("/home/alice/.config/keyport/cli.toml"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2, "{lines:?}");

        let wildcard: SocketAddr = "0.0.0.0:2222".parse().unwrap();
        let lines = connect_hints(wildcard, Some(&first(0)), true);
        assert_eq!(lines[0], "connect: ssh -p 2222 alice@localhost");
        assert!(lines[1].contains("login-key add --user alice"), "{lines:?}");
        assert!(lines[2].contains("run as OS account alice"), "{lines:?}");

        let v6: SocketAddr = "[::1]:2222".parse().unwrap();
        let lines = connect_hints(v6, None, false);
        assert!(
            lines[0].starts_with("connect: ssh -p 2222 USER@::1 "),
            "{lines:?}"
        );
    }

    #[test]
    fn the_root_notice_says_system_wide_and_per_user_accounts() {
        let system = root_notice(Path::new("/var/lib/keyport"));
        assert!(
            system.contains("the system data dir /var/lib/keyport"),
            "{system}"
        );
        assert!(system.contains("own OS account"), "{system}");
        let other = root_notice(Path::new("/srv/kp"));
        assert!(other.contains("data dir /srv/kp"), "{other}");
    }
}
