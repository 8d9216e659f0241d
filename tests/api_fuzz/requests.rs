//! Every request of the fuzzing run, in a fixed order (the seeded PRNG is drawn from only by
//! the mutations at the end): the method sweep, bad tokens, the wrong user, odd paths, oversized
//! bodies, a few fixed cases and seeded body mutations. None of them may change anything.

use serde_json::{Value, json};

use crate::bodies::{BodyRoute, body_routes, mutate};
use crate::common::API_ROUTES;
use crate::paths::{odd_segment_requests, odd_target_requests};
use crate::raw::{Expect, Req, pct};
use crate::{CANARY, Rng, World};

/// Routes that answer without a token.
const PUBLIC: &[&str] = &["healthz", "metrics", "openapi.json"];

/// Methods tried on every route (standard, unusual, made up, wrong case).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
    "M-SEARCH", "FOO", "get",
];

const MAX_BODY: usize = 2 * 1024 * 1024;

/// The bodies that would succeed at the body-taking routes, so they are only ever sent
/// unauthorized, by the wrong user or to the wrong place.
pub(crate) struct Bases {
    pub(crate) create: Vec<u8>,
    pub(crate) patch: Vec<u8>,
    pub(crate) import: Vec<u8>,
    pub(crate) key: Vec<u8>,
    pub(crate) login: Vec<u8>,
    pub(crate) token: Vec<u8>,
    pub(crate) user: Vec<u8>,
    pub(crate) workspace: Vec<u8>,
    pub(crate) grant: Vec<u8>,
    pub(crate) host_keys: Vec<u8>,
}

/// Builds every request of the fuzzing run. None of them may change anything.
pub(crate) fn requests(w: &World, rng: &mut Rng) -> Vec<Req> {
    let routes = body_routes(w);
    let base_of = |method: &str, path: &str| -> Option<Vec<u8>> {
        routes
            .iter()
            .find(|r| r.method == method && r.path == path)
            .map(|r| r.base.to_string().into_bytes())
    };
    let bases = Bases {
        create: base_of("POST", "users/me/secrets").unwrap(),
        patch: base_of("PATCH", "users/me/secrets/alpha").unwrap(),
        import: base_of("POST", "users/me/secrets:import").unwrap(),
        key: base_of("PUT", "users/me/key").unwrap(),
        login: base_of("POST", "users/me/login-keys").unwrap(),
        token: base_of("POST", "users/me/tokens").unwrap(),
        user: base_of("POST", "users").unwrap(),
        workspace: base_of("POST", "workspaces").unwrap(),
        grant: base_of("PUT", "workspaces/fz-dev/grants/nobody-here").unwrap(),
        host_keys: base_of("PUT", "workspaces/fz-dev/host-keys").unwrap(),
    };

    let mut out = method_sweep(w);
    out.extend(bad_tokens(w, &bases));
    out.extend(wrong_user(w, &bases));
    out.extend(odd_segment_requests(w, &bases));
    out.extend(odd_target_requests(w));
    out.extend(oversized(w, &routes));
    out.extend(fixed_cases(w, &bases));
    out.extend(mutations(w, &routes, rng));
    out
}

/// Every method on every route: with the admin's token and no body, with a broken body, and
/// without a token. Names that exist nowhere, so no DELETE can succeed.
fn method_sweep(w: &World) -> Vec<Req> {
    let mut out = Vec::new();
    let mut templates: Vec<&str> = API_ROUTES.iter().map(|(_, p)| *p).collect();
    templates.dedup();
    for tmpl in &templates {
        let user_fill = if *tmpl == "users/{user}" {
            "no-such-user"
        } else {
            "me"
        };
        let path = tmpl
            .replace("{user}", user_fill)
            .replace("{name}", "no-such-name")
            .replace("{fingerprint}", "SHA256:no-such-fingerprint");
        for method in METHODS {
            let writes = matches!(*method, "POST" | "PUT" | "PATCH" | "DELETE");
            let expect = if writes { Expect::Fail } else { Expect::Any };
            out.push(
                Req::new(method, &path)
                    .bearer(&w.admin)
                    .expect(expect)
                    .note("method sweep, no body"),
            );
            out.push(
                Req::new(method, &path)
                    .bearer(&w.admin)
                    .json(b"{".to_vec())
                    .expect(expect)
                    .note("method sweep, broken body"),
            );
            let public = PUBLIC.contains(tmpl) && matches!(*method, "GET" | "HEAD");
            out.push(
                Req::new(method, &path)
                    .expect(if public { Expect::Any } else { Expect::Fail })
                    .note("method sweep, no token"),
            );
        }
    }
    out
}

