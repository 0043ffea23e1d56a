//! The environment section of `gantry-agent policy`: the rules in force and every
//! `[environments.NAME]` table, as text and as JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::environment::{CI_ROLE, EnvironmentRules, Environments, Prerelease};

fn prerelease(rules: &EnvironmentRules) -> &'static str {
    match rules.prerelease {
        Prerelease::Allowed => "allowed",
        Prerelease::Refused => "refused",
    }
}

fn gates(rules: &EnvironmentRules) -> String {
    if rules.require_gates.is_empty() {
        "none".to_owned()
    } else {
        let names: Vec<&str> = rules.require_gates.iter().map(|g| g.as_str()).collect();
        format!(
            "{} (passed, for the job's artifact, signed by a key with role {CI_ROLE})",
            names.join(", ")
        )
    }
}

fn one(out: &mut String, name: &str, label: &str, rules: &EnvironmentRules) {
    let origin = if rules.configured {
        format!("[environments.{name}]")
    } else {
        "defaults".to_owned()
    };
    let _ = writeln!(out, "  {label} ({origin})");
    let _ = writeln!(out, "    pre-releases    {}", prerelease(rules));
    let _ = writeln!(out, "    required gates  {}", gates(rules));
    if let Some(n) = rules.min_approvals {
        let _ = writeln!(out, "    min approvals   {n} for every app");
    }
}

/// The text section: the rules in force first, then the other tables.
pub(super) fn text(envs: &Environments) -> String {
    let mut out = String::new();
    let current = envs.current_name();
    let _ = writeln!(out, "\nEnvironment rules (in force: {current})");
    one(&mut out, current, current, &envs.in_force());
    for (name, rules) in &envs.tables {
        if Some(name.as_str()) != envs.current.as_deref() {
            one(&mut out, name, &format!("{name}, not this agent's"), rules);
        }
    }
    out
}

fn rules_json(rules: &EnvironmentRules) -> Value {
    json!({
        "configured": rules.configured,
        "prerelease": prerelease(rules),
        "require_gates": rules.require_gates.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "min_approvals": rules.min_approvals,
    })
}

/// The JSON section: `{"in_force": {...}, "tables": {"production": {...}}}`.
pub(super) fn json(envs: &Environments) -> Value {
    let tables: serde_json::Map<String, Value> = envs
        .tables
        .iter()
        .map(|(n, r)| (n.clone(), rules_json(r)))
        .collect();
    json!({ "in_force": rules_json(&envs.in_force()), "tables": tables })
}
