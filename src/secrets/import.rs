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
//!   `[{"name", "value" | "value_base64", "description", "env", "file", "enabled", "kind",
//!   "rotate_after", "mask"}, …]` — what `secret list -o json` prints, once each entry has its
//!   value again (the read-only fields it also prints are ignored).

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
    let (entries, problems) = parse_lenient(format, content);
    if problems.is_empty() {
        Ok(entries.into_iter().map(|(_, spec)| spec).collect())
    } else {
        Err(problems)
    }
}

/// Parses `content` and checks every entry on its own (its rules, and names used twice): the
/// entries that pass, and every problem found — syntax and broken rules together, so a bad
/// file is reported whole. Conflicts with existing secrets are the server's to find.
///
/// Problems name an entry as `secret NAME` only when NAME is a valid name; otherwise by line
/// (dotenv) or position (JSON), because a line that does not parse may be part of a value.
pub fn check(format: Format, content: &str) -> (Vec<SecretSpec>, Vec<Violation>) {
    let (entries, mut problems) = parse_lenient(format, content);
    let mut specs: Vec<SecretSpec> = Vec::new();
    for (place, spec) in entries {
        let label = match super::validate::check_name(&spec.name) {
            Ok(()) => format!("secret {}", spec.name),
            Err(_) => place,
        };
        let own = super::validate::check_spec(&spec);
        let twice = specs.iter().any(|o| o.name == spec.name);
        if twice {
            problems.push(super::about(
                &label,
                Violation::new("name", "appears twice"),
            ));
        }
        if own.is_empty() && !twice {
            specs.push(spec);
        }
        problems.extend(own.into_iter().map(|v| super::about(&label, v)));
    }
    if specs.is_empty() && problems.is_empty() {
        problems.push(Violation::new("content", "nothing to import"));
    }
    (specs, problems)
}

/// Every entry that parses, with where it came from, and a problem for each that does not.
fn parse_lenient(format: Format, content: &str) -> (Vec<(String, SecretSpec)>, Vec<Violation>) {
    match format {
        Format::Dotenv => parse_dotenv(content),
        Format::Json => parse_json(content),
    }
}

fn parse_dotenv(content: &str) -> (Vec<(String, SecretSpec)>, Vec<Violation>) {
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("line {}", i + 1);
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            problems.push(Violation::new(
                "content",
                format!("{place}: expected NAME=VALUE"),
            ));
            continue;
        };
        match unquote(value.trim()) {
            Ok(value) => specs.push((place, env_spec(name.trim(), value))),
            Err(why) => problems.push(Violation::new("content", format!("{place}: {why}"))),
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
        source: None,
        required: false,
        name: name.to_string(),
        value: SecretBytes::new(value.into_bytes()),
        description: String::new(),
        env: Some(name.to_string()),
        file: None,
        enabled: None,
        lifecycle: Default::default(),
    }
}

/// A JSON document's top level, keeping an object's keys in order and with duplicates (serde's
/// maps keep only the last of a repeated key, which would hide a mistake).
enum Document {
    Object(Vec<(String, serde_json::Value)>),
    Array(Vec<serde_json::Value>),
    Other,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> serde::de::Visitor<'de> for Top {
            type Value = Document;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Document, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Document::Object(pairs))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Document, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Document::Array(items))
            }
            fn visit_str<E>(self, _: &str) -> Result<Document, E> {
                Ok(Document::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Document, E> {
                Ok(Document::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Document, E> {
                Ok(Document::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Document, E> {
                Ok(Document::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Document, E> {
                Ok(Document::Other)
            }
            fn visit_unit<E>(self) -> Result<Document, E> {
                Ok(Document::Other)
            }
        }
        d.deserialize_any(Top)
    }
}

/// Fields of `secret list -o json` an import ignores: times, delivery records and what is
/// worked out from the others, so a listing (with values added) imports as it was.
const READ_ONLY: [&str; 7] = [
    "created_at",
    "updated_at",
    "value_updated_at",
    "rotate_after_effective",
    "stale",
    "masked",
    "deliveries",
];

fn parse_json(content: &str) -> (Vec<(String, SecretSpec)>, Vec<Violation>) {
    let doc: Document = match serde_json::from_str(content) {
        Ok(doc) => doc,
        Err(e) => {
            let detail = format!("not valid JSON (line {}, column {})", e.line(), e.column());
            return (Vec::new(), vec![Violation::new("content", detail)]);
        }
    };
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    match doc {
        Document::Object(pairs) => {
            for (i, (name, value)) in pairs.into_iter().enumerate() {
                let place = format!("key {}", i + 1);
                match value {
                    serde_json::Value::String(value) => specs.push((place, env_spec(&name, value))),
                    _ => problems.push(Violation::new(
                        "content",
                        format!("{place}: the value must be a string"),
                    )),
                }
            }
        }
        Document::Array(items) => {
            for (i, mut item) in items.into_iter().enumerate() {
                let place = format!("entry {}", i + 1);
                // What `secret list -o json` adds that is not the user's to set.
                if let Some(entry) = item.as_object_mut() {
                    for key in READ_ONLY {
                        entry.remove(key);
                    }
                }
                match serde_json::from_value::<SecretInput>(item) {
                    Ok(entry) => match entry.into_spec() {
                        Ok(spec) => specs.push((place, spec)),
                        Err(v) => problems.push(super::about(&place, v)),
                    },
                    Err(e) => problems.push(Violation::new(
                        "content",
                        format!("{place}: {}", super::safe_serde_message(&e.to_string())),
                    )),
                }
            }
        }
        Document::Other => problems.push(Violation::new(
            "content",
            "JSON must be an object of NAME: VALUE or an array of secrets",
        )),
    }
    (specs, problems)
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
        assert_eq!(err[0].detail, "key 1: the value must be a string");
        assert!(parse(Format::Json, "{").is_err());
        assert!(parse(Format::Json, "\"x\"").is_err());
    }

    #[test]
    fn a_listing_with_its_values_imports_as_it_was() {
        let listed = r#"[{"name": "gh", "description": "GitHub", "env": "GH_TOKEN",
            "file": null, "enabled": true, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "kind": "token", "rotate_after": "30d",
            "mask": false, "value_updated_at": "2026-01-01T00:00:00Z",
            "rotate_after_effective": "30d", "stale": true, "masked": false,
            "deliveries": [], "value": "ghp_x"}]"#;
        let specs = parse(Format::Json, listed).expect("imports");
        let gh = &specs[0];
        assert_eq!(
            gh.lifecycle.kind,
            crate::secrets::lifecycle::SecretKind::Token
        );
        assert_eq!(
            gh.lifecycle.rotate_after,
            Some(crate::secrets::lifecycle::RotateAfter::Secs(30 * 86_400))
        );
        assert_eq!(gh.lifecycle.mask, Some(false));
        assert_eq!(gh.env.as_deref(), Some("GH_TOKEN"));
        // An unknown field is still refused, naming it.
        let err = parse(
            Format::Json,
            r#"[{"name": "a", "value": "b", "kidn": "token"}]"#,
        )
        .expect_err("refused");
        assert!(err[0].detail.contains("kidn"), "{:?}", err);
    }
}
