//! `[controller] dial`: exactly one of `listen` and `dial`, and what a dial-out config holds.

use super::*;

const DIAL: &str = "\n[controller]\ndial = \"controller.example:7443\"\nserver_name = \"controller.example\"\nexit_on_disconnect_after = \"90s\"\n";

fn example_without_listen() -> String {
    EXAMPLE
        .lines()
        .filter(|l| !l.starts_with("listen ="))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_dial_out_config_listens_on_nothing_and_names_the_service() {
    let dir = fixture();
    let text = format!("{}{DIAL}", example_without_listen());
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, None);
    let c = cfg.controller.clone().expect("[controller]");
    assert_eq!(c.dial, "controller.example:7443");
    assert_eq!(c.server_name, "controller.example");
    assert_eq!(c.ca, cfg.tls.ca, "the CA defaults to tls.ca");
    assert_eq!(c.exit_on_disconnect_after, Some(Duration::from_secs(90)));
    let report = render_policy(&cfg, false);
    assert!(
        report.contains("nothing (dials out to controller.example:7443"),
        "{report}"
    );
}

#[test]
fn listen_and_dial_together_or_neither_is_a_problem_naming_both() {
    let dir = fixture();
    let both = format!("{EXAMPLE}{DIAL}");
    let e = load(&write(dir.path(), &both), &root())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`listen` and `[controller] dial` exclude each other"),
        "{e}"
    );
    let neither = example_without_listen();
    let e = load(&write(dir.path(), &neither), &root())
        .unwrap_err()
        .to_string();
    assert!(e.contains("set `listen`"), "{e}");
    assert!(e.contains("`[controller] dial`"), "{e}");
}

#[test]
fn bad_dial_settings_are_named_by_entry() {
    let dir = fixture();
    for (edit, says) in [
        (
            DIAL.replace("controller.example:7443", "controller.example"),
            "controller.dial",
        ),
        (
            DIAL.replace(
                "server_name = \"controller.example\"",
                "server_name = \"not a name\"",
            ),
            "controller.server_name",
        ),
        (
            DIAL.replace("\"90s\"", "\"soon\""),
            "controller.exit_on_disconnect_after",
        ),
        (format!("{DIAL}ca = \"pki/missing.pem\"\n"), "controller.ca"),
    ] {
        let text = format!("{}{edit}", example_without_listen());
        let e = load(&write(dir.path(), &text), &root())
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{says}: {e}");
    }
}
