//! The JSON bodies of the fuzzing run: which fields each body-taking route accepts (and how
//! each may be broken), a body that would succeed at each route, bodies that break one of its
//! rules, and the seeded mutations that turn a valid body into a certainly invalid one.

use serde_json::{Value, json};

use crate::common::me;
use crate::{CANARY, Rng, World};

/// How a body field may be broken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    StrList,
    Format,
}

#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    /// `Option<_>` in the body type: null is a valid value.
    nullable: bool,
    /// Must be present.
    required: bool,
}

const fn field(name: &'static str, kind: Kind, nullable: bool, required: bool) -> Field {
    Field {
        name,
        kind,
        nullable,
        required,
    }
}

const SECRET_CREATE: &[Field] = &[
    field("name", Kind::Str, false, true),
    field("value", Kind::Str, true, false),
    field("value_base64", Kind::Str, true, false),
    field("description", Kind::Str, false, false),
    field("env", Kind::Str, true, false),
    field("file", Kind::Str, true, false),
    field("enabled", Kind::Bool, true, false),
];
const SECRET_PATCH: &[Field] = &[
    field("value", Kind::Str, true, false),
    field("value_base64", Kind::Str, true, false),
    field("description", Kind::Str, true, false),
    field("env", Kind::Str, true, false),
    field("file", Kind::Str, true, false),
    field("enabled", Kind::Bool, true, false),
];
const IMPORT: &[Field] = &[
    field("format", Kind::Format, false, true),
    field("content", Kind::Str, false, true),
];
const KEY: &[Field] = &[field("algorithm", Kind::Str, true, false)];
const LOGIN_KEYS: &[Field] = &[field("public_key", Kind::Str, false, true)];
const TOKENS: &[Field] = &[field("name", Kind::Str, false, true)];
const USERS: &[Field] = &[
    field("name", Kind::Str, false, true),
    field("admin", Kind::Bool, false, false),
    field("os_user", Kind::Str, true, false),
    field("login_keys", Kind::StrList, false, false),
    field("key_type", Kind::Str, true, false),
];
const WORKSPACE: &[Field] = &[
    field("name", Kind::Str, false, true),
    field("address", Kind::Str, false, true),
    field("os_user", Kind::Str, false, true),
    field("owners", Kind::StrList, false, true),
    field("host_keys", Kind::StrList, false, true),
];
const GRANT: &[Field] = &[
    field("os_user", Kind::Str, true, false),
    field("owner", Kind::Bool, false, false),
];
const HOST_KEYS: &[Field] = &[field("host_keys", Kind::StrList, false, true)];

/// `base` with the fields of `patch` set as `patch` has them.
fn with(base: &Value, patch: Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Value::Object(p)) = (out.as_object_mut(), patch) {
        o.extend(p);
    }
    out
}

/// A route that takes a JSON body, a body that would succeed there (so it is only ever sent
/// broken, unauthorized or to the wrong place), and bodies that break a rule of the route.
pub(crate) struct BodyRoute {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    fields: &'static [Field],
    /// A field whose string value no valid request can contain a lone surrogate in.
    ident: &'static str,
    pub(crate) base: Value,
    /// Whether `{every field: null}` would be a valid request.
    all_null_valid: bool,
    invalid: Vec<Value>,
}

