//! `keyport secret create|update|list|delete|import`: the user's secrets, over the API.
//! Values go in verbatim (from `--value` or stdin) and never come back out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use serde_json::json;

use super::input;
use super::output::{self, Format, SecretArg, UsageError};
use crate::client::{Client, segment};
use crate::secrets::import::{self, Format as ImportFormat};
use crate::secrets::validate::{self, check_spec};
use crate::secrets::{SecretMeta, SecretPatch, SecretSpec, Violation};
use crate::vault::VaultError;

/// `keyport secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret; the value comes from --value or stdin (verbatim).
    Create(CreateArgs),
    /// Change a secret; absent flags leave fields as they are, --env "" / --file "" clear.
    Update(UpdateArgs),
    /// List your secrets (metadata only), or show one.
    List {
        /// Only this secret.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Delete a secret (its files are removed at the next session if unchanged).
    Delete {
        /// Secret name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Import a dotenv or JSON file: checked here first, then all secrets created or none.
    Import {
        /// The file, or - for stdin.
        file: String,
        /// File format (default: json for *.json, else dotenv).
        #[arg(long, value_enum)]
        format: Option<ImportFormatArg>,
    },
}

/// `--format` of `secret import`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportFormatArg {
    /// NAME=VALUE lines.
    Dotenv,
    /// JSON object or array.
    Json,
}

/// `keyport secret create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Secret name.
    pub name: String,
    /// The value (else read verbatim from stdin). Prefer stdin: argv is visible to other
    /// users of the machine.
    #[arg(long)]
    pub value: Option<SecretArg>,
    /// Free text.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Inject as this env var.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Write to this file (~/… or absolute).
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
    /// Create it disabled (not injected).
    #[arg(long)]
    pub disable: bool,
}

/// `keyport secret update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Secret name.
    pub name: String,
    /// New value (or pipe it on stdin).
    #[arg(long)]
    pub value: Option<SecretArg>,
    /// New description ("" clears).
    #[arg(long)]
    pub description: Option<String>,
    /// New env target ("" clears).
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// New file target ("" clears).
    #[arg(long, value_name = "PATH")]
    pub file: Option<String>,
    /// Inject it.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Stop injecting it.
    #[arg(long)]
    pub disable: bool,
}

/// Runs a `secret` subcommand.
pub fn run(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Create(args) => create(args),
        SecretCommand::Update(args) => update(args),
        SecretCommand::List { name, output } => list(name, output),
        SecretCommand::Delete { name, yes } => {
            let client = Client::from_env()?;
            output::confirm(&format!("delete secret {name}?"), yes)?;
            client.delete(&format!("users/me/secrets/{}", segment(&name)))?;
            println!("deleted secret {name}");
            Ok(())
        }
        SecretCommand::Import { file, format } => import_file(&file, format),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let value = input::secret_value(args.value.map(|v| v.0), true)?
        .ok_or_else(|| UsageError("value: give --value, or pipe the value on stdin".into()))?;
    let spec = SecretSpec {
        name: args.name,
        value,
        description: args.description,
        env: args.env,
        file: args.file,
        enabled: args.disable.then_some(false),
    };
    local_check(check_spec(&spec))?;
    let body = json!({
        "name": spec.name,
        "value_base64": STANDARD.encode(spec.value.expose()),
        "description": spec.description,
        "env": spec.env,
        "file": spec.file,
        "enabled": spec.enabled,
    });
    let meta: SecretMeta = client.send("POST", "users/me/secrets", &body)?;
    println!("created secret {}", describe(&meta));
    Ok(())
}

fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let value = input::secret_value(args.value.map(|v| v.0), false)?;
    let enabled = match (args.enable, args.disable) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let patch = SecretPatch {
        value: value.clone(),
        description: args.description.clone(),
        env: args.env.clone(),
        file: args.file.clone(),
        enabled,
    };
    let problems = validate::check_patch(&patch);
    local_check(problems)?;
    let mut body = serde_json::Map::new();
    if let Some(value) = &value {
        body.insert(
            "value_base64".into(),
            STANDARD.encode(value.expose()).into(),
        );
    }
    for (key, field) in [
        ("description", &args.description),
        ("env", &args.env),
        ("file", &args.file),
    ] {
        if let Some(v) = field {
            body.insert(key.into(), v.clone().into());
        }
    }
    if let Some(enabled) = enabled {
        body.insert("enabled".into(), enabled.into());
    }
    let path = format!("users/me/secrets/{}", segment(&args.name));
    let meta: SecretMeta = client.send("PATCH", &path, &body)?;
    println!("updated secret {}", describe(&meta));
    if !meta.enabled && (meta.env.is_some() || meta.file.is_some()) {
        eprintln!(
            "note: secret {} is disabled; --enable to inject it",
            meta.name
        );
    }
    Ok(())
}

fn list(name: Option<String>, output: Format) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let secrets: Vec<SecretMeta> = match &name {
        Some(name) => vec![client.get(&format!("users/me/secrets/{}", segment(name)))?],
        None => client.get("users/me/secrets")?,
    };
    match output {
        Format::Json => output::print_json(&secrets),
        Format::Table => {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            output::print_table(
                &["NAME", "ENV", "FILE", "ENABLED", "UPDATED", "DESCRIPTION"],
                &secrets
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            dash(&s.env),
                            dash(&s.file),
                            if s.enabled { "yes" } else { "no" }.into(),
                            output::time(s.updated_at),
                            s.description.clone(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            Ok(())
        }
    }
}

fn import_file(file: &str, format: Option<ImportFormatArg>) -> anyhow::Result<()> {
    let content = if file == "-" {
        let bytes = input::read_stdin("file", crate::api::MAX_BODY_BYTES)?
            .ok_or_else(|| UsageError("file: stdin is a terminal; give a file".into()))?;
        String::from_utf8(bytes.expose().to_vec())
            .map_err(|_| UsageError("file: content is not UTF-8".into()))?
    } else {
        output::read_arg_file("file", std::path::Path::new(file))?
    };
    let format = match format {
        Some(ImportFormatArg::Dotenv) => ImportFormat::Dotenv,
        Some(ImportFormatArg::Json) => ImportFormat::Json,
        None => ImportFormat::for_path(file),
    };
    // Everything is checked here before anything leaves the machine.
    let (_, problems) = import::check(format, &content);
    local_check(problems)?;
    let client = Client::from_env()?;
    let body = json!({ "format": format, "content": content });
    let created: Vec<SecretMeta> = client.send("POST", "users/me/secrets:import", &body)?;
    let names: Vec<&str> = created.iter().map(|s| s.name.as_str()).collect();
    println!("imported {} secrets: {}", created.len(), names.join(", "));
    Ok(())
}

/// Fails with every violation, before anything is sent.
fn local_check(problems: Vec<Violation>) -> anyhow::Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VaultError::Invalid(problems).into())
    }
}

fn describe(meta: &SecretMeta) -> String {
    let mut parts = Vec::new();
    parts.extend(meta.env.as_ref().map(|e| format!("env {e}")));
    parts.extend(meta.file.as_ref().map(|f| format!("file {f}")));
    parts.push(if meta.enabled { "enabled" } else { "disabled" }.into());
    format!("{} ({})", meta.name, parts.join(", "))
}
