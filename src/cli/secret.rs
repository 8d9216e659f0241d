//! `keyport secret create|update|delete|import`: the user's secrets, over the API (`list` and
//! `check` are in `secret_list`).
//! Values go in verbatim (from `--value` or stdin) and never come back out. Errors name this
//! command's flags (`--value`, `--enable`), not the API's field names.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use serde_json::json;

use super::input;
use super::output::{self, SecretArg, UsageError};
use crate::client::{Client, segment};
use crate::secrets::import::{self, Format as ImportFormat};
use crate::secrets::lifecycle::{RotateAfter, SecretKind};
use crate::secrets::validate::{self, check_spec};
use crate::secrets::{Lifecycle, SecretMeta, SecretPatch, SecretSpec, Violation, own_rotate_after};
use crate::sources::Reference;
use crate::vault::VaultError;
use keyport_keys::SecretBytes;

/// `keyport secret …`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret; the value comes from --value or stdin (verbatim).
    Create(CreateArgs),
    /// Change a secret; absent flags leave fields as they are, --env "" / --file "" clear.
    Update(UpdateArgs),
    /// List your secrets (metadata only), or show one; AGE is the value's, `!` marks one due
    /// for rotation.
    List(super::secret_list::ListArgs),
    /// Delete a secret (its files are removed from live sessions at once, else at the next
    /// session, if unchanged). Asks on a terminal; without one it goes ahead.
    Delete {
        /// Secret name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// List what is missing: required secrets you lack, and file secrets whose last delivery
    /// failed, with the reason (exit 1 if anything is).
    Check,
    /// Resolve a secret's --source now, as a session would (not from the cache), and say how
    /// that went: ok with its size (and lease), or the error. Never the value.
    Test {
        /// Secret name.
        name: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = output::Format::Table)]
        output: output::Format,
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
    #[arg(long, conflicts_with = "source")]
    pub value: Option<SecretArg>,
    /// Resolve the value at each session start instead of storing one:
    /// vault://MOUNT/PATH#FIELD (KV v2), vault-dyn://PATH#FIELD (leased) or
    /// exec://PROVIDER/KEY.
    #[arg(long, value_name = "REF")]
    pub source: Option<String>,
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
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// `--kind`, `--rotate-after`, `--mask` / `--no-mask` of `secret create` and `update`.
#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// token, password, key, certificate, config or other (decides the default rotation age
    /// and masking).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<SecretKind>,
    /// Its own rotation age: 30d, 12h, never, or default (its kind's, from [rotation]).
    #[arg(long, value_name = "AGE")]
    pub rotate_after: Option<String>,
    /// Mask its value in pty output (default for token, password and key).
    #[arg(long, conflicts_with = "no_mask")]
    pub mask: bool,
    /// Never mask it.
    #[arg(long)]
    pub no_mask: bool,
    /// Refuse sessions when its --source cannot be resolved (default: go on without it, and
    /// say so to interactive sessions).
    #[arg(long, conflicts_with = "no_required")]
    pub required: bool,
    /// Go on without it when its --source cannot be resolved.
    #[arg(long)]
    pub no_required: bool,
}

