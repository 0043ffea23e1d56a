//! Trusted keys: validity windows, revocation and who may approve.

use super::*;

const LIFECYCLE: &str = r#"
[[keys]]
name = "ci-2026"
public_key = "keys/ci.pub"
roles = ["deployer"]
not_after = "2027-01-31T00:00:00Z"

[[keys]]
name = "ci-2027"
public_key = "keys/new.pub"
roles = ["deployer"]
not_before = "2027-01-01T00:00:00Z"

[[keys]]
name = "release-manager"
public_key = "keys/release-manager.pub"
roles = ["approver"]
revoked = true
revoked_reason = "laptop lost"
"#;

/// The example with its keys replaced by `keys`.
fn with_keys(keys: &str) -> String {
    let start = EXAMPLE.find("[[keys]]").unwrap();
    let end = EXAMPLE.find("# One table per app").unwrap();
    format!("{}{keys}\n{}", &EXAMPLE[..start], &EXAMPLE[end..])
        .replace("approvals = 1", "approvals = 0")
}

#[test]
fn key_validity_and_revocation_are_parsed() {
    let dir = fixture();
    write_keypair(&dir.path().join("keys/new")).unwrap();
    let path = write(dir.path(), &with_keys(LIFECYCLE));
    let cfg = load(&path, &root()).unwrap_or_else(|e| panic!("{e}"));
    let k = &cfg.policy.keys;
    assert_eq!(k[0].not_after, Some(1_801_353_600));
    assert_eq!(k[0].not_before, None);
    assert_eq!(k[1].not_before, Some(1_798_761_600));
    assert!(k[2].revoked);
    assert_eq!(k[2].revoked_reason.as_deref(), Some("laptop lost"));
    // 2027-01-15: both CI keys valid (overlap), the old one expiring within 30 days.
    let now = 1_800_000_000;
    assert_eq!(k[0].invalid_at(now), None);
    assert_eq!(k[1].invalid_at(now), None);
    assert!(k[0].expires_soon(now, EXPIRY_WARNING));
    assert!(!k[1].expires_soon(now, EXPIRY_WARNING));
    assert_eq!(
        k[2].invalid_at(now).map(|w| w.to_string()).as_deref(),
        Some("revoked: laptop lost")
    );
    assert_eq!(
        k[0].invalid_at(1_801_353_600)
            .map(|w| w.to_string())
            .as_deref(),
        Some("expired at 2027-01-31T00:00:00Z")
    );

    let text = render_policy_at(&cfg, false, now);
    assert!(text.contains("VALIDITY"), "{text}");
    assert!(
        text.contains("until 2027-01-31T00:00:00Z (EXPIRES SOON)"),
        "{text}"
    );
    assert!(text.contains("from 2027-01-01T00:00:00Z\n"), "{text}");
    assert!(text.contains("REVOKED: LAPTOP LOST"), "{text}");
    assert!(
        text.contains("  - key ci-2026 expires in 15 day(s), at 2027-01-31T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains(
            "  - key release-manager is revoked: laptop lost: its signatures do not count"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy_at(&cfg, true, now)).unwrap();
    assert_eq!(json["keys"][0]["not_after"], "2027-01-31T00:00:00Z");
    assert_eq!(json["keys"][0]["expires_soon"], true);
    assert_eq!(json["keys"][0]["status"], "valid");
    assert_eq!(json["keys"][1]["not_before"], "2027-01-01T00:00:00Z");
    assert_eq!(json["keys"][1]["expires_soon"], false);
    assert_eq!(json["keys"][2]["status"], "revoked");
    assert_eq!(json["keys"][2]["revoked_reason"], "laptop lost");
    assert_eq!(json["apps"][0]["deployer_may_approve"], false);
    // After the old key's not_after it shows as expired.
    let later = render_policy_at(&cfg, true, 1_801_353_600);
    let later: serde_json::Value = serde_json::from_str(&later).unwrap();
    assert_eq!(later["keys"][0]["status"], "expired");
}

#[test]
fn bad_key_validity_is_reported_with_its_entry() {
    let dir = fixture();
    let keys = r#"
[[keys]]
name = "ci"
public_key = "keys/ci.pub"
roles = ["deployer"]
not_before = "next tuesday"
not_after = "2026-01-01T00:00:00Z"

[[keys]]
name = "rm"
public_key = "keys/release-manager.pub"
roles = ["approver"]
not_before = "2027-01-01T00:00:00Z"
not_after = "2026-01-01T00:00:00Z"
revoked_reason = "forgot to set revoked"
"#;
    let errs = load(&write(dir.path(), &with_keys(keys)), &root()).unwrap_err();
    let msg = |e: &str| {
        errs.for_entry(e)
            .map(|p| p.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg("keys[0].not_before").contains("\"next tuesday\" is not an RFC 3339"),
        "{errs}"
    );
    assert!(
        msg("keys[1].not_after")
            .contains("2026-01-01T00:00:00Z is not after not_before 2027-01-01T00:00:00Z"),
        "{errs}"
    );
    assert!(
        msg("keys[1].revoked_reason").contains("revoked is not true"),
        "{errs}"
    );
    assert_eq!(errs.0.len(), 3, "{errs}");
}

#[test]
fn a_revoked_approver_does_not_make_a_quorum_possible() {
    let dir = fixture();
    let text = EXAMPLE.replace(
        "roles = [\"approver\"]",
        "roles = [\"approver\"]\nrevoked = true",
    );
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    assert!(
        errs.for_entry("apps.web.approvals")
            .unwrap()
            .message
            .contains("only 0 unrevoked key(s)"),
        "{errs}"
    );
}

#[test]
fn deployer_may_approve_defaults_to_false_and_parses() {
    let dir = fixture();
    let text = EXAMPLE.replace("deployer_may_approve = false\n", "");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.policy.apps[&AppName::new("web").unwrap()].deployer_may_approve);
    let text = EXAMPLE.replace(
        "deployer_may_approve = false",
        "deployer_may_approve = true",
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.policy.apps[&AppName::new("web").unwrap()].deployer_may_approve);
    let text = render_policy(&cfg, false);
    assert!(
        text.contains("(the deployer's own key may count)"),
        "{text}"
    );
}

#[test]
fn policy_only_load_needs_no_tls_files_or_users() {
    let dir = fixture();
    for f in [
        "pki/ca.pem",
        "pki/agent.pem",
        "pki/agent.key",
        "keys/agent.key",
    ] {
        fs::remove_file(dir.path().join(f)).unwrap();
    }
    let text = EXAMPLE.replace("user = \"nobody\"", "user = \"no-such-user-gantry\"");
    let path = write(dir.path(), &text);
    let errs = load(&path, &root()).unwrap_err();
    assert!(errs.for_entry("tls.ca").is_some(), "{errs}");
    let cfg = Config::load_policy_only(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.policy.keys.len(), 2);
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    assert_eq!(web.approvals, 1);
    assert_eq!(web.run_as.uid(), u32::MAX);
    // Root is still refused without allow_root.
    let text = EXAMPLE.replace("user = \"nobody\"", "user = \"root\"");
    let errs = Config::load_policy_only(&write(dir.path(), &text)).unwrap_err();
    assert!(errs.for_entry("apps.web.user").is_some(), "{errs}");
}
