//! Parsing `secret import` files: dotenv or JSON, into secret specs.
//!
//! The CLI parses and checks a file before anything is sent (so a file picked by mistake never
//! leaves the machine), and the server parses the same content with the same code. Errors name
//! the line (dotenv) or entry (JSON) and never echo a value.
//!
//! - dotenv: `NAME=VALUE` lines, optional `export ` prefix, `#` comments and blank lines;
//!   `"double quoted"` values take `\n \r \t \" \\` escapes, `'single quoted'` ones are literal,
//!   unquoted ones are trimmed. Each becomes a secret named NAME injected as env NAME.
//! - JSON: an object `{"NAME": "VALUE", …}` (same meaning), or an array of secret objects
//!   `[{"name", "value" | "value_base64", "description", "env", "file", "enabled"}, …]`.

use keyport_keys::SecretBytes;
use serde::Deserialize;

use super::{SecretInput, SecretSpec, Violation};

/// The import formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `NAME=VALUE` lines.
    Dotenv,
    /// A JSON object or array.
    Json,
}

impl Format {
    /// Guesses from a file name: `.json` is JSON, anything else dotenv.
    pub fn for_path(path: &str) -> Self {
        if path.ends_with(".json") {
            Format::Json
        } else {
            Format::Dotenv
        }
    }
}

/// Parses `content`; on failure every problem found is returned.
pub fn parse(format: Format, content: &str) -> Result<Vec<SecretSpec>, Vec<Violation>> {
    match format {
        Format::Dotenv => parse_dotenv(content),
        Format::Json => parse_json(content),
    }
}

/// Parses `content` and checks every entry on its own (its rules, and names used twice), so
/// a bad file is reported whole: syntax problems and broken rules together. Conflicts with
/// secrets that already exist are the server's to find.
pub fn check(format: Format, content: &str) -> Result<Vec<SecretSpec>, Vec<Violation>> {
    let (specs, mut problems) = match format {
        Format::Dotenv => parse_dotenv_lenient(content),
        Format::Json => match parse_json(content) {
            Ok(specs) => (specs, Vec::new()),
            Err(problems) => (Vec::new(), problems),
        },
    };
    for (i, spec) in specs.iter().enumerate() {
        for mut v in super::validate::check_spec(spec) {
            v.detail = format!("secret {}: {}", spec.name, v.detail);
            problems.push(v);
        }
        if specs[..i].iter().any(|o| o.name == spec.name) {
            problems.push(Violation::new(
                "name",
                format!("secret {} appears twice", spec.name),
            ));
        }
    }
    if specs.is_empty() && problems.is_empty() {
        problems.push(Violation::new("content", "nothing to import"));
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

fn parse_dotenv(content: &str) -> Result<Vec<SecretSpec>, Vec<Violation>> {
    let (specs, problems) = parse_dotenv_lenient(content);
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

/// The lines that parse, and a problem for each line that does not.
fn parse_dotenv_lenient(content: &str) -> (Vec<SecretSpec>, Vec<Violation>) {
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            problems.push(Violation::new(
                "content",
                format!("line {}: expected NAME=VALUE", i + 1),
            ));
            continue;
        };
        match unquote(value.trim()) {
            Ok(value) => specs.push(env_spec(name.trim(), value)),
            Err(why) => problems.push(Violation::new("content", format!("line {}: {why}", i + 1))),
        }
    }
    (specs, problems)
}

fn unquote(value: &str) -> Result<String, &'static str> {
    if let Some(inner) = value.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_string)
            .ok_or("unterminated single quote");
    }
    let Some(inner) = value.strip_prefix('"') else {
        return Ok(value.to_string());
    };
    let inner = inner.strip_suffix('"').ok_or("unterminated double quote")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            _ => return Err("unknown escape in double quotes (use \\n \\r \\t \\\" \\\\)"),
        }
    }
    Ok(out)
}

fn env_spec(name: &str, value: String) -> SecretSpec {
    SecretSpec {
        name: name.to_string(),
        value: SecretBytes::new(value.into_bytes()),
        description: String::new(),
        env: Some(name.to_string()),
        file: None,
        enabled: None,
    }
}

