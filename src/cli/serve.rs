//! `keyport serve`: start-up (data dir, master key, host key, first user), then run until
//! SIGTERM or SIGINT.

use std::net::SocketAddr;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::bootstrap;
use crate::config::Config;

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
    let startup = bootstrap::prepare(&mut vault, &format!("http://{}", config.api_listen))?;
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Handlers first, then "ready": a SIGTERM right after the ready line must be caught.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        info!(ssh = %config.ssh_listen, api = %config.api_listen, "keyport ready");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    info!("shutting down");
    Ok(())
}
