//! `keyport login`: check a server URL and token, then save them (0600) for the CLI.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use super::output::{SecretArg, UsageError};
use crate::client::Client;
use crate::config::ClientConfig;
use crate::store::UserRecord;

/// `keyport login`
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The keyport API URL, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "KEYPORT_URL")]
    pub url: String,
    /// The token (else read from stdin, so it stays out of shell history and argv).
    #[arg(long)]
    pub token: Option<SecretArg>,
}

/// Runs `keyport login`.
pub fn run(args: LoginArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(token) => token.0,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("token: ");
                std::io::stderr().flush()?;
            }
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        return Err(UsageError("token: give --token or type it on stdin".into()).into());
    }
    let client = Client::new(&args.url, &token);
    let me: UserRecord = client.get("users/me")?;
    let path = ClientConfig::path();
    ClientConfig {
        url: client.url().to_string(),
        token,
    }
    .write(&path)?;
    println!(
        "logged in to {} as {}; credentials in {}",
        client.url(),
        me.name,
        path.display()
    );
    Ok(())
}
