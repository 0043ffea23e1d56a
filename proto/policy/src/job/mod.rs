//! A job as the agent's modules see it: validated domain types, decoded once by admission.
//!
//! Proto types stop at the edge; everything past admission works with these.
//!
//! Files: `names` (app names, job ids, digests), `kinds` (actions and strategies), `spec` (the
//! decoded job), `prom_gate` (Prometheus queries as gates); everything is re-exported here.

mod kinds;
mod names;
mod prom_gate;
mod spec;

pub use self::kinds::{Action, StrategyKind, action_name, strategy_name};
pub use self::names::{AppName, DigestError, JobId, NameError, Sha256Hex};
pub use self::prom_gate::{Cmp, Condition, PLACEHOLDERS, PromCheck, PromGate, PromUrl};
pub use self::spec::{
    AnalysisSpec, BatchSize, CanaryStep, Compare, DEFAULT_COMPARE_ALPHA, HealthSpec, JobSpec,
    NoData, P95_SLOW_SHARE, Probe, ReleaseSpec, RolloutSpec, VerifiedJob,
};

#[cfg(test)]
mod tests;
