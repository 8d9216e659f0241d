//! Unit tests of kinds, rotation ages, staleness and requirements.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const DAY: i64 = 86_400_000;

#[test]
fn rotation_ages_parse_and_print_back() {
    for (text, want) in [
        ("90d", RotateAfter::Secs(90 * 86_400)),
        ("12h", RotateAfter::Secs(43_200)),
        ("2w", RotateAfter::Secs(14 * 86_400)),
        ("never", RotateAfter::Never),
    ] {
        assert_eq!(RotateAfter::parse(text).unwrap(), want, "{text}");
    }
    assert_eq!(RotateAfter::Secs(90 * 86_400).to_string(), "90d");
    assert_eq!(RotateAfter::Secs(43_200).to_string(), "12h");
    for bad in ["", "soon", "30m", "20y", "-1d"] {
        assert!(RotateAfter::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(RotateAfter::from_stored(0), RotateAfter::Never);
}

#[test]
fn a_value_is_stale_past_its_age_and_the_secret_setting_wins_over_the_kind() {
    let policy = RotationSettings::default();
    let now = 1_000 * DAY;
    let token = rotation(&policy, SecretKind::Token, None, now - 100 * DAY, now);
    assert!(token.stale && token.age_days == 100);
    assert_eq!(token.after, RotateAfter::Secs(90 * 86_400));
    assert!(!rotation(&policy, SecretKind::Token, None, now - 89 * DAY, now).stale);
    assert!(!rotation(&policy, SecretKind::Other, None, now - 900 * DAY, now).stale);
    let own_never = rotation(&policy, SecretKind::Token, Some(0), now - 100 * DAY, now);
    assert!(!own_never.stale && own_never.after == RotateAfter::Never);
    assert!(
        rotation(
            &policy,
            SecretKind::Other,
            Some(30 * 86_400),
            now - 31 * DAY,
            now
        )
        .stale
    );
}

#[test]
fn the_stale_notice_is_one_line() {
    assert_eq!(stale_notice(&[]), None);
    assert_eq!(
        stale_notice(&[("gh".into(), 97), ("npm".into(), 120)]).unwrap(),
        "2 secrets are due for rotation: gh (97 d), npm (120 d) — keyport secret list --stale"
    );
    assert!(
        stale_notice(&[("gh".into(), 97)])
            .unwrap()
            .starts_with("1 secret is due")
    );
}

fn req(env: Option<&str>, file: Option<&str>) -> Requirement {
    Requirement {
        env: env.map(str::to_string),
        file: file.map(str::to_string),
        description: "GitHub".into(),
        users: vec![],
        groups: vec![],
        workspaces: vec![],
        mode: RequiredMode::Warn,
    }
}

#[test]
fn requirements_apply_by_user_group_and_workspace_and_are_met_by_targets() {
    let all = req(Some("GITHUB_TOKEN"), None);
    let alice = Subject {
        user: "alice",
        groups: &["dev".to_string()],
        workspace: None,
    };
    assert!(applies(&all, &alice));
    let bob_only = Requirement {
        users: vec!["bob".into()],
        ..all.clone()
    };
    assert!(!applies(&bob_only, &alice));
    let devs = Requirement {
        groups: vec!["dev".into()],
        ..bob_only.clone()
    };
    assert!(applies(&devs, &alice), "users or groups");
    let on_dev1 = Requirement {
        workspaces: vec!["dev1".into()],
        ..all.clone()
    };
    assert!(!applies(&on_dev1, &alice), "not for a local session");
    let relayed = Subject {
        workspace: Some("dev1"),
        ..alice.clone()
    };
    assert!(applies(&on_dev1, &relayed));
    assert!(
        satisfied(&all, &["github_token"], &[]),
        "env names ignore case"
    );
    assert!(!satisfied(&all, &["GH_TOKEN"], &[]));
    let both = req(Some("NPM_TOKEN"), Some("~/.npmrc"));
    assert!(!satisfied(&both, &["NPM_TOKEN"], &[]));
    assert!(satisfied(&both, &["NPM_TOKEN"], &["~/.npmrc"]));
}

#[test]
fn a_missing_requirement_says_how_to_create_it() {
    let m = Missing::of(&req(Some("GITHUB_TOKEN"), None));
    assert_eq!(
        m.fix(),
        "printf %s VALUE | keyport secret create github_token --env GITHUB_TOKEN"
    );
    assert_eq!(
        m.notice(),
        "required secret missing: GITHUB_TOKEN (GitHub) — printf %s VALUE | keyport secret create \
         github_token --env GITHUB_TOKEN"
    );
    assert_eq!(
        Missing::of(&req(None, Some("~/.npmrc"))).fix(),
        "printf %s VALUE | keyport secret create NAME --file ~/.npmrc"
    );
}
