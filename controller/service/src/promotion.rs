//! Promotion through environments (`[promotion]` in controller.toml): a plan for an environment
//! starts only once the same artifact has succeeded in each environment the config names before
//! it, as Octopus lifecycles do: `production = ["staging"]` holds a production plan back until a
//! staging rollout of the same artifact digest succeeded.
//!
//! The evidence is signed data, not the service's own word: for the staging rollout, every host
//! whose deploy succeeded must show, in its own audit log (read from the agent and verified:
//! the chain, the checkpoints under the agent's key, and the checkpoint the service witnessed),
//! the `job.accepted` of that job for that plan's digest, its `job.succeeded`, and a checkpoint
//! after it that seals both. A staging agent that cannot be read, or a log that does not show
//! it, holds the promotion back with a reason naming the agent.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::agents::AuditSource;
use crate::plan::LoadedPlan;
use crate::store::{
    AgentRecord, HostAction, HostStep, RolloutRecord, RolloutState, Store, StoreError,
};

/// Which environments must have run an artifact before a plan for an environment may: the
/// `[promotion]` table, environment → the environments before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(BTreeMap<String, Vec<String>>);

impl Rules {
    /// The rules from `[promotion]`, checked: no environment needs itself, none is named twice
    /// in one list, and no chain of them loops back (a loop could never be satisfied).
    ///
    /// # Errors
    /// The offending entry's key and what is wrong with it.
    pub fn new(table: BTreeMap<String, Vec<String>>) -> Result<Self, (String, String)> {
        for (env, before) in &table {
            if env.is_empty() {
                return Err((env.clone(), "an environment name is empty".into()));
            }
            for (i, b) in before.iter().enumerate() {
                if b.is_empty() {
                    return Err((env.clone(), "an environment name is empty".into()));
                }
                if b == env {
                    return Err((env.clone(), format!("{env} cannot come before itself")));
                }
                if before[..i].contains(b) {
                    return Err((env.clone(), format!("{b} is named twice")));
                }
            }
        }
        let rules = Self(table);
        for env in rules.0.keys() {
            if let Some(path) = rules.cycle_from(env) {
                return Err((
                    env.clone(),
                    format!("the environments loop: {}", path.join(" → ")),
                ));
            }
        }
        Ok(rules)
    }

    /// A chain of requirements from `start` back to `start`, if there is one.
    fn cycle_from(&self, start: &str) -> Option<Vec<String>> {
        let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((env, path)) = stack.pop() {
            for next in self.before(&env) {
                if next == start {
                    let mut path = path.clone();
                    path.push(next.clone());
                    return Some(path);
                }
                if seen.insert(next.clone()) {
                    let mut path = path.clone();
                    path.push(next.clone());
                    stack.push((next.clone(), path));
                }
            }
        }
        None
    }

    /// The environments a plan for `environment` waits for (none when it has no entry).
    pub fn before(&self, environment: &str) -> &[String] {
        self.0.get(environment).map_or(&[], Vec::as_slice)
    }

    /// Whether any environment waits for another.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a plan may not start yet.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// No rollout of the artifact succeeded in an environment that comes first.
    #[error(
        "a plan for {environment} needs artifact {digest} to have succeeded in {needed} first: \
         no rollout of it there has succeeded ([promotion] {environment} lists {needed})"
    )]
    NotYet {
        /// The plan's environment.
        environment: String,
        /// The environment that comes first.
        needed: String,
        /// The artifact.
        digest: String,
    },
    /// A rollout there succeeded by the service's record, but its hosts' own logs do not show it.
    #[error(
        "a plan for {environment} needs artifact {digest} to have succeeded in {needed} first: \
         rollout {rollout} did by the service's record, but {reason}"
    )]
    Unconfirmed {
        /// The plan's environment.
        environment: String,
        /// The environment that comes first.
        needed: String,
        /// The artifact.
        digest: String,
        /// The newest candidate rollout.
        rollout: String,
        /// Why its evidence does not hold.
        reason: String,
    },
    /// The store cannot be read.
    #[error("cannot read the store: {0}")]
    Store(#[from] StoreError),
}

/// One host's signed evidence: where its log shows the job succeeded and what seals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvidence {
    /// The agent.
    pub agent_id: String,
    /// The job it ran.
    pub job_id: String,
    /// The seq of its `job.succeeded`.
    pub succeeded_seq: u64,
    /// The seq of the checkpoint after it.
    pub checkpoint_seq: u64,
}

/// What let a plan through for one environment before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The environment.
    pub environment: String,
    /// The rollout there.
    pub rollout_id: String,
    /// Each host that succeeded in it.
    pub hosts: Vec<HostEvidence>,
}

