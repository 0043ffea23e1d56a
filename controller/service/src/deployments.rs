//! Where an artifact was deployed across the fleet (`gantry release show DIGEST --server`): the
//! signed plans of the rollouts that release it, and from every agent's verified audit log the
//! entries of those plans' jobs. The service adds nothing of its own word: the plans carry their
//! signatures for the operator to check, and each line is the agent's, from a log whose chain,
//! checkpoints and witnessed checkpoint verified.

use std::collections::BTreeSet;

use gantry_proto::v1::{AgentDeployments, ReleaseDeploymentsResponse};
use serde_json::Value;

use crate::agents::AuditSource;
use crate::plan::LoadedPlan;
use crate::store::{Store, StoreError};

/// The events that end a job.
const ENDS: [&str; 4] = [
    "job.succeeded",
    "job.failed",
    "job.rolled_back",
    "job.interrupted",
];

/// The plans releasing `artifact_sha256` and each agent's entries of their jobs.
///
/// # Errors
/// [`StoreError`] when the store cannot be read; an agent that cannot be read is reported in
/// its own entry, not as an error.
pub async fn collect<S: Store, A: AuditSource>(
    store: &S,
    audit: &A,
    artifact_sha256: &str,
) -> Result<ReleaseDeploymentsResponse, StoreError> {
    let mut plans = Vec::new();
    let mut digests = BTreeSet::new();
    for rollout in store.rollouts().await? {
        let Ok(plan) = LoadedPlan::decode(&rollout.signed_plan) else {
            continue;
        };
        if plan
            .plan
            .release
            .as_ref()
            .is_some_and(|r| r.artifact_sha256 == artifact_sha256)
        {
            digests.insert(plan.sha256.clone());
            plans.push(plan.signed);
        }
    }
    let mut agents = Vec::new();
    if !digests.is_empty() {
        for agent in store.agents().await? {
            let witnessed = store.checkpoint(&agent.id).await?;
            agents.push(
                match audit.verified_lines(&agent, witnessed.as_ref()).await {
                    Ok(lines) => AgentDeployments {
                        agent_id: agent.id,
                        verified: true,
                        error: String::new(),
                        lines: entries_of(&lines, &digests),
                    },
                    Err(error) => AgentDeployments {
                        agent_id: agent.id,
                        verified: false,
                        error,
                        lines: Vec::new(),
                    },
                },
            );
        }
    }
    Ok(ReleaseDeploymentsResponse { plans, agents })
}

/// The lines of `log` that accept a job whose `job_digest` is in `digests`, and the end
/// entries of those jobs, in log order.
pub fn entries_of(log: &[String], digests: &BTreeSet<String>) -> Vec<String> {
    let mut jobs = BTreeSet::new();
    let mut out = Vec::new();
    for line in log {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        let (Some(event), Some(job)) = (field("event"), field("job_id")) else {
            continue;
        };
        if event == "job.accepted" && field("job_digest").is_some_and(|d| digests.contains(d)) {
            jobs.insert(job.to_owned());
            out.push(line.clone());
        } else if ENDS.contains(&event) && jobs.contains(job) {
            out.push(line.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: &str, job: &str, digest: &str) -> String {
        format!(
            r#"{{"seq":1,"ts":"t","prev":"p","event":"{event}","job_id":"{job}","job_digest":"{digest}"}}"#
        )
    }

    #[test]
    fn only_the_plans_jobs_acceptance_and_end_are_kept() {
        let log = vec![
            line("job.accepted", "a", "pd"),
            line("job.step", "a", ""),
            line("job.accepted", "b", "other"),
            line("job.succeeded", "b", ""),
            line("job.succeeded", "a", ""),
            line("job.rolled_back", "a", ""),
            r#"{"seq":9,"event":"checkpoint"}"#.to_owned(),
            "not json".to_owned(),
        ];
        let digests = BTreeSet::from(["pd".to_owned()]);
        assert_eq!(
            entries_of(&log, &digests),
            vec![log[0].clone(), log[4].clone(), log[5].clone()]
        );
        // An end before its acceptance (another job of the same id earlier) is not taken.
        let early = vec![line("job.failed", "a", ""), line("job.accepted", "a", "pd")];
        assert_eq!(entries_of(&early, &digests), vec![early[1].clone()]);
        assert!(entries_of(&log, &BTreeSet::new()).is_empty());
    }
}
