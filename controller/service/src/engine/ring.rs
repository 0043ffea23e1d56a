//! One ring: catch up hosts that joined earlier rings' selectors, deploy this ring's hosts
//! `max_parallel` at a time, stop as soon as fewer than `min_healthy` can still succeed, then
//! bake: the ring must stay healthy (its gates) until the bake ends. The gates' counts are kept
//! in the rollout's record as they grow, so a resumed bake does not forget what it counted.

use std::collections::HashMap;
use std::sync::Arc;

use gantry_client::clock::now_ms;
use gantry_proto::v1::RingGates;
use tokio::task::JoinSet;

use super::host::HostEnd;
use super::{Engine, Run, Stop};
use crate::agents::Agents;
use crate::plan::{max_parallel, min_healthy, ring_hosts};
use crate::store::{AgentRecord, BakeCounts, HostAction, HostRecord, HostStep, Store};

impl<S: Store, A: Agents> Engine<S, A> {
    /// Runs the current ring to its verdict: `Ok` when it passed its bake.
    pub(crate) async fn run_ring(&self, run: &mut Run) -> Result<(), Stop> {
        let i = run.r.ring;
        let Some(ring) = run.plan.ring(i).cloned() else {
            return Err(Stop::Failed {
                host: String::new(),
                reason: format!("the plan has no ring {i}"),
            });
        };
        let inventory = self.inner.store.agents().await?;
        let records: HashMap<String, HostRecord> = self
            .inner
            .store
            .hosts(&run.r.id)
            .await?
            .into_iter()
            .map(|h| (h.agent_id.clone(), h))
            .collect();
        self.catch_up(run, &inventory, &records).await?;

        let hosts: Vec<AgentRecord> = ring_hosts(&run.plan.plan, &ring, &inventory)
            .into_iter()
            .cloned()
            .collect();
        if hosts.is_empty() {
            return Err(Stop::Failed {
                host: String::new(),
                reason: "no agent of the inventory matches its selector".into(),
            });
        }
        let need = min_healthy(&ring, hosts.len());
        let allowed = hosts.len() - need.min(hosts.len());
        let mut failures: Vec<(String, String)> = hosts
            .iter()
            .filter_map(|h| records.get(&h.id))
            .filter(|r| r.action == HostAction::Deploy && r.step == HostStep::Failed)
            .map(|r| (r.agent_id.clone(), r.reason.clone()))
            .collect();
        let todo: Vec<AgentRecord> = hosts
            .iter()
            .filter(|h| {
                records.get(&h.id).is_none_or(|r| {
                    !(r.action == HostAction::Deploy
                        && matches!(r.step, HostStep::Succeeded | HostStep::Failed))
                })
            })
            .cloned()
            .collect();
        if run.r.bake_until_ms == 0 {
            for chunk in todo.chunks(max_parallel(&ring, hosts.len())) {
                if failures.len() > allowed {
                    break;
                }
                if self.control_pending(&run.r.id).await? {
                    return Err(Stop::Control);
                }
                for (host, end) in self.run_hosts(run, chunk, i, HostAction::Deploy).await? {
                    if let HostEnd::Failed(reason) = end {
                        failures.push((host, reason));
                    }
                }
            }
            if failures.len() > allowed {
                let (host, reason) = failures.swap_remove(0);
                return Err(Stop::Failed { host, reason });
            }
            run.r.bake_until_ms =
                now_ms().saturating_add(i64::try_from(ring.bake_ms).unwrap_or(i64::MAX));
            self.save(run).await?;
            if ring.bake_ms > 0 {
                self.audit(
                    "ring.baking",
                    &[
                        ("rollout", run.r.id.clone().into()),
                        ("ring", i.into()),
                        ("bake_ms", ring.bake_ms.into()),
                    ],
                )?;
            }
        }
        if ring.bake_ms == 0 {
            return Ok(());
        }
        let gates = ring.gates.unwrap_or_default();
        let healthy: Vec<AgentRecord> = hosts
            .into_iter()
            .filter(|h| !failures.iter().any(|(f, _)| f == &h.id))
            .collect();
        self.bake(run, &healthy, &gates).await
    }

