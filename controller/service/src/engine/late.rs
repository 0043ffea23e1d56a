//! Hosts that join a ring's selector after the rollout has succeeded (a new machine, a label
//! changed, an agent that answered `Info` only now): they get the plan too, as long as the plan
//! is still valid and no newer rollout of the same app and environment has succeeded since
//! (a late host is brought up to date, never back to an older release). While a rollout still
//! runs, `ring.rs` catches up the rings already passed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gantry_client::clock::unix_secs;

use super::{Engine, EngineError, Run, Stop};
use crate::agents::Agents;
use crate::lease::HeldLease;
use crate::plan::{LoadedPlan, max_parallel, ring_hosts};
use crate::store::{AgentRecord, HostAction, RolloutRecord, RolloutState, Store, StoreError};

/// The hosts of the inventory a ring of `plan` selects that have no step in the rollout yet,
/// each with the first ring that selects it.
fn late_hosts(
    plan: &LoadedPlan,
    inventory: &[AgentRecord],
    known: &HashSet<String>,
) -> Vec<(u32, AgentRecord)> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut late = Vec::new();
    for j in 0..plan.ring_count() {
        let Some(ring) = plan.ring(j) else {
            continue;
        };
        for a in ring_hosts(&plan.plan, ring, inventory) {
            if !known.contains(&a.id) && seen.insert(a.id.clone()) {
                late.push((j, a.clone()));
            }
        }
    }
    late
}

/// Whether another rollout of the same app and environment succeeded after `r` was created.
fn superseded(r: &RolloutRecord, plan: &LoadedPlan, all: &[RolloutRecord]) -> bool {
    all.iter()
        .filter(|o| o.id != r.id && o.state == RolloutState::Succeeded)
        .filter(|o| o.created_ms > r.created_ms)
        .filter_map(|o| LoadedPlan::decode(&o.signed_plan).ok())
        .any(|o| o.plan.app == plan.plan.app && o.plan.environment == plan.plan.environment)
}

impl<S: Store, A: Agents> Engine<S, A> {
    /// Brings the late hosts of succeeded rollout `rollout_id` up to date: each host a ring
    /// selects now but that has no step yet gets the plan's deploy, under this replica's lease,
    /// `max_parallel` at a time per ring. A failure is that host's own (`host.failed`); the
    /// rollout stays succeeded. Nothing happens when the plan has expired, a newer rollout of
    /// the app and environment has succeeded, or another replica holds the lease. Returns how
    /// many hosts were dispatched.
    ///
    /// # Errors
    /// [`EngineError`]: the store or the audit log failed, or the stored plan is unreadable.
    pub async fn catch_up_finished(&self, rollout_id: &str) -> Result<usize, EngineError> {
        let store = &self.inner.store;
        let Some(r) = store.rollout(rollout_id).await? else {
            return Err(StoreError::NotFound(rollout_id.to_owned()).into());
        };
        if r.state != RolloutState::Succeeded {
            return Ok(0);
        }
        let plan = Arc::new(LoadedPlan::decode(&r.signed_plan)?);
        if plan.plan.expires_at <= unix_secs(std::time::SystemTime::now()) {
            return Ok(0);
        }
        let known: HashSet<String> = store
            .hosts(&r.id)
            .await?
            .into_iter()
            .map(|h| h.agent_id)
            .collect();
        let inventory = store.agents().await?;
        if late_hosts(&plan, &inventory, &known).is_empty() {
            return Ok(0);
        }
        if superseded(&r, &plan, &store.rollouts().await?) {
            return Ok(0);
        }
        let Some(held) =
            HeldLease::acquire(store.clone(), &r.id, &self.inner.settings.lease).await?
        else {
            return Ok(0);
        };
        // Read again under the lease: another replica may have caught them up meanwhile.
        let known: HashSet<String> = store
            .hosts(&r.id)
            .await?
            .into_iter()
            .map(|h| h.agent_id)
            .collect();
        let late = late_hosts(&plan, &store.agents().await?, &known);
        if late.is_empty() {
            return Ok(0);
        }
        let mut by_ring: HashMap<u32, Vec<AgentRecord>> = HashMap::new();
        for (j, a) in &late {
            by_ring.entry(*j).or_default().push(a.clone());
        }
        let ids: Vec<String> = late.iter().map(|(_, a)| a.id.clone()).collect();
        self.audit(
            "rollout.catching_up",
            &[
                ("rollout", r.id.clone().into()),
                ("agent_ids", ids.clone().into()),
                ("epoch", held.epoch().into()),
            ],
        )?;
        tracing::info!(rollout = %r.id, hosts = ?ids, "bringing late hosts up to date");
        let run = Run {
            held: Arc::new(held),
            plan: plan.clone(),
            r,
        };
        let mut rings: Vec<u32> = by_ring.keys().copied().collect();
        rings.sort_unstable();
        let mut dispatched = 0;
        for j in rings {
            let hosts = &by_ring[&j];
            let ring = plan.ring(j).cloned().unwrap_or_default();
            for chunk in hosts.chunks(max_parallel(&ring, hosts.len())) {
                match self.run_hosts(&run, chunk, j, HostAction::Deploy).await {
                    // Each host's end is in its own record and `host.*` entries.
                    Ok(_) | Err(Stop::Control | Stop::Failed { .. }) => {}
                    // The new holder finds the rest still late and goes on.
                    Err(Stop::Lost) => return Ok(dispatched),
                    Err(Stop::Error(e)) => return Err(e),
                }
                dispatched += chunk.len();
            }
        }
        Ok(dispatched)
    }
}
