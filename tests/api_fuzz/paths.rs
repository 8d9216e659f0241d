//! Odd paths: path segments that name nothing that exists, put in every parameter position,
//! and whole request-targets the router must refuse or route harmlessly.

use std::collections::BTreeSet;

use crate::World;
use crate::raw::{Expect, Req, pct_decode, short};
use crate::requests::Bases;

/// Path segments that name nothing that exists: traversal, NUL, bad escapes, bad UTF-8, case
/// and whitespace variants, 10k characters, unicode, raw non-ASCII bytes.
pub(crate) fn odd_segments() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "..",
        ".",
        "..%2f..%2fetc",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "%2e%2e%2f%2e%2e",
        "me%2f..%2f..",
        "x%2f..%2falpha",
        "%00",
        "alpha%00",
        "me%00",
        "%ff",
        "%c3%28",
        "%ed%a0%80",
        "%c0%ae%c0%ae",
        "%",
        "%zz",
        "%%",
        "%2",
        "ALPHA",
        "Alpha",
        "alpha%20",
        "%20alpha",
        "alpha%0a",
        "alpha%09",
        "ME",
        "Me",
        "me%20",
        "%20me",
        "%e2%80%aeahpla",
        "%f0%9f%94%91",
        "%e5%90%8d%e5%89%8d",
        "%ef%bc%a1lpha",
        "alpha;",
        "alpha'--",
        "%22alpha%22",
        "$(id)",
        "*",
        "%2a",
        "~",
        "-",
        "_",
        "SHA256:",
        "SHA256:%2f%2f%2f",
        "sha256:x",
        "null",
        "undefined",
        "%7buser%7d",
        "{name}",
        "a%2fb",
        "+",
        "alpha+",
        "%u002e",
        "secrets:import",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    out.push("a".repeat(10_000).into_bytes());
    out.push(format!("SHA256:{}", "A".repeat(10_000)).into_bytes());
    out.push("%c3%a9".repeat(3_000).into_bytes());
    out.push(b"\xc3\xa9t\xc3\xa9".to_vec());
    out.push(b"\xff".to_vec());
    out.push(b"a b".to_vec());
    out.push(b"a\tb".to_vec());
    out
}

/// Whole request-targets: empty segments, dot segments, other versions, case, queries.
pub(crate) fn odd_targets() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "/",
        "*",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v2/users",
        "//api/v1/users",
        "/api//v1/users",
        "/API/V1/USERS",
        "/api/v1/users/",
        "/api/v1/users//secrets",
        "/api/v1/users/me/secrets/",
        "/api/v1/users/me//secrets",
        "/api/v1/users/me/../..",
        "/api/v1/users/me/../../etc/passwd",
        "/api/v1/../../../etc/passwd",
        "/api/v1/users/me/secrets:import/",
        "/api/v1/users/me/secrets:export",
        "/api/v1/users/me/secrets%3aimport",
        "/api/v1/users/me/secrets%3Aimport",
        "/api/v1/healthz?x=%ff",
        "/api/v1/audit?since=garbage",
        "/api/v1/audit?since=",
        "/api/v1/audit?user=%ff",
        "/api/v1/audit?user=bob&user=root",
        "/api/v1/audit?bogus=1",
        "/api/v1/audit?since=99999999999999999999d",
        "/api/v1/audit?since=-1h",
        "/api/v1/audit?since=1970-01-01T00:00:00Z",
        "/api/v1/audit?since=9999-12-31T23:59:59Z",
        "/api/v1/audit?since=0000-00-00T00:00:00Z",
        "/api/v1/audit?since=18446744073709551615s",
        "/api/v1/audit?since=1ns",
        "/api/v1/audit?since=%00",
        "/api/v1/audit?",
        "/api/v1/audit?&&&",
        "/api/v1/audit?user=",
        "/api/v1/audit?user=nobody-here",
        "/api/v1/audit?since[]=1",
        "/api/v1/users?x=1",
        "/api/v1/healthz#frag",
        "/api/v1/users/me/secrets?name=x",
        "/api/v1/users/me/key?algorithm=rsa",
        "http://127.0.0.1/api/v1/healthz",
        "http://127.0.0.1/api/v1/users",
        "/api/v1/users/me/secrets/%2e%2e/%2e%2e",
        "/api/v1/users/me%2fsecrets",
        "/api/v1/%75sers",
        "/api/v1/users/me/secrets/alpha/extra",
        "/api/v1/users/me/tokens/",
        "/api/v1/users/me/login-keys/",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    out.push(format!("/api/v1/{}", "a/".repeat(5_000)).into_bytes());
    out.push(format!("/api/v1/users/{}", "u".repeat(10_000)).into_bytes());
    out.push(format!("/api/v1/users/me/secrets/{}", "%2f".repeat(3_000)).into_bytes());
    out.push(format!("/api/v1/audit?since={}", "9".repeat(10_000)).into_bytes());
    out.push(format!("/api/v1/audit?user={}", "u".repeat(10_000)).into_bytes());
    out.push(b"/api/v1/users/\xc3\xa9".to_vec());
    out.push(b"/api/v1/\x7f".to_vec());
    out.push(b"api/v1/healthz".to_vec());
    out
}

