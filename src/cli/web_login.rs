//! `keyport web-login`: a one-time link that signs a browser in to keyport's web pages as
//! you. The link alone goes to stdout (for a script or `xdg-open`), how long it works to stderr.

use clap::Args;

use super::output::{self, Format};
use crate::api::WebLinkCreated;
use crate::client::Client;

/// `keyport web-login`
#[derive(Debug, Args)]
pub struct WebLoginArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// Runs `keyport web-login`.
pub fn run(args: WebLoginArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let link: WebLinkCreated = client.send("POST", "users/me/web-login", &serde_json::json!({}))?;
    match args.output {
        Format::Json => output::print_json(&link)?,
        Format::Table => {
            println!("{}", link.url);
            eprintln!(
                "keyport: open this link in your browser within {}; it signs you in once",
                humantime::format_duration(std::time::Duration::from_secs(link.expires_in_secs))
            );
        }
    }
    Ok(())
}
