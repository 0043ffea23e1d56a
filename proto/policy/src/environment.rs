//! Per-environment rules: what the agent's `environment` adds to its policy.
//!
//! An agent's config names its environment (`production`, `staging`, `demo` ...) and may hold
//! an `[environments.NAME]` table per environment. The table of the agent's own environment is
//! the one in force; the others are listed by `gantry-agent policy` and are what a fleet plan
//! for that environment will be held to. An environment with no table gets the defaults:
//! pre-releases refused in `production`, allowed elsewhere, and no gates required.
//!
//! Everything here is a pure function of the config and the job, so the agent's admission,
//! `gantry job show --policy` and fleet plans judge a release by one rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The environment whose default refuses pre-release versions.
pub const PRODUCTION: &str = "production";

/// The role of keys whose signatures on evidence count.
pub const CI_ROLE: &str = "ci";

/// A quality gate that evidence can carry and a policy can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GateKind {
    /// Test results: every test passes (JUnit XML).
    Tests,
    /// Line coverage (LCOV or Cobertura).
    Coverage,
    /// Security findings: no critical or high ones (SARIF).
    Security,
    /// Benchmark regression against a baseline (JSON).
    Performance,
}

impl GateKind {
    /// Every gate, in report order.
    pub const ALL: [GateKind; 4] = [
        GateKind::Tests,
        GateKind::Coverage,
        GateKind::Security,
        GateKind::Performance,
    ];

    /// The name used in configs, statements and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::Tests => "tests",
            GateKind::Coverage => "coverage",
            GateKind::Security => "security",
            GateKind::Performance => "performance",
        }
    }

    /// The gate named `name`.
    pub fn parse(name: &str) -> Option<GateKind> {
        GateKind::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

impl fmt::Display for GateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether versions with a pre-release label (`1.2.3-rc.1`) may be deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prerelease {
    /// Release candidates may be deployed (demo, staging).
    Allowed,
    /// Only releases without a pre-release label.
    Refused,
}

/// The rules of one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRules {
    /// Pre-release versions.
    pub prerelease: Prerelease,
    /// Gates a deploy's evidence must show passed, signed by a `ci` key, for its artifact.
    pub require_gates: BTreeSet<GateKind>,
    /// Approvals every app needs here at least (`None`: the apps' own `approvals`).
    pub min_approvals: Option<u32>,
    /// Whether the rules come from an `[environments.NAME]` table (else the defaults).
    pub configured: bool,
}

impl EnvironmentRules {
    /// The defaults of environment `name` (`None`: the agent names no environment):
    /// pre-releases refused in [`PRODUCTION`] only, no gates, no approval floor.
    pub fn defaults_for(name: Option<&str>) -> EnvironmentRules {
        EnvironmentRules {
            prerelease: if name == Some(PRODUCTION) {
                Prerelease::Refused
            } else {
                Prerelease::Allowed
            },
            require_gates: BTreeSet::new(),
            min_approvals: None,
            configured: false,
        }
    }
}

/// Every environment's rules and the agent's own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environments {
    /// The agent's environment (`environment` in the config).
    pub current: Option<String>,
    /// The `[environments.NAME]` tables, validated.
    pub tables: BTreeMap<String, EnvironmentRules>,
}

impl Environments {
    /// The rules of environment `name`: its table, else its defaults.
    pub fn rules_for(&self, name: Option<&str>) -> EnvironmentRules {
        name.and_then(|n| self.tables.get(n))
            .cloned()
            .unwrap_or_else(|| EnvironmentRules::defaults_for(name))
    }

    /// The rules in force on this agent.
    pub fn in_force(&self) -> EnvironmentRules {
        self.rules_for(self.current.as_deref())
    }

    /// The environment's name for messages: `production`, or `(none)`.
    pub fn current_name(&self) -> &str {
        self.current.as_deref().unwrap_or("(none)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_prereleases_by_default_and_others_allow_them() {
        let envs = Environments {
            current: Some("production".to_owned()),
            tables: BTreeMap::new(),
        };
        assert_eq!(envs.in_force().prerelease, Prerelease::Refused);
        assert_eq!(envs.rules_for(Some("demo")).prerelease, Prerelease::Allowed);
        assert_eq!(envs.rules_for(None).prerelease, Prerelease::Allowed);
    }

    #[test]
    fn a_table_replaces_the_defaults() {
        let mut rules = EnvironmentRules::defaults_for(Some("production"));
        rules.prerelease = Prerelease::Allowed;
        rules.require_gates.insert(GateKind::Tests);
        rules.configured = true;
        let envs = Environments {
            current: Some("production".to_owned()),
            tables: BTreeMap::from([("production".to_owned(), rules.clone())]),
        };
        assert_eq!(envs.in_force(), rules);
    }

    #[test]
    fn gate_names_round_trip() {
        for g in GateKind::ALL {
            assert_eq!(GateKind::parse(g.as_str()), Some(g));
        }
        assert_eq!(GateKind::parse("lint"), None);
    }
}
