//! `keyport whoami`: who the API knows you as, and which API that is — the URL from
//! `KEYPORT_URL` or the saved login, or the session's socket inside a keyport session (where
//! no login is needed).

use clap::Args;
use serde::Serialize;

use super::output::{self, Format};
use crate::client::Client;
use crate::store::UserRecord;

/// `keyport whoami`
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// What `whoami` prints.
#[derive(Debug, Serialize)]
struct Whoami {
    name: String,
    admin: bool,
    api: String,
}

/// Runs `keyport whoami`.
pub fn run(args: WhoamiArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let me: UserRecord = client.get("users/me")?;
    let who = Whoami {
        name: me.name,
        admin: me.is_admin,
        api: client.url(),
    };
    match args.output {
        Format::Json => output::print_json(&who)?,
        Format::Table => {
            println!("user:  {}", who.name);
            println!("admin: {}", if who.admin { "yes" } else { "no" });
            println!("api:   {}", who.api);
        }
    }
    Ok(())
}
