//! `[apps.NAME.flags]`: a loopback OFREP address, default roles and lifecycle.

use super::*;

#[test]
fn flags_default_to_the_flags_and_kill_switch_roles() {
    let dir = fixture();
    let text = with_web("[apps.web.flags]\nlisten = \"127.0.0.1:18500\"\n");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap();
    let flags = web_of(&cfg).flags.clone().unwrap();
    assert_eq!(flags.listen.to_string(), "127.0.0.1:18500");
    assert_eq!(flags.allow, BTreeSet::from(["flags".to_owned()]));
    assert_eq!(
        flags.kill_switch,
        BTreeSet::from(["kill-switch".to_owned()])
    );
    assert_eq!(flags.remove_after.as_secs(), 90 * 24 * 3600);
}

#[test]
fn an_app_without_a_flags_section_serves_none() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap();
    assert!(web_of(&cfg).flags.is_none());
}

#[test]
fn flags_are_served_on_loopback_only() {
    let dir = fixture();
    let text = with_web("[apps.web.flags]\nlisten = \"0.0.0.0:18500\"\nremove_after = \"30d\"\n");
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    let p = errs.for_entry("apps.web.flags.listen").unwrap();
    assert!(
        p.message.contains("not a loopback address"),
        "{}",
        p.message
    );
}

#[test]
fn flag_changes_need_one_signature_unless_a_quorum_is_set() {
    let dir = fixture();
    let text = with_web("[apps.web.flags]\nlisten = \"127.0.0.1:18500\"\n");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap();
    assert_eq!(web_of(&cfg).flags.clone().unwrap().approvals, 1);
}

#[test]
fn a_flags_quorum_of_zero_or_above_the_flags_keys_is_refused() {
    let dir = fixture();
    let zero = with_web("[apps.web.flags]\nlisten = \"127.0.0.1:18500\"\napprovals = 0\n");
    let errs = load(&write(dir.path(), &zero), &root()).unwrap_err();
    let p = errs.for_entry("apps.web.flags.approvals").unwrap();
    assert!(p.message.contains("must be 1 or more"), "{}", p.message);

    // No key of the example holds role "flags".
    let two = with_web("[apps.web.flags]\nlisten = \"127.0.0.1:18500\"\napprovals = 2\n");
    let errs = load(&write(dir.path(), &two), &root()).unwrap_err();
    let p = errs.for_entry("apps.web.flags.approvals").unwrap();
    assert!(
        p.message
            .contains("2 signature(s) required but only 0 unrevoked key(s) hold role flags"),
        "{}",
        p.message
    );
}

/// The example with two keys of role `flags` and a flags section with `approvals`.
fn with_flags_quorum(dir: &Path, approvals: u32) -> String {
    for k in ["keys/flags-a", "keys/flags-b"] {
        if !dir.join(format!("{k}.pub")).exists() {
            write_keypair(&dir.join(k)).unwrap();
        }
    }
    let keys = "[[keys]]\nname = \"flags-a\"\npublic_key = \"keys/flags-a.pub\"\nroles = [\"flags\"]\n\n\
                [[keys]]\nname = \"flags-b\"\npublic_key = \"keys/flags-b.pub\"\nroles = [\"flags\"]\n\n";
    with_web(&format!(
        "[apps.web.flags]\nlisten = \"127.0.0.1:18500\"\napprovals = {approvals}\n"
    ))
    .replacen(
        "# One table per app",
        &format!("{keys}# One table per app"),
        1,
    )
}

#[test]
fn a_flags_quorum_up_to_the_flags_keys_is_shown_by_the_policy_report() {
    let dir = fixture();
    let cfg = load(
        &write(dir.path(), &with_flags_quorum(dir.path(), 2)),
        &root(),
    )
    .unwrap();
    assert_eq!(web_of(&cfg).flags.clone().unwrap().approvals, 2);
    let text = render_policy(&cfg, false);
    assert!(
        text.contains(
            "  feature flags:\n    ofrep           http://127.0.0.1:18500\n    change          \
             2 signature(s) by distinct keys with role flags\n    kill switch     one signature \
             by a key with role kill-switch (no quorum)\n"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    let web = &json["apps"][0]["flags"];
    assert_eq!(web["approvals"], 2);
    assert_eq!(web["allow"], serde_json::json!(["flags"]));
    assert_eq!(web["kill_switch"], serde_json::json!(["kill-switch"]));

    let errs = load(
        &write(dir.path(), &with_flags_quorum(dir.path(), 3)),
        &root(),
    )
    .unwrap_err();
    let p = errs.for_entry("apps.web.flags.approvals").unwrap();
    assert!(
        p.message.contains("only 2 unrevoked key(s)"),
        "{}",
        p.message
    );
}