impl LifecycleArgs {
    /// `--required` / `--no-required`, if either was given.
    fn required(&self) -> Option<bool> {
        match (self.required, self.no_required) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// `--mask` / `--no-mask`, if either was given.
    fn mask(&self) -> Option<bool> {
        match (self.mask, self.no_mask) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// `--rotate-after`, checked here: `None` when absent, `Some(None)` for `default`.
    fn rotate_after(&self) -> Result<Option<Option<RotateAfter>>, VaultError> {
        match &self.rotate_after {
            None => Ok(None),
            Some(text) => own_rotate_after(Some(text))
                .map(Some)
                .map_err(|v| VaultError::Invalid(vec![in_cli_words(v)])),
        }
    }

    /// The flags given, as API body fields.
    fn insert_into(&self, body: &mut serde_json::Map<String, serde_json::Value>) {
        if let Some(kind) = self.kind {
            body.insert("kind".into(), kind.as_str().into());
        }
        if let Some(age) = &self.rotate_after {
            body.insert("rotate_after".into(), age.clone().into());
        }
        if let Some(mask) = self.mask() {
            body.insert("mask".into(), mask.into());
        }
        if let Some(required) = self.required() {
            body.insert("required".into(), required.into());
        }
    }
}

/// `keyport secret update`
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Secret name.
    pub name: String,
    /// New value (or pipe it on stdin); a secret with a --source goes back to a stored value.
    #[arg(long, conflicts_with = "source")]
    pub value: Option<SecretArg>,
    /// Resolve the value from this reference from now on (see `secret create --source`).
    #[arg(long, value_name = "REF")]
    pub source: Option<String>,
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
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// Runs a `secret` subcommand.
pub fn run(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Create(args) => create(args),
        SecretCommand::Update(args) => update(args),
        SecretCommand::List(args) => super::secret_list::list(args),
        SecretCommand::Delete { name, yes } => {
            let client = Client::from_env()?;
            output::confirm_if_terminal(&format!("delete secret {name}?"), yes)?;
            client
                .delete(&format!("users/me/secrets/{}", segment(&name)))
                .map_err(flagged)?;
            println!("deleted secret {name}");
            Ok(())
        }
        SecretCommand::Check => super::secret_list::check(),
        SecretCommand::Test { name, output } => super::secret_list::test(&name, output),
        SecretCommand::Import { file, format } => import_file(&file, format),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let source = args.source.as_deref().map(parse_source).transpose()?;
    let value = match source {
        Some(_) => {
            no_piped_value()?;
            SecretBytes::new(Vec::new())
        }
        None => input::secret_value(args.value.map(|v| v.0), true)?.ok_or_else(|| {
            UsageError("value: give --value or --source, or pipe the value on stdin".into())
        })?,
    };
    let spec = SecretSpec {
        name: args.name,
        value,
        source,
        required: args.lifecycle.required,
        description: args.description,
        env: args.env,
        file: args.file,
        enabled: args.disable.then_some(false),
        lifecycle: Lifecycle {
            kind: args.lifecycle.kind.unwrap_or_default(),
            rotate_after: args.lifecycle.rotate_after()?.flatten(),
            mask: args.lifecycle.mask(),
        },
    };
    local_check(check_spec(&spec))?;
    let mut body = json!({
        "name": spec.name,
        "description": spec.description,
        "env": spec.env,
        "file": spec.file,
        "enabled": spec.enabled,
    });
    match &spec.source {
        Some(source) => body["source"] = source.to_string().into(),
        None => body["value_base64"] = STANDARD.encode(spec.value.expose()).into(),
    }
    if let Some(body) = body.as_object_mut() {
        args.lifecycle.insert_into(body);
    }
    let meta: SecretMeta = client
        .send("POST", "users/me/secrets", &body)
        .map_err(flagged)?;
    println!("created secret {}", describe(&meta));
    Ok(())
}

fn update(args: UpdateArgs) -> anyhow::Result<()> {
    let client = Client::from_env()?;
    let source = args.source.as_deref().map(parse_source).transpose()?;
    let value = match source {
        Some(_) => {
            no_piped_value()?;
            None
        }
        None => input::secret_value(args.value.map(|v| v.0), false)?,
    };
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
        kind: args.lifecycle.kind,
        rotate_after: args.lifecycle.rotate_after()?,
        mask: args.lifecycle.mask(),
        source: source.clone(),
        required: args.lifecycle.required(),
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
    if let Some(source) = &source {
        body.insert("source".into(), source.to_string().into());
    }
    args.lifecycle.insert_into(&mut body);
    let path = format!("users/me/secrets/{}", segment(&args.name));
    let meta: SecretMeta = client.send("PATCH", &path, &body).map_err(flagged)?;
    println!("updated secret {}", describe(&meta));
    let cleared = [&args.env, &args.file]
        .iter()
        .any(|f| f.as_deref() == Some(""));
    if cleared && meta.env.is_none() && meta.file.is_none() {
        eprintln!(
            "note: secret {} is stored, but not injected: it has no target now and is \
             disabled (give --env or --file, and --enable)",
            meta.name
        );
    } else if !meta.enabled && (meta.env.is_some() || meta.file.is_some()) {
        eprintln!(
            "note: secret {} is disabled; --enable to inject it",
            meta.name
        );
    }
    Ok(())
}

/// The API's field names in an error, as this command's flags.
fn flag(field: &str) -> String {
    match field {
        "value" | "value_base64" => "--value".into(),
        "description" => "--description".into(),
        "env" => "--env".into(),
        "file" => "--file".into(),
        "enabled" => "--enable".into(),
        "kind" => "--kind".into(),
        "rotate_after" => "--rotate-after".into(),
        "mask" => "--mask".into(),
        "source" => "--source".into(),
        "required" => "--required".into(),
        "name" => "NAME".into(),
        "body" => "flags".into(),
        other => other.into(),
    }
}

/// A rule, in the CLI's words.
fn in_cli_words(v: Violation) -> Violation {
    let detail = v
        .detail
        .replace(
            "give at least one of value, source, description, env, file, enabled, kind, \
             rotate_after, mask, required",
            "give at least one of --value (or stdin), --source, --description, --env, --file, \
             --enable, --disable, --kind, --rotate-after, --mask, --no-mask, --required, \
             --no-required",
        )
        .replace(
            "give a value or a source, not both",
            "give --value (or stdin) or --source, not both",
        );
    Violation {
        field: flag(&v.field).into(),
        detail,
    }
}

/// An API error, its rules named by this command's flags.
pub(super) fn flagged(e: crate::client::ClientError) -> anyhow::Error {
    match e {
        crate::client::ClientError::Api {
            status,
            validations,
            ..
        } if !validations.is_empty() => {
            let validations: Vec<Violation> = validations.into_iter().map(in_cli_words).collect();
            let message = validations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            crate::client::ClientError::Api {
                status,
                message,
                validations,
            }
            .into()
        }
        other => other.into(),
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
        let problems = problems.into_iter().map(in_cli_words).collect();
        Err(VaultError::Invalid(problems).into())
    }
}

/// `--source` parsed here, its rule in this command's words.
fn parse_source(text: &str) -> Result<Reference, VaultError> {
    crate::secrets::parse_source(text).map_err(|v| VaultError::Invalid(vec![in_cli_words(v)]))
}

/// With `--source`, stdin must not carry a value too.
fn no_piped_value() -> anyhow::Result<()> {
    if input::pipe_has_data()? {
        return Err(UsageError(
            "--source: the value comes from the source; nothing may be piped on stdin".into(),
        )
        .into());
    }
    Ok(())
}

fn describe(meta: &SecretMeta) -> String {
    let mut parts = Vec::new();
    parts.extend(meta.source.as_ref().map(|s| format!("source {s}")));
    parts.extend(meta.env.as_ref().map(|e| format!("env {e}")));
    parts.extend(meta.file.as_ref().map(|f| format!("file {f}")));
    parts.push(if meta.enabled { "enabled" } else { "disabled" }.into());
    format!("{} ({})", meta.name, parts.join(", "))
}
