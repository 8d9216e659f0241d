//! The OpenAPI document against the router: valid JSON and OpenAPI 3.x, every `$ref`
//! resolves, every operation has responses and declares its path parameters, operationIds are
//! unique, security schemes exist, and its operations are exactly the routes the router serves
//! (none missing, none extra, none answered by the fallback or with 405).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{API_ROUTES, Http, Sandbox};
use serde_json::Value;

const OPERATIONS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn collect_refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let here = format!("{at}/{k}");
                if k == "$ref" {
                    out.push((
                        here.clone(),
                        v.as_str().unwrap_or("<not a string>").to_string(),
                    ));
                }
                collect_refs(v, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn template_params(path: &str) -> BTreeSet<String> {
    path.split('{')
        .skip(1)
        .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn openapi_document_is_valid_and_lists_every_route() {
    let sb = Sandbox::new();
    let daemon = sb.serve();
    let token = sb.bootstrap_token();
    let anon = Http::new(&daemon.url, None);
    let reply = anon.get("openapi.json");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let doc: Value = serde_json::from_str(&reply.body).expect("openapi.json is JSON");
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "openapi {version}");
    serde_json::from_str::<utoipa::openapi::OpenApi>(&reply.body)
        .expect("openapi.json is an OpenAPI document");
    // And an independent validator of the OpenAPI 3.x schema agrees.
    common::require_tool("python3");
    let file = sb.dir.path().join("openapi.json");
    std::fs::write(&file, &reply.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document (scripts/test installs it):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut problems = Vec::new();

    // Every $ref resolves to something under components.
    let mut refs = Vec::new();
    collect_refs(&doc, "", &mut refs);
    assert!(
        !refs.is_empty(),
        "no $ref at all: the check below would be vacuous"
    );
    for (at, target) in &refs {
        let ok = target.starts_with("#/components/")
            && doc.pointer(&target[1..]).is_some_and(|v| !v.is_null());
        if !ok {
            problems.push(format!("{at}: $ref {target} points at nothing"));
        }
    }

    // Operations: responses, path parameters, and the (method, path) set.
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    // operationId → the operations using it (OpenAPI: it MUST be unique).
    let mut operation_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let schemes = doc["components"]["securitySchemes"].as_object();
    for (path, item) in paths {
        let item = item.as_object().expect("path item");
        let declared = template_params(path);
        let shared: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for (method, op) in item {
            if !OPERATIONS.contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            if let Some(id) = op["operationId"].as_str() {
                operation_ids
                    .entry(id.to_string())
                    .or_default()
                    .push(format!("{} {path}", method.to_uppercase()));
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !schemes.is_some_and(|s| s.contains_key(scheme)) {
                        problems.push(format!(
                            "{method} {path}: security scheme {scheme} is not in components/securitySchemes"
                        ));
                    }
                }
            }
            let responses = op["responses"].as_object();
            if responses.is_none_or(|r| r.is_empty()) {
                problems.push(format!("{method} {path}: no responses"));
            }
            let own: Vec<&Value> = op
                .get("parameters")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let in_path: BTreeMap<String, &Value> = shared
                .iter()
                .chain(own.iter())
                .filter(|p| p["in"] == "path")
                .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), *p))
                .collect();
            for name in &declared {
                match in_path.get(name) {
                    None => problems.push(format!(
                        "{method} {path}: path parameter {{{name}}} is not declared in: path"
                    )),
                    Some(p) if p["required"] != true => problems.push(format!(
                        "{method} {path}: path parameter {name} is not required"
                    )),
                    Some(_) => {}
                }
            }
            for name in in_path.keys() {
                if !declared.contains(name) {
                    problems.push(format!(
                        "{method} {path}: parameter {name} is in: path but not in the path"
                    ));
                }
            }
        }
    }
    for (id, ops) in &operation_ids {
        if ops.len() > 1 {
            problems.push(format!(
                "operationId {id} is used by {} operations: {}",
                ops.len(),
                ops.join(", ")
            ));
        }
    }
    let expected: BTreeSet<(String, String)> = API_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), format!("/api/v1/{p}")))
        .collect();
    for missing in expected.difference(&documented) {
        problems.push(format!(
            "route not in the document: {} {}",
            missing.0, missing.1
        ));
    }
    for extra in documented.difference(&expected) {
        problems.push(format!(
            "document lists a route the test does not know: {} {}",
            extra.0, extra.1
        ));
    }

    // Every documented operation is served: not the fallback, not 405.
    let h = Http::new(&daemon.url, Some(&token));
    let fallback = h.get("no-such-route-here");
    assert_eq!(fallback.status, 404, "{}", fallback.body);
    assert!(
        fallback.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such route")),
        "the fallback's answer changed, so the check below would prove nothing: {}",
        fallback.body
    );
    assert_eq!(h.delete("healthz").status, 405, "a wrong method is 405");
    for (method, path) in &documented {
        let rel = path
            .strip_prefix("/api/v1/")
            .unwrap_or_else(|| panic!("{path} is not under /api/v1/"))
            .replace("{user}", "me")
            .replace("{name}", "fuzz-dummy")
            .replace("{fingerprint}", "SHA256%3Afuzz-dummy");
        let reply = if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
            h.raw(method, &rel, Some(b"{}"), None)
        } else {
            h.raw(method, &rel, None, None)
        };
        let is_fallback = reply.status == 404
            && serde_json::from_str::<Value>(&reply.body)
                .ok()
                .and_then(|v| {
                    v["message"]
                        .as_str()
                        .map(|m| m.starts_with("no such route"))
                })
                .unwrap_or(false);
        if is_fallback || reply.status == 405 {
            problems.push(format!(
                "{method} {path} is documented but not served: {} {}",
                reply.status, reply.body
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "openapi.json problems:\n{}\n",
        problems.join("\n")
    );
}
