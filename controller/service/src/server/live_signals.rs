//! The golden signals of a rollout's hosts for `GetRollout`: each host's agent is asked for
//! the app's status at the time of the call (the `Status` RPC it already answers for the
//! health checks), all at once, each within [`SIGNALS_TIMEOUT`]. Live data: nothing is stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_proto::v1::{CohortSignals, RolloutStatus};
use tokio::task::JoinSet;

use crate::dial::Dialer;
use crate::store::AgentRecord;

/// How long one agent may take to answer before its host shows a timeout instead.
pub const SIGNALS_TIMEOUT: Duration = Duration::from_secs(2);

/// Fills in every host's `signals` (or `signals_error`) of `status` from its agent among
/// `agents`.
pub async fn fill(dialer: &Arc<Dialer>, agents: Vec<AgentRecord>, status: &mut RolloutStatus) {
    let by_id: HashMap<String, AgentRecord> =
        agents.into_iter().map(|a| (a.id.clone(), a)).collect();
    let mut asks = JoinSet::new();
    for (r, ring) in status.rings.iter().enumerate() {
        for (h, host) in ring.hosts.iter().enumerate() {
            let Some(agent) = by_id.get(&host.agent_id).cloned() else {
                continue;
            };
            let (dialer, app) = (Arc::clone(dialer), status.app.clone());
            asks.spawn(async move {
                let got =
                    match tokio::time::timeout(SIGNALS_TIMEOUT, dialer.app_status(&agent, &app))
                        .await
                    {
                        Ok(Ok(a)) => Ok(a.signals),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(format!(
                            "no answer within {}",
                            humantime::format_duration(SIGNALS_TIMEOUT)
                        )),
                    };
                (r, h, got)
            });
        }
    }
    let mut answers: HashMap<(usize, usize), Result<Vec<CohortSignals>, String>> = HashMap::new();
    while let Some(done) = asks.join_next().await {
        if let Ok((r, h, got)) = done {
            answers.insert((r, h), got);
        }
    }
    for (r, ring) in status.rings.iter_mut().enumerate() {
        for (h, host) in ring.hosts.iter_mut().enumerate() {
            match answers.remove(&(r, h)) {
                Some(Ok(signals)) => host.signals = signals,
                Some(Err(e)) => host.signals_error = e,
                None => host.signals_error = "not in the inventory".to_owned(),
            }
        }
    }
}
