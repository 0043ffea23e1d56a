//! `[environments.NAME]`: the rules per environment, validated into [`Environments`].

use std::collections::BTreeMap;

use super::Problems;
use super::settings::label_text;
use crate::config::Policy;
use crate::config::raw::RawConfig;
use crate::environment::{EnvironmentRules, Environments, GateKind, Prerelease};

/// Every `[environments.NAME]` table, with the agent's `environment` as the one in force.
pub(super) fn validate(p: &mut Problems, raw: &RawConfig) -> Environments {
    let mut tables = BTreeMap::new();
    for (name, table) in &raw.environments {
        let entry = format!("environments.{name}");
        if let Err(why) = label_text(name) {
            p.add(&entry, format!("the name {name:?} {why}"));
        }
        let mut rules = EnvironmentRules::defaults_for(Some(name));
        rules.configured = true;
        if let Some(allow) = table.allow_prerelease {
            rules.prerelease = if allow {
                Prerelease::Allowed
            } else {
                Prerelease::Refused
            };
        }
        for gate in &table.require_gates {
            match GateKind::parse(gate) {
                Some(g) => {
                    if !rules.require_gates.insert(g) {
                        p.add(
                            format!("{entry}.require_gates"),
                            format!("{gate:?} is listed twice"),
                        );
                    }
                }
                None => {
                    let known: Vec<&str> = GateKind::ALL.iter().map(|g| g.as_str()).collect();
                    p.add(
                        format!("{entry}.require_gates"),
                        format!("{gate:?} is not a gate (known: {})", known.join(", ")),
                    );
                }
            }
        }
        rules.min_approvals = table.min_approvals;
        tables.insert(name.clone(), rules);
    }
    Environments {
        current: raw.environment.clone(),
        tables,
    }
}

/// Raises every app's `approvals` to the floor of the environment in force, so that admission
/// and the policy report see one number.
pub(super) fn apply_approval_floor(policy: &mut Policy) {
    let Some(floor) = policy.environments.in_force().min_approvals else {
        return;
    };
    for app in policy.apps.values_mut() {
        app.approvals = app.approvals.max(floor);
    }
}
