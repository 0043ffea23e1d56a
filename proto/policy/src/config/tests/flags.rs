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