fn parse_json(content: &str) -> Result<Vec<SecretSpec>, Vec<Violation>> {
    let doc: serde_json::Value = serde_json::from_str(content).map_err(|e| {
        vec![Violation::new(
            "content",
            format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        )]
    })?;
    match doc {
        serde_json::Value::Object(map) => {
            let mut problems = Vec::new();
            let mut specs = Vec::new();
            for (name, value) in map {
                match value {
                    serde_json::Value::String(value) => specs.push(env_spec(&name, value)),
                    _ => problems.push(Violation::new(
                        "content",
                        format!("{name}: value must be a string"),
                    )),
                }
            }
            if problems.is_empty() {
                Ok(specs)
            } else {
                Err(problems)
            }
        }
        serde_json::Value::Array(items) => {
            let mut problems = Vec::new();
            let mut specs = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match serde_json::from_value::<SecretInput>(item) {
                    Ok(entry) => match entry.into_spec() {
                        Ok(spec) => specs.push(spec),
                        Err(why) => {
                            problems.push(Violation::new("content", format!("entry {i}: {why}")))
                        }
                    },
                    Err(e) => problems.push(Violation::new(
                        "content",
                        format!(
                            "entry {i}: {}",
                            crate::secrets::redact_quoted(&e.to_string())
                        ),
                    )),
                }
            }
            if problems.is_empty() {
                Ok(specs)
            } else {
                Err(problems)
            }
        }
        _ => Err(vec![Violation::new(
            "content",
            "JSON must be an object of NAME: VALUE or an array of secrets",
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_forms() {
        let specs = parse(
            Format::Dotenv,
            "# comment\n\nA=plain value \nexport B=\"two\\nlines\"\nC='lit\\n'\nD=\nE=x=y\n",
        )
        .unwrap();
        let got: Vec<(String, Vec<u8>)> = specs
            .iter()
            .map(|s| (s.name.clone(), s.value.expose().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                ("A".to_string(), b"plain value".to_vec()),
                ("B".to_string(), b"two\nlines".to_vec()),
                ("C".to_string(), b"lit\\n".to_vec()),
                ("D".to_string(), b"".to_vec()),
                ("E".to_string(), b"x=y".to_vec()),
            ]
        );
        assert!(
            specs
                .iter()
                .all(|s| s.env.as_deref() == Some(s.name.as_str()))
        );
    }

    #[test]
    fn dotenv_errors_name_lines_and_not_values() {
        let err = parse(Format::Dotenv, "ok=1\nno equals here\nQ=\"secret-ish\n").unwrap_err();
        let details: Vec<String> = err.iter().map(|v| v.detail.clone()).collect();
        assert_eq!(
            details,
            [
                "line 2: expected NAME=VALUE",
                "line 3: unterminated double quote"
            ]
        );
        assert!(err.iter().all(|v| v.field == "content"));
    }

    #[test]
    fn json_object_and_array() {
        let specs = parse(Format::Json, r#"{"A": "1", "B": "2"}"#).unwrap();
        assert_eq!(specs.len(), 2);
        let specs = parse(
            Format::Json,
            r#"[{"name": "f", "value_base64": "AAEC", "file": "~/.f"},
                {"name": "e", "value": "v", "env": "E", "description": "d"}]"#,
        )
        .unwrap();
        assert_eq!(specs[0].value.expose(), &[0, 1, 2]);
        assert_eq!(specs[0].file.as_deref(), Some("~/.f"));
        assert_eq!(specs[1].description, "d");
    }

    #[test]
    fn json_errors_never_echo_values() {
        let err = parse(
            Format::Json,
            r#"[{"name": "a", "value": "v", "value_base64": "dg=="},
                {"name": "b", "enabled": "hunter2"}, {"name": "c"}, 5]"#,
        )
        .unwrap_err();
        assert_eq!(err.len(), 4, "{err:?}");
        let all = format!("{err:?}");
        assert!(!all.contains("hunter2"), "{all}");
        let err = parse(Format::Json, r#"{"A": 1}"#).unwrap_err();
        assert_eq!(err[0].detail, "A: value must be a string");
        assert!(parse(Format::Json, "{").is_err());
        assert!(parse(Format::Json, "\"x\"").is_err());
    }
}