    /// Runs one chunk of hosts at once.
    pub(crate) async fn run_hosts(
        &self,
        run: &Run,
        chunk: &[AgentRecord],
        ring: u32,
        action: HostAction,
    ) -> Result<Vec<(String, HostEnd)>, Stop> {
        let mut set = JoinSet::new();
        for agent in chunk {
            let engine = self.clone();
            let view = Run {
                held: run.held.clone(),
                plan: run.plan.clone(),
                r: run.r.clone(),
            };
            let agent = agent.clone();
            set.spawn(async move {
                let end = engine.run_host(&view, &agent, ring, action).await;
                (agent.id, end)
            });
        }
        let mut ends = Vec::new();
        let mut stop = None;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((id, Ok(end))) => ends.push((id, end)),
                Ok((_, Err(e))) => stop = stop.or(Some(e)),
                Err(e) => {
                    stop = stop.or(Some(Stop::Error(super::EngineError::Task(e.to_string()))));
                }
            }
        }
        match stop {
            Some(e) => Err(e),
            None => {
                ends.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(ends)
            }
        }
    }

    /// Hosts that joined the selector of a ring that already passed get the plan too.
    async fn catch_up(
        &self,
        run: &Run,
        inventory: &[AgentRecord],
        records: &HashMap<String, HostRecord>,
    ) -> Result<(), Stop> {
        for j in 0..run.r.ring {
            let Some(ring) = run.plan.ring(j) else {
                continue;
            };
            let late: Vec<AgentRecord> = ring_hosts(&run.plan.plan, ring, inventory)
                .into_iter()
                .filter(|a| !records.contains_key(&a.id))
                .cloned()
                .collect();
            for chunk in late.chunks(max_parallel(ring, late.len())) {
                self.run_hosts(run, chunk, j, HostAction::Deploy).await?;
            }
        }
        Ok(())
    }

    /// Watches the ring's hosts until the bake ends; a gate crossed fails the ring.
    async fn bake(
        &self,
        run: &mut Run,
        hosts: &[AgentRecord],
        gates: &RingGates,
    ) -> Result<(), Stop> {
        let app = run.plan.plan.app.clone();
        loop {
            run.held.check()?;
            if self.control_pending(&run.r.id).await? {
                return Err(Stop::Control);
            }
            let mut unhealthy: Vec<(String, String)> = Vec::new();
            let mut counted = false;
            for agent in hosts {
                match self.inner.agents.health(agent, &app).await {
                    Ok(h) => {
                        let before = run.r.bake_counts.get(&agent.id).copied();
                        let counts = match before {
                            Some(c) => c.read(h.restarts, h.conn_errors),
                            None => BakeCounts::first(h.restarts, h.conn_errors),
                        };
                        if before != Some(counts) {
                            run.r.bake_counts.insert(agent.id.clone(), counts);
                            counted = true;
                        }
                        let restarts = counts.restarts;
                        if restarts > u64::from(gates.max_restarts) {
                            return Err(Stop::Failed {
                                host: agent.id.clone(),
                                reason: format!(
                                    "{restarts} instance restarts during the bake (gate max_restarts = {})",
                                    gates.max_restarts
                                ),
                            });
                        }
                        let errors = counts.conn_errors;
                        if errors > gates.max_conn_errors {
                            return Err(Stop::Failed {
                                host: agent.id.clone(),
                                reason: format!(
                                    "{errors} front-door connection errors during the bake (gate max_conn_errors = {})",
                                    gates.max_conn_errors
                                ),
                            });
                        }
                        if !h.running {
                            unhealthy.push((agent.id.clone(), "an instance is not running".into()));
                        }
                    }
                    Err(e) => {
                        unhealthy.push((agent.id.clone(), format!("status unavailable: {e}")))
                    }
                }
            }
            // The counts are kept before the next reading, so a driver that resumes this bake
            // counts on from them instead of from a fresh baseline.
            if counted {
                self.save(run).await?;
            }
            if unhealthy.len() > usize::try_from(gates.max_unhealthy_hosts).unwrap_or(usize::MAX) {
                let (host, why) = unhealthy.swap_remove(0);
                return Err(Stop::Failed {
                    host,
                    reason: format!(
                        "unhealthy during the bake: {why} ({} unhealthy hosts, gate max_unhealthy_hosts = {})",
                        unhealthy.len() + 1,
                        gates.max_unhealthy_hosts
                    ),
                });
            }
            let left = run.r.bake_until_ms.saturating_sub(now_ms());
            if left <= 0 {
                return Ok(());
            }
            let left = std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0));
            tokio::time::sleep(self.inner.settings.poll.min(left)).await;
        }
    }
}

/// The hosts of `records` whose deploy in `ring` may need rolling back: dispatched, and not
/// failed (a failed deploy has rolled itself back on the agent).
pub(crate) fn rollback_candidates(records: &[HostRecord], ring: u32) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = records
        .iter()
        .filter(|h| h.ring == ring)
        .filter(|h| match (h.action, h.step) {
            (HostAction::Deploy, HostStep::Failed | HostStep::Pending) => false,
            (HostAction::Deploy, _) => true,
            (HostAction::Rollback, step) => step != HostStep::Succeeded,
        })
        .map(|h| Arc::from(h.agent_id.as_str()))
        .collect();
    out.sort();
    out
}
