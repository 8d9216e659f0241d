//! `keyport serve`: start-up (data dir, master key, host key, first user), then the SSH and
//! HTTP listeners until SIGTERM or SIGINT, when both stop accepting, tell their clients, and
//! wait for their tasks.

use std::net::SocketAddr;

use clap::Args;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use std::sync::Arc;

use crate::metrics::DaemonMetrics;
use crate::shared::VaultHandle;
use crate::{api, bootstrap, ssh};

/// `keyport serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
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
    println!("keyport data dir: {}", vault.data_dir().display());
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
    runtime.block_on(async move {
        // Handlers first, then "ready": a SIGTERM right after the ready line must be caught.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = CancellationToken::new();
        let vault = VaultHandle::new(vault);
        let metrics = Arc::new(DaemonMetrics::default());
        let tasks = TaskTracker::new();
        let router = api::router(api::AppState::new(vault.clone(), metrics.clone()));
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
        let (stop, http) = (shutdown.clone(), config.http.clone());
        tasks.spawn(async move {
            if let Err(e) = api::serve(api, router, stop.cancelled_owned(), &http).await {
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
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
