//! `[environments.NAME]`: the rules per environment, their defaults, and their report.

use super::*;
use crate::environment::{GateKind, Prerelease};

const TABLES: &str = r#"
[environments.production]
require_gates = ["tests", "coverage"]
min_approvals = 2

[environments.demo]
allow_prerelease = true
"#;

#[test]
fn the_agents_environment_table_is_in_force() {
    let dir = fixture();
    let text = format!("{EXAMPLE}{TABLES}");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let rules = cfg.policy.environments.in_force();
    assert_eq!(rules.prerelease, Prerelease::Refused);
    assert_eq!(
        rules.require_gates.iter().copied().collect::<Vec<_>>(),
        [GateKind::Tests, GateKind::Coverage]
    );
    // The floor raises the example's approvals = 1.
    assert_eq!(web_of(&cfg).approvals, 2);
    let demo = cfg.policy.environments.rules_for(Some("demo"));
    assert_eq!(demo.prerelease, Prerelease::Allowed);
}

#[test]
fn an_unknown_gate_is_refused_by_entry() {
    let dir = fixture();
    let text = format!("{EXAMPLE}\n[environments.production]\nrequire_gates = [\"lint\"]\n");
    let errors = load(&write(dir.path(), &text), &root()).expect_err("refused");
    let p = errors
        .for_entry("environments.production.require_gates")
        .unwrap_or_else(|| panic!("{errors}"));
    assert!(
        p.message.contains("\"lint\" is not a gate"),
        "{}",
        p.message
    );
    assert!(
        p.message.contains("tests, coverage, security, performance"),
        "{}",
        p.message
    );
}

#[test]
fn policy_shows_the_rules_in_force_and_the_other_tables() {
    let dir = fixture();
    let text = format!("{EXAMPLE}{TABLES}");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let report = render_policy_at(&cfg, false, 0);
    assert!(
        report.contains("Environment rules (in force: production)\n  production ([environments.production])\n    pre-releases    refused\n    required gates  tests, coverage (passed, for the job's artifact, signed by a key with role ci)\n    min approvals   2 for every app\n"),
        "{report}"
    );
    assert!(
        report.contains(
            "  demo, not this agent's ([environments.demo])\n    pre-releases    allowed\n"
        ),
        "{report}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy_at(&cfg, true, 0)).unwrap();
    assert_eq!(
        json["environment_rules"]["in_force"]["prerelease"],
        "refused"
    );
    assert_eq!(
        json["environment_rules"]["in_force"]["require_gates"],
        serde_json::json!(["tests", "coverage"])
    );
}

#[test]
fn without_a_table_production_refuses_prereleases() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    let report = render_policy_at(&cfg, false, 0);
    assert!(
        report.contains(
            "  production (defaults)\n    pre-releases    refused\n    required gates  none\n"
        ),
        "{report}"
    );
}
