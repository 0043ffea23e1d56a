//! Rolling back per `on_failure` or an abort: rings from the failing one down to
//! `rollback_to`, latest first, each host whose deploy went through getting a rollback
//! dispatch (authorised on the agent by the signed plan's `on_failure`).

use super::ring::rollback_candidates;
use super::{Engine, Run, Stop};
use crate::agents::Agents;
use crate::plan::max_parallel;
use crate::store::{AgentRecord, HostAction, RolloutState, Store};

impl<S: Store, A: Agents> Engine<S, A> {
    /// Rolls back what the plan deployed in rings `ring` down to `rollback_to`, then ends the
    /// rollout `rolled_back`. Resumable: a host already rolled back is not sent again.
    pub(crate) async fn roll_back(&self, run: &mut Run) -> Result<(), Stop> {
        let inventory = self.inner.store.agents().await?;
        let mut failed: Vec<String> = Vec::new();
        let top = run.r.ring;
        let bottom = run.r.rollback_to.min(top);
        for ring in (bottom..=top).rev() {
            let records = self.inner.store.hosts(&run.r.id).await?;
            let ids = rollback_candidates(&records, ring);
            let agents: Vec<AgentRecord> = ids
                .iter()
                .map(|id| {
                    inventory
                        .iter()
                        .find(|a| a.id.as_str() == &**id)
                        .cloned()
                        .unwrap_or_else(|| AgentRecord {
                            id: id.to_string(),
                            addr: String::new(),
                            version: String::new(),
                            environment: String::new(),
                            labels: Default::default(),
                            reachable: false,
                            last_seen_ms: 0,
                            error: "no longer in the inventory".into(),
                        })
                })
                .collect();
            let Some(def) = run.plan.ring(ring).cloned() else {
                continue;
            };
            for chunk in agents.chunks(max_parallel(&def, agents.len())) {
                for (host, end) in self
                    .run_hosts(run, chunk, ring, HostAction::Rollback)
                    .await?
                {
                    if let super::host::HostEnd::Failed(reason) = end {
                        failed.push(format!("{host}: {reason}"));
                    }
                }
            }
        }
        if !failed.is_empty() {
            run.r.reason = format!("{}; rollback failed on {}", run.r.reason, failed.join("; "));
        }
        run.r.state = RolloutState::RolledBack;
        self.audit(
            "rollout.rolled_back",
            &[
                ("rollout", run.r.id.clone().into()),
                ("reason", run.r.reason.clone().into()),
            ],
        )?;
        self.save(run).await
    }
}
