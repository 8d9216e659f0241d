//! `keyport audit`: your audit events (every user's for admins), names only, never values.

use clap::Args;

use super::output::{self, Format};
use crate::client::{Client, segment};
use crate::store::AuditRecord;

/// `keyport audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events since: RFC 3339 or an age (15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this user's events (admins).
    #[arg(long)]
    pub user: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// Events asked for per request.
const PAGE: usize = 1000;

/// Runs `keyport audit`.
pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let mut query = Vec::new();
    if let Some(since) = &args.since {
        query.push(format!("since={}", segment(since)));
    }
    if let Some(user) = &args.user {
        query.push(format!("user={}", segment(user)));
    }
    // Page by page (the server sends at most 1000 at a time), following the last id.
    let mut events: Vec<AuditRecord> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.id);
        let mut page_query = query.clone();
        page_query.push(format!("limit={PAGE}"));
        page_query.push(format!("after={after}"));
        let page: Vec<AuditRecord> = client.get(&format!("audit?{}", page_query.join("&")))?;
        let last = page.len() < PAGE;
        events.extend(page);
        if last {
            break;
        }
    }
    match args.output {
        Format::Json => output::print_json(&events)?,
        Format::Table => output::print_table(
            &["TIME", "ACTOR", "USER", "ACTION", "SECRET", "DETAIL"],
            &events
                .iter()
                .map(|e| {
                    vec![
                        output::time(e.at),
                        e.actor.clone(),
                        e.user_name.clone(),
                        e.action.clone(),
                        e.secret_name.clone().unwrap_or_else(|| "-".into()),
                        e.detail.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}