/// Checks `plan` against `rules`: for each environment before the plan's, the newest succeeded
/// rollout of the same app and artifact there whose hosts' logs confirm it.
///
/// # Errors
/// [`PromotionError`].
pub async fn check<S: Store, A: AuditSource>(
    rules: &Rules,
    store: &S,
    audit: &A,
    plan: &LoadedPlan,
) -> Result<Vec<Evidence>, PromotionError> {
    let needed = rules.before(&plan.plan.environment);
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let digest = artifact_of(plan);
    let rollouts = store.rollouts().await?;
    let agents: BTreeMap<String, AgentRecord> = store
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let mut evidence = Vec::new();
    for env in needed {
        let mut candidates: Vec<(&RolloutRecord, LoadedPlan)> = rollouts
            .iter()
            .filter(|r| r.state == RolloutState::Succeeded)
            .filter_map(|r| Some((r, LoadedPlan::decode(&r.signed_plan).ok()?)))
            .filter(|(_, p)| {
                p.plan.environment == *env
                    && p.plan.app == plan.plan.app
                    && artifact_of(p) == digest
            })
            .collect();
        candidates.sort_by_key(|(r, _)| std::cmp::Reverse(r.updated_ms));
        let mut found = None;
        let mut first_reason = None;
        for (rollout, _) in &candidates {
            match confirm_rollout(store, audit, &agents, rollout).await? {
                Ok(hosts) => {
                    found = Some(Evidence {
                        environment: env.clone(),
                        rollout_id: rollout.id.clone(),
                        hosts,
                    });
                    break;
                }
                Err(reason) => {
                    first_reason.get_or_insert((rollout.id.clone(), reason));
                }
            }
        }
        match (found, first_reason) {
            (Some(e), _) => evidence.push(e),
            (None, None) => {
                return Err(PromotionError::NotYet {
                    environment: plan.plan.environment.clone(),
                    needed: env.clone(),
                    digest,
                });
            }
            (None, Some((rollout, reason))) => {
                return Err(PromotionError::Unconfirmed {
                    environment: plan.plan.environment.clone(),
                    needed: env.clone(),
                    digest,
                    rollout,
                    reason,
                });
            }
        }
    }
    Ok(evidence)
}

/// The plan's artifact digest.
fn artifact_of(plan: &LoadedPlan) -> String {
    plan.plan
        .release
        .as_ref()
        .map(|r| r.artifact_sha256.clone())
        .unwrap_or_default()
}

/// Every host of `rollout` whose deploy succeeded, confirmed by its own log; the inner error
/// says which host does not confirm and why.
async fn confirm_rollout<S: Store, A: AuditSource>(
    store: &S,
    audit: &A,
    agents: &BTreeMap<String, AgentRecord>,
    rollout: &RolloutRecord,
) -> Result<Result<Vec<HostEvidence>, String>, StoreError> {
    let hosts: Vec<_> = store
        .hosts(&rollout.id)
        .await?
        .into_iter()
        .filter(|h| h.action == HostAction::Deploy && h.step == HostStep::Succeeded)
        .collect();
    if hosts.is_empty() {
        return Ok(Err(
            "none of its hosts has a succeeded deploy on record".into()
        ));
    }
    let mut confirmed = Vec::with_capacity(hosts.len());
    for host in hosts {
        let Some(agent) = agents.get(&host.agent_id) else {
            return Ok(Err(format!(
                "agent {} is no longer in the inventory",
                host.agent_id
            )));
        };
        let witnessed = store.checkpoint(&agent.id).await?;
        let lines = match audit.verified_lines(agent, witnessed.as_ref()).await {
            Ok(lines) => lines,
            Err(e) => {
                return Ok(Err(format!(
                    "agent {}'s audit log cannot confirm it: {e}",
                    agent.id
                )));
            }
        };
        match confirm_in_log(&lines, &host.job_id, &rollout.plan_sha256) {
            Ok((succeeded_seq, checkpoint_seq)) => confirmed.push(HostEvidence {
                agent_id: agent.id.clone(),
                job_id: host.job_id.clone(),
                succeeded_seq,
                checkpoint_seq,
            }),
            Err(e) => return Ok(Err(format!("agent {}'s audit log {e}", agent.id))),
        }
    }
    Ok(Ok(confirmed))
}

/// Finds, in a verified audit log, the `job.accepted` of `job_id` for the plan `plan_sha256`,
/// its `job.succeeded`, and the checkpoint after it: the seqs of the last two.
///
/// # Errors
/// What the log lacks, as the end of a sentence starting with "the log".
pub fn confirm_in_log(
    lines: &[String],
    job_id: &str,
    plan_sha256: &str,
) -> Result<(u64, u64), String> {
    let mut accepted = false;
    let mut succeeded = None;
    for line in lines {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or(0);
        match field("event") {
            Some("job.accepted") if field("job_id") == Some(job_id) => {
                if field("plan_digest") != Some(plan_sha256) {
                    return Err(format!(
                        "shows job {job_id} accepted for plan digest {}, not {plan_sha256}",
                        field("plan_digest").unwrap_or("(none)")
                    ));
                }
                accepted = true;
            }
            Some("job.succeeded") if accepted && field("job_id") == Some(job_id) => {
                succeeded = Some(seq);
            }
            Some("checkpoint") => {
                if let Some(s) = succeeded {
                    return Ok((s, seq));
                }
            }
            _ => {}
        }
    }
    Err(match (accepted, succeeded) {
        (false, _) => format!("does not show job {job_id} accepted"),
        (true, None) => format!("does not show job {job_id} succeeded"),
        (true, Some(s)) => format!("has no checkpoint after job {job_id} succeeded (seq {s})"),
    })
}

#[cfg(test)]
mod tests;
