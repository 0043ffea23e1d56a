//! What a job does and how: [`Action`] and [`StrategyKind`], with the names used in configs,
//! audit entries and messages, and their wire values.

use std::fmt;

use gantry_proto::v1;
use serde::{Deserialize, Serialize};

/// What a job asks the agent to do. Each action has its own role requirement in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Install and start a release.
    Deploy,
    /// Return to the previous release, or a named one still on disk.
    Rollback,
    /// Restart the current release's instances.
    Restart,
    /// Stop all instances.
    Stop,
    /// Continue a paused rollout.
    Promote,
    /// Abort a rollout in progress.
    Abort,
}

impl Action {
    /// Every action, in policy order.
    pub const ALL: [Action; 6] = [
        Action::Deploy,
        Action::Rollback,
        Action::Restart,
        Action::Stop,
        Action::Promote,
        Action::Abort,
    ];

    /// The lowercase name used in the config, the audit log and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Promote => "promote",
            Action::Abort => "abort",
        }
    }

    /// The action named `name` (as [`Action::as_str`] spells it), if there is one.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The action of a wire value; `None` for `ACTION_UNSPECIFIED`.
    pub fn from_wire(a: v1::Action) -> Option<Action> {
        match a {
            v1::Action::Unspecified => None,
            v1::Action::Deploy => Some(Action::Deploy),
            v1::Action::Rollback => Some(Action::Rollback),
            v1::Action::Restart => Some(Action::Restart),
            v1::Action::Stop => Some(Action::Stop),
            v1::Action::Promote => Some(Action::Promote),
            v1::Action::Abort => Some(Action::Abort),
        }
    }

    /// The wire value of this action.
    pub fn to_wire(self) -> v1::Action {
        match self {
            Action::Deploy => v1::Action::Deploy,
            Action::Rollback => v1::Action::Rollback,
            Action::Restart => v1::Action::Restart,
            Action::Stop => v1::Action::Stop,
            Action::Promote => v1::Action::Promote,
            Action::Abort => v1::Action::Abort,
        }
    }
}

/// The name of a wire action, as [`Action::as_str`] spells it; `unspecified` for
/// `ACTION_UNSPECIFIED`.
pub fn action_name(a: v1::Action) -> &'static str {
    Action::from_wire(a).map_or("unspecified", Action::as_str)
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a release replaces the one running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Stop old, switch, start new; brief downtime by design.
    Hot,
    /// Replace instances in batches.
    Rolling,
    /// Start a full new set, then switch all traffic at once.
    BlueGreen,
    /// Shift traffic in weighted steps with analysis.
    Canary,
}

impl StrategyKind {
    /// The name used in the audit log and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Hot => "hot",
            StrategyKind::Rolling => "rolling",
            StrategyKind::BlueGreen => "blue-green",
            StrategyKind::Canary => "canary",
        }
    }

    /// Every strategy, simplest first.
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Hot,
        StrategyKind::Rolling,
        StrategyKind::BlueGreen,
        StrategyKind::Canary,
    ];

    /// The strategy named `name` (as [`StrategyKind::as_str`] spells it), if there is one.
    pub fn parse(name: &str) -> Option<StrategyKind> {
        StrategyKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The strategy of a wire value; `None` for `STRATEGY_UNSPECIFIED` (which the agent runs
    /// as hot, see [`crate::admission::decode`]).
    pub fn from_wire(s: v1::Strategy) -> Option<StrategyKind> {
        match s {
            v1::Strategy::Unspecified => None,
            v1::Strategy::Hot => Some(StrategyKind::Hot),
            v1::Strategy::Rolling => Some(StrategyKind::Rolling),
            v1::Strategy::BlueGreen => Some(StrategyKind::BlueGreen),
            v1::Strategy::Canary => Some(StrategyKind::Canary),
        }
    }

    /// The wire value of this strategy.
    pub fn to_wire(self) -> v1::Strategy {
        match self {
            StrategyKind::Hot => v1::Strategy::Hot,
            StrategyKind::Rolling => v1::Strategy::Rolling,
            StrategyKind::BlueGreen => v1::Strategy::BlueGreen,
            StrategyKind::Canary => v1::Strategy::Canary,
        }
    }
}

/// The name of a wire strategy, as [`StrategyKind::as_str`] spells it; `unspecified` for
/// `STRATEGY_UNSPECIFIED`.
pub fn strategy_name(s: v1::Strategy) -> &'static str {
    StrategyKind::from_wire(s).map_or("unspecified", StrategyKind::as_str)
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