/// Odd path segments in every parameter position, with bodies that would be valid at the right
/// place. None of them decodes to a name that exists.
pub(crate) fn odd_segment_requests(w: &World, bases: &Bases) -> Vec<Req> {
    let mut out = Vec::new();
    let a = &w.admin_name;
    let protected: BTreeSet<Vec<u8>> = [
        "me",
        a.as_str(),
        "bob",
        "alpha",
        "beta",
        "gamma",
        "delta",
        "bob-secret",
        "fuzz-second",
        "bob-laptop",
        "fz-dev",
        w.boot_token_name.as_str(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let fp_enc = &w.login_fp_enc;
    let positions: Vec<(&str, String, Option<Vec<u8>>, Expect)> = vec![
        ("GET", "users/{}/secrets".into(), None, Expect::Any),
        (
            "POST",
            "users/{}/secrets".into(),
            Some(bases.create.clone()),
            Expect::Fail,
        ),
        ("GET", "users/me/secrets/{}".into(), None, Expect::Any),
        (
            "PATCH",
            "users/me/secrets/{}".into(),
            Some(bases.patch.clone()),
            Expect::Fail,
        ),
        ("DELETE", "users/me/secrets/{}".into(), None, Expect::Fail),
        (
            "DELETE",
            "users/{}/secrets/alpha".into(),
            None,
            Expect::Fail,
        ),
        (
            "POST",
            "users/{}/secrets:import".into(),
            Some(bases.import.clone()),
            Expect::Fail,
        ),
        (
            "PUT",
            "users/{}/key".into(),
            Some(bases.key.clone()),
            Expect::Fail,
        ),
        (
            "POST",
            "users/{}/login-keys".into(),
            Some(bases.login.clone()),
            Expect::Fail,
        ),
        (
            "DELETE",
            "users/me/login-keys/{}".into(),
            None,
            Expect::Fail,
        ),
        (
            "DELETE",
            format!("users/{{}}/login-keys/{fp_enc}"),
            None,
            Expect::Fail,
        ),
        (
            "POST",
            "users/{}/tokens".into(),
            Some(bases.token.clone()),
            Expect::Fail,
        ),
        ("DELETE", "users/me/tokens/{}".into(), None, Expect::Fail),
        (
            "DELETE",
            "users/{}/tokens/fuzz-second".into(),
            None,
            Expect::Fail,
        ),
        ("GET", "users/{}".into(), None, Expect::Any),
        ("DELETE", "users/{}".into(), None, Expect::Fail),
        ("GET", "workspaces/{}".into(), None, Expect::Any),
        ("DELETE", "workspaces/{}".into(), None, Expect::Fail),
        (
            "PUT",
            "workspaces/{}/host-keys".into(),
            Some(bases.host_keys.clone()),
            Expect::Fail,
        ),
        (
            "PUT",
            "workspaces/fz-dev/grants/{}".into(),
            Some(bases.grant.clone()),
            Expect::Fail,
        ),
        (
            "DELETE",
            "workspaces/fz-dev/grants/{}".into(),
            None,
            Expect::Fail,
        ),
        ("GET", "audit?user={}".into(), None, Expect::Any),
        ("GET", "audit?since={}".into(), None, Expect::Any),
    ];
    for seg in odd_segments() {
        assert!(
            !protected.contains(&pct_decode(&seg)),
            "test bug: odd segment {} names something that exists",
            short(&seg, 40)
        );
        for (method, tmpl, body, expect) in &positions {
            let (before, after) = tmpl.split_once("{}").unwrap();
            let mut path = before.as_bytes().to_vec();
            path.extend_from_slice(&seg);
            path.extend_from_slice(after.as_bytes());
            let mut r = Req::new(method, path)
                .bearer(&w.admin)
                .expect(*expect)
                .note("odd segment");
            if let Some(b) = body {
                r = r.json(b.clone());
            }
            out.push(r);
        }
    }
    out
}

/// Odd request-targets with read methods, DELETE and a broken POST.
pub(crate) fn odd_target_requests(w: &World) -> Vec<Req> {
    let mut out = Vec::new();
    for target in odd_targets() {
        for (method, expect) in [
            ("GET", Expect::Any),
            ("HEAD", Expect::Any),
            ("OPTIONS", Expect::Any),
            ("DELETE", Expect::Fail),
            ("POST", Expect::Fail),
        ] {
            let mut r = Req::raw_target(method.as_bytes(), target.clone())
                .bearer(&w.admin)
                .expect(expect)
                .note("odd target");
            if method == "POST" {
                r = r.json(b"{\"name\":".to_vec());
            }
            out.push(r);
        }
    }
    out
}
