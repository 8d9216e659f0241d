//! Table-driven tests of the workspace rules (the route rules on a real vault, on both store
//! backends, are in tests/store.rs).
use super::*;
use crate::vault::workspace_rules::MAX_LOGIN_LEN;

const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlaqXRzxlPxHzGYpr8aP5erxYYqDHLXqJ0uxdVAF6GN c1";
const FP1: &str = "SHA256:QkaYXhn9pF3e4dgNRjoY50UkDr84UKyYOaUH4qAQbT8";

#[test]
fn addresses() {
    for (address, ok) in [
        ("dev1.internal:22", true),
        ("10.0.0.5:2222", true),
        ("[::1]:22", true),
        ("[2001:db8::1]:65535", true),
        ("host_name:1", true),
        ("localhost", false),
        ("localhost:", false),
        ("localhost:0", false),
        ("localhost:65536", false),
        ("localhost:22a", false),
        ("localhost:-1", false),
        (":22", false),
        ("::1:22", false),
        ("[nope]:22", false),
        ("-x:22", false),
        ("a b:22", false),
        ("host/x:22", false),
    ] {
        let got = check_address(address);
        assert_eq!(got.is_ok(), ok, "address {address:?}: {got:?}");
        if let Err(v) = got {
            assert_eq!(v.field, "address");
        }
    }
    let port = check_address("h:70000").err().map(|v| v.detail);
    assert!(port.is_some_and(|d| d.contains("1 to 65535")));
}

#[test]
fn logins() {
    let long = "a".repeat(MAX_LOGIN_LEN);
    let too_long = "a".repeat(MAX_LOGIN_LEN + 1);
    for (login, ok) in [
        ("alice", true),
        ("_svc", true),
        ("a.b-c_d", true),
        ("user1", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("-oProxyCommand", false),
        ("1000", false),
        ("a b", false),
        ("a:b", false),
        ("é", false),
    ] {
        let got = check_login(login);
        assert_eq!(got.is_ok(), ok, "login {login:?}");
        if let Err(v) = got {
            assert_eq!(v.field, "os-user");
        }
    }
}

#[test]
fn workspace_names_follow_the_user_name_rule() {
    for (name, ok) in [
        ("dev1", true),
        ("a.b_c-d", true),
        ("", false),
        ("-x", false),
        ("a:b", false),
        ("a b", false),
    ] {
        assert_eq!(check_workspace_name(name).is_ok(), ok, "name {name:?}");
    }
}

#[test]
fn host_keys_are_canonical_with_their_fingerprint() {
    let (line, fp) = parse_host_key(KEY1).expect("parses");
    assert_eq!(fp, FP1);
    assert!(!line.ends_with("c1"), "comment dropped: {line}");
    assert_eq!(
        parse_host_key(&format!("  {line}  ")).expect("parses").0,
        line
    );
    for bad in [
        "",
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        "not a key",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ] {
        let v = parse_host_key(bad).expect_err(bad);
        assert_eq!(v.field, "host-key");
    }
    let known_hosts = format!("dev1.internal {KEY1}");
    let v = parse_host_key(&known_hosts).expect_err("host name in front");
    assert!(v.detail.contains("known_hosts"), "{}", v.detail);
}