pub(crate) fn body_routes(w: &World) -> Vec<BodyRoute> {
    let me_os = me().name;
    let long = |n: usize| "x".repeat(n);
    let workspace = json!({"name": "fz-new", "address": "127.0.0.1:22", "os_user": "dev",
                           "owners": [w.admin_name], "host_keys": [w.fresh_line]});
    let private_key = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n-----END OPENSSH PRIVATE KEY-----\n"
    );
    // Host key lists that are not keys, for the workspace routes that take them.
    let bad_host_keys = [
        json!([]),
        json!([""]),
        json!(["ssh-ed25519 AAAA"]),
        json!([CANARY]),
        json!([private_key]),
        json!([w.fresh_line, "nope"]),
        json!([format!("fz.internal {}", w.fresh_line)]),
    ];
    vec![
        BodyRoute {
            method: "POST",
            path: "users/me/secrets".into(),
            fields: SECRET_CREATE,
            ident: "name",
            base: json!({"name": "fresh-one", "value": CANARY, "description": "fuzz",
                         "env": "FRESH_ONE", "enabled": true}),
            all_null_valid: false,
            invalid: vec![
                json!({"name": "", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "bad name", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "-lead", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "a".repeat(65), "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "ünïcode", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "me/../x", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "nul\u{0}byte", "value": CANARY, "env": "FRESH_A"}),
                json!({"name": "fresh-a", "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": "", "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": CANARY, "value_base64": "eA==", "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value_base64": format!("***{CANARY}"), "file": "~/.fz/a"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "PATH"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "ld_preload"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "SSH_AUTH_SOCK"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "1ABC"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "A-B"}),
                json!({"name": "fresh-a", "value": CANARY, "env": ""}),
                json!({"name": "fresh-a", "value": CANARY, "env": "E".repeat(300)}),
                json!({"name": "fresh-a", "value": CANARY, "file": "relative/path"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/../etc/passwd"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/etc/"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/a//b"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/a/./b"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "/a\u{0}b"}),
                json!({"name": "fresh-a", "value": CANARY, "file": format!("/{}", long(5000))}),
                json!({"name": "fresh-a", "value": format!("{CANARY}{}", long(70_000)), "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": CANARY, "env": "FRESH_A", "description": long(1100)}),
                json!({"name": "fresh-a", "value": CANARY, "env": "FRESH_A", "description": "bell\u{7}"}),
                json!({"name": "fresh-a", "value": format!("{CANARY}\u{0}"), "env": "FRESH_A"}),
                json!({"name": "fresh-a", "value": CANARY, "enabled": true}),
                json!({"name": "alpha", "value": CANARY}),
                json!({"name": "fresh-a", "value": CANARY, "env": "alpha_token"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/.fz/beta"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/.fz/beta/inside"}),
                json!({"name": "fresh-a", "value": CANARY, "file": "~/.fz"}),
            ],
        },
        BodyRoute {
            method: "PATCH",
            path: "users/me/secrets/alpha".into(),
            fields: SECRET_PATCH,
            ident: "env",
            base: json!({"value": CANARY, "description": "fuzzed"}),
            all_null_valid: false,
            invalid: vec![
                json!({}),
                json!({"value": ""}),
                json!({"value": CANARY, "value_base64": "eA=="}),
                json!({"value_base64": format!("%%%{CANARY}")}),
                json!({"value": format!("{CANARY}{}", long(70_000))}),
                json!({"value": format!("{CANARY}\u{0}")}),
                json!({"env": "PATH"}),
                json!({"env": "XDG_CONFIG_HOME"}),
                json!({"env": "9LIVES"}),
                json!({"env": "DELTA_ENV_TAKEN"}),
                json!({"env": "delta_env_taken"}),
                json!({"file": "relative"}),
                json!({"file": "~/.fz/beta"}),
                json!({"file": "~/.fz/beta/x"}),
                json!({"file": "/x/../y"}),
                json!({"description": long(1100)}),
                json!({"description": "nl\nnl"}),
                json!({"env": "", "enabled": true}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users/me/secrets:import".into(),
            fields: IMPORT,
            ident: "format",
            base: json!({"format": "dotenv", "content": format!("FRESH_TWO={CANARY}\n")}),
            all_null_valid: false,
            invalid: vec![
                json!({"format": "dotenv", "content": format!("NOEQUALS{CANARY}")}),
                json!({"format": "dotenv", "content": format!("1BAD={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_X={CANARY}\nALPHA_TOKEN={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_X={CANARY}\nFRESH_X={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_X={CANARY}\nPATH={CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_Y=\"{CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_Y='{CANARY}")}),
                json!({"format": "dotenv", "content": format!("FRESH_Z={CANARY}{}", long(70_000))}),
                json!({"format": "dotenv", "content": format!("FRESH_Z={CANARY}\n{}", "\u{0}=x")}),
                json!({"format": "json", "content": "{"}),
                json!({"format": "json", "content": format!("[{{\"name\":\"fresh-z\",\"description\":\"{CANARY}\"}}]")}),
                json!({"format": "json", "content": "{\"FRESH_Q\": 5}"}),
                json!({"format": "json", "content": format!("[{{\"name\":\"alpha\",\"value\":\"{CANARY}\"}}]")}),
                json!({"format": "json", "content": format!("[{{\"name\":\"fresh-q\",\"value\":\"{CANARY}\",\"bogus\":1}}]")}),
                json!({"format": "json", "content": format!("[{{\"name\":\"fresh-q\",\"value\":\"{CANARY}\",\"env\":\"FRESH_Q\"}},{{\"name\":\"fresh-r\",\"value\":\"{CANARY}\",\"env\":\"fresh_q\"}}]")}),
                json!({"format": "json", "content": format!("\"{CANARY}\"")}),
                json!({"format": "json", "content": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}),
                json!({"format": "yaml", "content": format!("a: {CANARY}")}),
                json!({"format": "DOTENV", "content": format!("FRESH_X={CANARY}")}),
            ],
        },
        BodyRoute {
            method: "PUT",
            path: "users/me/key".into(),
            fields: KEY,
            ident: "algorithm",
            base: json!({"algorithm": "ecdsa-p256"}),
            all_null_valid: true,
            invalid: vec![
                json!({"algorithm": "rsa"}),
                json!({"algorithm": ""}),
                json!({"algorithm": "ssh-rsa"}),
                json!({"algorithm": "dsa"}),
                json!({"algorithm": "ecdsa-p384"}),
                json!({"algorithm": "ed25519 "}),
                json!({"algorithm": " ed25519"}),
                json!({"algorithm": "ed25519\u{0}"}),
                json!({"algorithm": long(10_000)}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users/me/login-keys".into(),
            fields: LOGIN_KEYS,
            ident: "public_key",
            base: json!({"public_key": w.fresh_line}),
            all_null_valid: false,
            invalid: vec![
                json!({"public_key": ""}),
                json!({"public_key": CANARY}),
                json!({"public_key": "ssh-ed25519"}),
                json!({"public_key": "ssh-ed25519 AAAA"}),
                json!({"public_key": "ssh-ed25519 !!!!not-base64!!!!"}),
                json!({"public_key": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ"}),
                json!({"public_key": format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n-----END OPENSSH PRIVATE KEY-----\n")}),
                json!({"public_key": w.login_line}),
                json!({"public_key": format!("{}\n{CANARY}", w.fresh_line)}),
                json!({"public_key": format!("{}\nssh-ed25519 AAAA", w.fresh_line)}),
                json!({"public_key": format!("{}\n{}", w.fresh_line, w.login_line)}),
                json!({"public_key": long(100_000)}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users/me/tokens".into(),
            fields: TOKENS,
            ident: "name",
            base: json!({"name": "fresh-token"}),
            all_null_valid: false,
            invalid: vec![
                json!({"name": ""}),
                json!({"name": "bad name"}),
                json!({"name": "-lead"}),
                json!({"name": "a".repeat(65)}),
                json!({"name": "tök"}),
                json!({"name": "x/y"}),
                json!({"name": w.boot_token_name}),
                json!({"name": "fuzz-second"}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "users".into(),
            fields: USERS,
            ident: "name",
            base: json!({"name": "fresh-user", "admin": false, "os_user": me_os,
                         "login_keys": [w.fresh_line], "key_type": "ed25519"}),
            all_null_valid: false,
            invalid: vec![
                json!({"name": "me", "os_user": me_os}),
                json!({"name": w.admin_name, "os_user": me_os}),
                json!({"name": "bob", "os_user": me_os}),
                json!({"name": "", "os_user": me_os}),
                json!({"name": "bad name", "os_user": me_os}),
                json!({"name": "a".repeat(65), "os_user": me_os}),
                json!({"name": "fresh-user", "os_user": me_os, "key_type": "rsa"}),
                json!({"name": "fresh-user", "os_user": me_os, "key_type": ""}),
                json!({"name": "fresh-user", "os_user": me_os, "login_keys": [CANARY]}),
                json!({"name": "fresh-user", "os_user": me_os, "login_keys": [w.fresh_line, "garbage"]}),
                // A key type with no key (a blank line would be skipped, as authorized_keys does).
                json!({"name": "fresh-user", "os_user": me_os, "login_keys": ["ssh-ed25519"]}),
            ],
        },
        BodyRoute {
            method: "POST",
            path: "workspaces".into(),
            fields: WORKSPACE,
            ident: "name",
            invalid: [
                json!({"name": ""}),
                json!({"name": "a:b"}),
                json!({"name": "-lead"}),
                json!({"name": "a".repeat(65)}),
                json!({"name": "fz-dev"}),
                json!({"address": ""}),
                json!({"address": "nohost"}),
                json!({"address": "h:0"}),
                json!({"address": "h:70000"}),
                json!({"address": "h:22a"}),
                json!({"address": "::1:22"}),
                json!({"address": "[nope]:22"}),
                json!({"address": "-x:22"}),
                json!({"address": format!("{}:22", long(300))}),
                json!({"os_user": ""}),
                json!({"os_user": "-oProxyCommand"}),
                json!({"os_user": "1000"}),
                json!({"os_user": "a b"}),
                json!({"os_user": long(33)}),
                json!({"owners": []}),
                json!({"owners": [""]}),
                json!({"owners": ["nobody-here"]}),
            ]
            .into_iter()
            .chain(bad_host_keys.iter().map(|k| json!({ "host_keys": k })))
            .map(|patch| with(&workspace, patch))
            .collect(),
            base: workspace,
            all_null_valid: false,
        },
        // No body at all is a valid grant (the workspace's login), and the mutations can make
        // an empty one: the user named does not exist, so a valid body is a 404 here and only
        // a broken one is a 400 — nothing is granted either way.
        BodyRoute {
            method: "PUT",
            path: "workspaces/fz-dev/grants/nobody-here".into(),
            fields: GRANT,
            ident: "os_user",
            base: json!({"os_user": "fz-login", "owner": false}),
            all_null_valid: false,
            invalid: vec![
                json!({"os_user": ""}),
                json!({"os_user": "-x"}),
                json!({"os_user": "1000"}),
                json!({"os_user": "a:b"}),
                json!({"os_user": long(33)}),
                json!({"owner": null}),
                json!({"owner": "yes"}),
                json!({"login": "fz-login"}),
            ],
        },
        BodyRoute {
            method: "PUT",
            path: "workspaces/fz-dev/host-keys".into(),
            fields: HOST_KEYS,
            // Any string there is invalid: the field is a list.
            ident: "host_keys",
            base: json!({"host_keys": [w.fresh_line]}),
            all_null_valid: false,
            invalid: bad_host_keys
                .iter()
                .map(|k| json!({ "host_keys": k }))
                .collect(),
        },
    ]
}

/// A wrong-typed value for a field of `kind` (null when the field is not an `Option`).
fn wrong_value(rng: &mut Rng, f: &Field) -> Value {
    let mut choices: Vec<Value> = match f.kind {
        Kind::Str => vec![
            json!(0),
            json!(-1),
            json!(1.5),
            json!(true),
            json!(false),
            json!([]),
            json!([CANARY]),
            json!({}),
            json!({"k": CANARY}),
            json!(u64::MAX),
        ],
        Kind::Bool => vec![
            json!(CANARY),
            json!(format!("a\"{CANARY}")),
            json!("true"),
            json!(""),
            json!(0),
            json!(1),
            json!([]),
            json!([true]),
            json!({}),
        ],
        Kind::StrList => vec![
            json!(CANARY),
            json!(0),
            json!({}),
            json!([0]),
            json!([null]),
            json!([[]]),
            json!(true),
        ],
        Kind::Format => vec![
            json!("xml"),
            json!("DOTENV"),
            json!("Json"),
            json!(""),
            json!(0),
            json!([]),
            json!({}),
            json!(["dotenv"]),
        ],
    };
    if !f.nullable {
        choices.push(Value::Null);
    }
    rng.pick(&choices).clone()
}

const UNKNOWN_FIELDS: &[&str] = &[
    "zzz",
    "Name",
    "NAME",
    "name ",
    " name",
    "value\u{0}",
    "__proto__",
    "constructor",
    "",
    "id",
    "user",
    "is_admin",
    "token",
    "ünknown",
];

/// The base body, mutated so that it is certainly invalid.
pub(crate) fn mutate(rng: &mut Rng, r: &BodyRoute) -> (String, Vec<u8>, Option<&'static [u8]>) {
    let obj = r.base.as_object().unwrap().clone();
    let text = r.base.to_string();
    let json_ct: Option<&'static [u8]> = Some(b"application/json");
    match rng.below(16) {
        0 => {
            let f = rng.pick(r.fields);
            let mut o = obj.clone();
            o.insert(f.name.into(), wrong_value(rng, f));
            (
                "wrong type".into(),
                Value::Object(o).to_string().into_bytes(),
                json_ct,
            )
        }
        1 => {
            let mut o = obj.clone();
            let name = *rng.pick(UNKNOWN_FIELDS);
            let value = rng
                .pick(&[json!(1), json!(null), json!(CANARY), json!({}), json!([])])
                .clone();
            o.insert(name.into(), value);
            (
                "unknown field".into(),
                Value::Object(o).to_string().into_bytes(),
                json_ct,
            )
        }
        2 => {
            let required: Vec<&Field> = r.fields.iter().filter(|f| f.required).collect();
            let mut o = obj.clone();
            if required.is_empty() {
                o.insert("bogus".into(), json!(true));
                (
                    "unknown field (no required)".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else {
                o.remove(rng.pick(&required).name);
                (
                    "required field missing".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            }
        }
        3 => {
            let o: serde_json::Map<String, Value> = r
                .fields
                .iter()
                .map(|f| (f.name.to_string(), Value::Null))
                .collect();
            if r.all_null_valid {
                let mut o = o;
                o.insert("nulls".into(), Value::Null);
                (
                    "all null + unknown".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else {
                (
                    "all null".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            }
        }
        4 => {
            let choices: Vec<Vec<u8>> = vec![
                b"null".to_vec(),
                b"0".to_vec(),
                b"\"str\"".to_vec(),
                b"[]".to_vec(),
                b"true".to_vec(),
                format!("[{text}]").into_bytes(),
                Value::String(text.clone()).to_string().into_bytes(),
                b"1e999".to_vec(),
                b"".to_vec(),
                b" ".to_vec(),
            ];
            ("not an object".into(), rng.pick(&choices).clone(), json_ct)
        }
        5 => {
            let cut = rng.below(text.len());
            ("truncated".into(), text.as_bytes()[..cut].to_vec(), json_ct)
        }
        6 => {
            let garbage: &[&[u8]] = &[
                b"x",
                b"}",
                b"{}",
                b"]",
                b",",
                b"\0",
                b"\xff",
                b"null",
                b"/*c*/",
                b"{\"name\":1}",
            ];
            let mut body = text.clone().into_bytes();
            let g: &[u8] = rng.pick::<&[u8]>(garbage);
            body.extend_from_slice(g);
            ("trailing garbage".into(), body, json_ct)
        }
        7 => {
            let bad: &[&[u8]] = &[
                b"\xff",
                b"\xc0\x80",
                b"\xed\xa0\x80",
                b"\x80",
                b"\xe2\x82",
                b"\xf8\x88\x80\x80\x80",
                b"\xfe\xfe",
            ];
            let mut body = text.clone().into_bytes();
            let at = rng.below(body.len() + 1);
            let insert = rng.pick(bad);
            body.splice(at..at, insert.iter().copied());
            ("invalid UTF-8".into(), body, json_ct)
        }
        8 => {
            let depth = *rng.pick(&[129usize, 1000, 10_000]);
            let body = match rng.below(4) {
                0 => "[".repeat(depth).into_bytes(),
                1 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                2 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes(),
                _ => {
                    let f = rng.pick(r.fields);
                    let mut t = text.clone();
                    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                    t.insert_str(t.len() - 1, &format!(",\"{}\":{deep}", f.name));
                    t.into_bytes()
                }
            };
            (format!("nested {depth}"), body, json_ct)
        }
        9 => {
            let (k, v) = obj.iter().nth(rng.below(obj.len())).unwrap();
            let mut t = text.clone();
            t.insert_str(t.len() - 1, &format!(",{}:{}", Value::String(k.clone()), v));
            ("duplicate field".into(), t.into_bytes(), json_ct)
        }
        10 => {
            let (k, _) = obj.iter().nth(rng.below(obj.len())).unwrap();
            let variants = vec![
                text.replace('"', "'"),
                format!("{},}}", &text[..text.len() - 1]),
                text.replacen(&format!("\"{k}\""), k, 1),
                text.replacen(&format!("\"{k}\":"), &format!("\"{k}\":NaN,\"{k}x\":"), 1),
                format!("/*c*/{text}"),
                format!("{text}//c"),
                format!("\u{feff}{text}"),
                text.replacen(&format!("\"{k}\":"), &format!("\"{k}\":0x1,\"{k}y\":"), 1),
            ];
            (
                "json5-isms".into(),
                rng.pick(&variants).clone().into_bytes(),
                json_ct,
            )
        }
        11 | 12 => {
            let v = rng.pick(&r.invalid).clone();
            ("breaks a rule".into(), v.to_string().into_bytes(), json_ct)
        }
        13 => {
            let cts: &[&'static [u8]] = &[
                b"text/plain",
                b"application/x-www-form-urlencoded",
                b"multipart/form-data; boundary=x",
                b"application/jsonx",
                b"text/json",
                b"application/xml",
                b"json",
                b"",
                b"application/",
                b"*/*",
                b"\xff\xfe",
            ];
            if rng.below(cts.len() + 1) == 0 {
                ("no content type".into(), text.into_bytes(), None)
            } else {
                (
                    "wrong content type".into(),
                    text.into_bytes(),
                    Some(*rng.pick(cts)),
                )
            }
        }
        14 => {
            let surrogate = *rng.pick(&[r"\ud800", r"\udfff", r"\udc00\ud800", r"\ud83d"]);
            let mut o = obj.clone();
            o.insert(r.ident.into(), json!("SURROGATEHERE"));
            let t = Value::Object(o)
                .to_string()
                .replace("SURROGATEHERE", &format!("x{surrogate}"));
            ("lone surrogate".into(), t.into_bytes(), json_ct)
        }
        _ => {
            let mut o = obj.clone();
            let ctl = *rng.pick(&["\u{0}", "\u{1b}[2J", "\r\n", "\u{202e}"]);
            o.insert(r.ident.into(), json!(format!("x{ctl}y")));
            if r.ident == "format" {
                (
                    "control chars".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else if r.ident == "public_key" {
                o.insert("public_key".into(), json!(format!("ssh-ed25519 {ctl}AAAA")));
                (
                    "control chars".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            } else {
                (
                    "control chars".into(),
                    Value::Object(o).to_string().into_bytes(),
                    json_ct,
                )
            }
        }
    }
}