/// Requests that would succeed with the admin's token, sent with a missing, malformed or wrong
/// one: each must be 401 (public routes aside).
fn bad_tokens(w: &World, bases: &Bases) -> Vec<Req> {
    let mut out = Vec::new();
    let valid_ops: Vec<(&str, String, Option<Vec<u8>>)> = vec![
        ("GET", "users/me/secrets".into(), None),
        (
            "POST",
            "users/me/secrets".into(),
            Some(bases.create.clone()),
        ),
        ("GET", "users/me/secrets/alpha".into(), None),
        (
            "PATCH",
            "users/me/secrets/alpha".into(),
            Some(bases.patch.clone()),
        ),
        ("DELETE", "users/me/secrets/alpha".into(), None),
        (
            "POST",
            "users/me/secrets:import".into(),
            Some(bases.import.clone()),
        ),
        ("GET", "users/me/key".into(), None),
        ("PUT", "users/me/key".into(), Some(bases.key.clone())),
        ("GET", "users/me/login-keys".into(), None),
        (
            "POST",
            "users/me/login-keys".into(),
            Some(bases.login.clone()),
        ),
        (
            "DELETE",
            format!("users/me/login-keys/{}", w.login_fp_enc),
            None,
        ),
        ("GET", "users/me/tokens".into(), None),
        ("POST", "users/me/tokens".into(), Some(bases.token.clone())),
        ("DELETE", "users/me/tokens/fuzz-second".into(), None),
        (
            "DELETE",
            format!("users/me/tokens/{}", pct(&w.boot_token_name)),
            None,
        ),
        ("GET", "users".into(), None),
        ("POST", "users".into(), Some(bases.user.clone())),
        ("GET", "users/bob".into(), None),
        ("DELETE", "users/bob".into(), None),
        ("GET", "workspaces".into(), None),
        ("POST", "workspaces".into(), Some(bases.workspace.clone())),
        ("GET", "workspaces/fz-dev".into(), None),
        (
            "PUT",
            "workspaces/fz-dev/host-keys".into(),
            Some(bases.host_keys.clone()),
        ),
        (
            "PUT",
            "workspaces/fz-dev/grants/bob".into(),
            Some(bases.grant.clone()),
        ),
        ("DELETE", "workspaces/fz-dev/grants/bob".into(), None),
        ("DELETE", "workspaces/fz-dev".into(), None),
        ("GET", "audit".into(), None),
        ("GET", "healthz".into(), None),
        ("GET", "metrics".into(), None),
        ("GET", "openapi.json".into(), None),
    ];
    let t = &w.admin;
    let mut flipped = t.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // (header name, header value or none, whether the answer must be exactly 401)
    let auths: Vec<(&str, Option<Vec<u8>>, bool)> = vec![
        ("Authorization", None, true),
        ("Authorization", Some(b"".to_vec()), true),
        ("Authorization", Some(b"Bearer".to_vec()), true),
        ("Authorization", Some(b"Bearer ".to_vec()), true),
        ("Authorization", Some(b"Bearer    ".to_vec()), true),
        ("Authorization", Some(b"Basic Zm9vOmJhcg==".to_vec()), true),
        ("Authorization", Some(b"Basic x".to_vec()), true),
        (
            "Authorization",
            Some(b"Digest username=\"root\"".to_vec()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {}", "A".repeat(10_000)).into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some("Bearer tökén".as_bytes().to_vec()),
            true,
        ),
        ("Authorization", Some(b"Bearer \xff\xfe\xfd".to_vec()), true),
        ("Authorization", Some(b"Bearer \x01\x02".to_vec()), false),
        (
            "Authorization",
            Some(format!("Bearer {t}x").into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {}", &t[..t.len() - 1]).into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {flipped}").into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer{t}").into_bytes()),
            true,
        ),
        (
            "Authorization",
            Some(format!("Bearer {t} {t}").into_bytes()),
            true,
        ),
        ("Authorization", Some(b"Bearer null".to_vec()), true),
        ("Authorization", Some(b"Bearer ' OR '1'='1".to_vec()), true),
        (
            "Authorization",
            Some(b"Bearer ../../etc/passwd".to_vec()),
            true,
        ),
        ("Authorization", Some(b"Bearer %00".to_vec()), true),
        (
            "Authorization",
            Some(format!("Bearer kpt_{}", "A".repeat(43)).into_bytes()),
            true,
        ),
        (
            "Authorisation",
            Some(format!("Bearer {t}").into_bytes()),
            true,
        ),
        (
            "X-Authorization",
            Some(format!("Bearer {t}").into_bytes()),
            true,
        ),
    ];
    for (i, (header, value, strict)) in auths.iter().enumerate() {
        for (method, path, body) in &valid_ops {
            let public = PUBLIC.contains(&path.as_str());
            let mut r = Req::new(method, path).note(format!("bad token #{i}"));
            if let Some(v) = value {
                r = r.header(header, v);
            }
            if let Some(b) = body {
                r = r.json(b.clone());
            }
            r.expect = match (public, strict) {
                (true, _) => Expect::Any,
                (false, true) => Expect::Status(401),
                (false, false) => Expect::Fail,
            };
            out.push(r);
        }
    }
    out
}

/// Valid requests by the wrong user: bob on the admin's things and on admin-only routes (the
/// workspace changes among them, on the one granted to him too), the admin on bob's secrets,
/// key and tokens. All 403.
fn wrong_user(w: &World, bases: &Bases) -> Vec<Req> {
    let mut out = Vec::new();
    let a = &w.admin_name;
    let forbidden: Vec<(&str, &str, String, Option<Vec<u8>>)> = vec![
        (w.bob.as_str(), "GET", "users".into(), None),
        (
            w.bob.as_str(),
            "POST",
            "users".into(),
            Some(bases.user.clone()),
        ),
        (w.bob.as_str(), "DELETE", format!("users/{a}"), None),
        (w.bob.as_str(), "DELETE", "users/bob".into(), None),
        (w.bob.as_str(), "GET", format!("users/{a}"), None),
        (w.bob.as_str(), "GET", format!("users/{a}/secrets"), None),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/secrets"),
            Some(bases.create.clone()),
        ),
        (
            w.bob.as_str(),
            "GET",
            format!("users/{a}/secrets/alpha"),
            None,
        ),
        (
            w.bob.as_str(),
            "PATCH",
            format!("users/{a}/secrets/alpha"),
            Some(bases.patch.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("users/{a}/secrets/alpha"),
            None,
        ),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/secrets:import"),
            Some(bases.import.clone()),
        ),
        (w.bob.as_str(), "GET", format!("users/{a}/key"), None),
        (
            w.bob.as_str(),
            "PUT",
            format!("users/{a}/key"),
            Some(bases.key.clone()),
        ),
        (w.bob.as_str(), "GET", format!("users/{a}/login-keys"), None),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/login-keys"),
            Some(bases.login.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("users/{a}/login-keys/{}", w.login_fp_enc),
            None,
        ),
        (w.bob.as_str(), "GET", format!("users/{a}/tokens"), None),
        (
            w.bob.as_str(),
            "POST",
            format!("users/{a}/tokens"),
            Some(bases.token.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("users/{a}/tokens/fuzz-second"),
            None,
        ),
        (w.bob.as_str(), "GET", format!("audit?user={a}"), None),
        (
            w.bob.as_str(),
            "POST",
            "workspaces".into(),
            Some(bases.workspace.clone()),
        ),
        (
            w.bob.as_str(),
            "PUT",
            "workspaces/fz-dev/host-keys".into(),
            Some(bases.host_keys.clone()),
        ),
        (
            w.bob.as_str(),
            "PUT",
            "workspaces/fz-dev/grants/bob".into(),
            Some(bases.grant.clone()),
        ),
        (
            w.bob.as_str(),
            "PUT",
            "workspaces/fz-dev/grants/me".into(),
            Some(bases.grant.clone()),
        ),
        (
            w.bob.as_str(),
            "DELETE",
            format!("workspaces/fz-dev/grants/{a}"),
            None,
        ),
        (w.bob.as_str(), "DELETE", "workspaces/fz-dev".into(), None),
        (w.admin.as_str(), "GET", "users/bob/secrets".into(), None),
        (
            w.admin.as_str(),
            "POST",
            "users/bob/secrets".into(),
            Some(bases.create.clone()),
        ),
        (
            w.admin.as_str(),
            "GET",
            "users/bob/secrets/bob-secret".into(),
            None,
        ),
        (
            w.admin.as_str(),
            "PATCH",
            "users/bob/secrets/bob-secret".into(),
            Some(bases.patch.clone()),
        ),
        (
            w.admin.as_str(),
            "DELETE",
            "users/bob/secrets/bob-secret".into(),
            None,
        ),
        (
            w.admin.as_str(),
            "POST",
            "users/bob/secrets:import".into(),
            Some(bases.import.clone()),
        ),
        (w.admin.as_str(), "GET", "users/bob/key".into(), None),
        (
            w.admin.as_str(),
            "PUT",
            "users/bob/key".into(),
            Some(bases.key.clone()),
        ),
        (w.admin.as_str(), "GET", "users/bob/tokens".into(), None),
        (
            w.admin.as_str(),
            "POST",
            "users/bob/tokens".into(),
            Some(bases.token.clone()),
        ),
        (
            w.admin.as_str(),
            "DELETE",
            "users/bob/tokens/bob-laptop".into(),
            None,
        ),
    ];
    for (tok, method, path, body) in forbidden {
        let mut r = Req::new(method, &path)
            .bearer(tok)
            .expect(Expect::Status(403))
            .note("wrong user");
        if let Some(b) = body {
            r = r.json(b);
        }
        out.push(r);
    }
    out
}

/// Bodies over the 2 MiB limit: 413 with a valid token and a JSON content type, by
/// Content-Length or chunked; refused some other way otherwise.
fn oversized(w: &World, routes: &[BodyRoute]) -> Vec<Req> {
    let mut out = Vec::new();
    let huge = |n: usize| -> Vec<u8> {
        let mut b = b"{\"name\":\"huge\",\"value\":\"".to_vec();
        b.resize(n - 2, b'A');
        b.extend_from_slice(b"\"}");
        b
    };
    let three_mib = huge(3 * 1024 * 1024);
    for r in routes {
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .json(three_mib.clone())
                .expect(Expect::Status(413))
                .note("3 MiB"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .json(three_mib.clone())
                .chunked()
                .expect(Expect::Status(413))
                .note("3 MiB chunked"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .json(huge(MAX_BODY + 1))
                .expect(Expect::Status(413))
                .note("limit + 1"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .json(three_mib.clone())
                .expect(Expect::Fail)
                .note("3 MiB, no token"),
        );
        out.push(
            Req::new(r.method, &r.path)
                .bearer(&w.admin)
                .body_as(three_mib.clone(), Some(b"text/plain"))
                .expect(Expect::Fail)
                .note("3 MiB, text/plain"),
        );
    }
    out.push(
        Req::new("GET", "users/me/secrets")
            .bearer(&w.admin)
            .json(three_mib.clone())
            .note("3 MiB on a GET"),
    );
    out.push(
        Req::new("DELETE", "users/me/secrets/no-such-name")
            .bearer(&w.admin)
            .json(three_mib)
            .expect(Expect::Fail)
            .note("3 MiB on a DELETE"),
    );
    out
}

/// A few fixed cases, so that what they show does not depend on the PRNG: a login-key body with
/// no key in it, and request values with a double quote inside (error messages must not echo
/// them).
fn fixed_cases(w: &World, bases: &Bases) -> Vec<Req> {
    let mut out = Vec::new();
    for (method, path, body) in [
        (
            "POST",
            "users/me/login-keys",
            json!({"public_key": ""}).to_string(),
        ),
        (
            "POST",
            "users/me/login-keys",
            json!({"public_key": "# only a comment\n"}).to_string(),
        ),
        (
            "PATCH",
            "users/me/secrets/alpha",
            json!({"enabled": format!("x\"{CANARY}")}).to_string(),
        ),
        (
            "POST",
            "users/me/secrets",
            json!({"name": "fresh-q", "value": CANARY, "enabled": format!("\"{CANARY}\"")})
                .to_string(),
        ),
        (
            "POST",
            "users/me/secrets:import",
            Value::String(String::from_utf8(bases.import.clone()).unwrap()).to_string(),
        ),
    ] {
        out.push(
            Req::new(method, path)
                .bearer(&w.admin)
                .json(body)
                .expect(Expect::Fail)
                .note("fixed case"),
        );
    }
    out
}

/// Seeded random mutations of the bodies that would be valid.
fn mutations(w: &World, routes: &[BodyRoute], rng: &mut Rng) -> Vec<Req> {
    let mut out = Vec::new();
    for _ in 0..900 {
        let r = rng.pick(routes);
        let (what, body, ct) = mutate(rng, r);
        let mut req = Req::new(r.method, &r.path)
            .bearer(&w.admin)
            .body_as(body, ct)
            .expect(Expect::Fail)
            .note(format!("mutation: {what}"));
        if rng.below(10) == 0 {
            req = req.chunked();
        }
        out.push(req);
    }
    out
}
