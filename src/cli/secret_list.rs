//! `keyport secret list`, `keyport secret check` and `keyport secret test`: what you have (kind,
//! source, age, rotation due, deliveries), what is missing (required secrets you lack, files
//! that were not written), and whether a source answers.

use clap::Args;

use super::output::{self, Format};
use super::secret::flagged;
use crate::client::{Client, segment};
use crate::secrets::SecretMeta;
use crate::secrets::lifecycle::SecretKind;
use crate::sources::Tested;
use crate::store::now_ms;
use crate::vault::RequiredStatus;

/// `keyport secret list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this secret.
    pub name: Option<String>,
    /// Only secrets of this kind.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<SecretKind>,
    /// Only secrets due for rotation (older than their rotate-after).
    #[arg(long)]
    pub stale: bool,
    /// Output format. `-o json` can be fed back to `keyport secret import` once each entry
    /// has its value again.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// `secret list`.
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let mut secrets: Vec<SecretMeta> = match &args.name {
        // The listing carries deliveries; one secret is picked from it.
        Some(name) => {
            let all: Vec<SecretMeta> = client.get("users/me/secrets").map_err(flagged)?;
            match all.into_iter().find(|s| s.name == *name) {
                Some(one) => vec![one],
                None => vec![
                    client
                        .get(&format!("users/me/secrets/{}", segment(name)))
                        .map_err(flagged)?,
                ],
            }
        }
        None => client.get("users/me/secrets").map_err(flagged)?,
    };
    secrets.retain(|s| args.kind.is_none_or(|k| s.kind == k) && (!args.stale || s.stale));
    match args.output {
        Format::Json => output::print_json(&secrets),
        Format::Table => {
            print_table(&secrets);
            Ok(())
        }
    }
}

/// A value's age for the table: `97d`, `5h`, `now`; `!` after it when due for rotation.
fn age(secret: &SecretMeta, now: i64) -> String {
    let text = crate::when::age(now.saturating_sub(secret.value_updated_at));
    if secret.stale {
        format!("{text} ! (rotate every {})", secret.rotate_after_effective)
    } else {
        text
    }
}

fn print_table(secrets: &[SecretMeta]) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let now = now_ms();
    output::print_table(
        &[
            "NAME",
            "KIND",
            "SOURCE",
            "ENV",
            "FILE",
            "ENABLED",
            "AGE",
            "DELIVERED",
            "DESCRIPTION",
        ],
        &secrets
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.kind.to_string(),
                    match (&s.source, s.required) {
                        (Some(source), true) => format!("{source} (required)"),
                        (Some(source), false) => source.clone(),
                        (None, _) => "stored".into(),
                    },
                    dash(&s.env),
                    dash(&s.file),
                    if s.enabled { "yes" } else { "no" }.into(),
                    age(s, now),
                    delivered(s),
                    s.description.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// A file secret's last delivery, for the table: `written`, `FAILED (why)`, per place when
/// there are several; `-` for a secret never delivered as a file.
fn delivered(secret: &SecretMeta) -> String {
    let one = |d: &crate::secrets::DeliveryMeta| match (&*d.outcome, &d.reason) {
        ("failed", Some(why)) => format!("FAILED ({why})"),
        ("failed", None) => "FAILED".to_string(),
        (outcome, _) => outcome.to_string(),
    };
    match secret.deliveries.as_slice() {
        [] => "-".into(),
        [only] => one(only),
        many => many
            .iter()
            .map(|d| format!("{}: {}", d.place, one(d)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// `secret check`: required secrets you lack, then file secrets whose last delivery failed;
/// exit 1 if anything is listed.
pub fn check() -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let required: Vec<RequiredStatus> = client.get("users/me/required").map_err(flagged)?;
    let mut problems = 0;
    for r in required.iter().filter(|r| !r.satisfied) {
        problems += 1;
        let what = match (&r.env, &r.file) {
            (Some(env), Some(file)) => format!("{env} (env) and {file}"),
            (Some(env), None) => format!("{env} (env)"),
            (None, Some(file)) => file.clone(),
            (None, None) => "-".into(),
        };
        let about = if r.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", r.description)
        };
        let place = if r.workspaces.is_empty() {
            String::new()
        } else {
            format!(" [for {}]", r.workspaces.join(", "))
        };
        let mode = match r.mode {
            crate::config::RequiredMode::Warn => "required",
            crate::config::RequiredMode::Block => "required, sessions refused without it",
        };
        println!("missing {what}{about}{place} ({mode}): {}", r.fix);
    }
    let secrets: Vec<SecretMeta> = client.get("users/me/secrets").map_err(flagged)?;
    for secret in &secrets {
        for d in secret.deliveries.iter().filter(|d| d.outcome == "failed") {
            problems += 1;
            println!(
                "{}: not written to {} (account {}, {}): {}",
                secret.name,
                d.path,
                d.place,
                output::time(d.at),
                d.reason.as_deref().unwrap_or("unknown reason")
            );
        }
    }
    if problems == 0 {
        println!(
            "all clear: every required secret is set, and every file secret was delivered at \
             its last session"
        );
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "{problems} problems (missing required secrets, failed file deliveries)"
    ))
}

/// `secret test NAME`: resolves its source as a session would and prints how that went;
/// exit 1 when it gave no value.
pub fn test(name: &str, format: Format) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let path = format!("users/me/secrets/{}/test", segment(name));
    let report: Tested = client
        .send("POST", &path, &serde_json::json!({}))
        .map_err(flagged)?;
    let ok = report.outcome == "ok";
    match format {
        Format::Json => output::print_json(&report)?,
        Format::Table if ok => {
            let mut line = format!(
                "ok: {} from {}: {} bytes",
                report.name,
                report.source,
                report.bytes.unwrap_or(0)
            );
            if let Some(ttl) = report.lease_ttl_secs {
                line.push_str(&format!(", lease {ttl}s"));
                if report.renewable == Some(true) {
                    line.push_str(" (renewable)");
                }
                if report.lease_revoked {
                    line.push_str(", revoked after the test");
                }
            }
            println!("{line} ({} ms)", report.latency_ms);
        }
        Format::Table => println!(
            "failed: {} from {}: {}",
            report.name,
            report.source,
            report.error.as_deref().unwrap_or("no value")
        ),
    }
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("secret {name}: its source gave no value"))
    }
}
