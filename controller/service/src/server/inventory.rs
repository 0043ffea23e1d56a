//! The inventory: the configured agents, with what each reports in `Info` (version,
//! environment, labels), whether it answered, and why not. Refreshed periodically; a host that
//! stops answering keeps its last known labels, marked unreachable.

use std::sync::Arc;
use std::time::Duration;

use gantry_client::clock::now_ms;

use crate::agents::Agents;
use crate::config::AgentEntry;
use crate::dial::Dialer;
use crate::store::{AgentRecord, Store, StoreError};

/// Adds configured agents the store does not know, and updates the address of known ones.
///
/// # Errors
/// [`StoreError`].
pub async fn seed<S: Store>(store: &S, agents: &[AgentEntry]) -> Result<(), StoreError> {
    let known = store.agents().await?;
    for a in agents {
        let record = match known.iter().find(|k| k.id == a.id) {
            Some(k) => AgentRecord {
                addr: a.addr.clone(),
                ..k.clone()
            },
            None => AgentRecord {
                id: a.id.clone(),
                addr: a.addr.clone(),
                version: String::new(),
                environment: String::new(),
                labels: Default::default(),
                reachable: false,
                last_seen_ms: 0,
                error: "not contacted yet".into(),
            },
        };
        store.put_agent(record).await?;
    }
    Ok(())
}

/// Reads every configured agent's `Info` once.
pub async fn refresh_once<S: Store>(store: &S, dialer: &Dialer, agents: &[AgentEntry]) {
    let known = match store.agents().await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the inventory");
            return;
        }
    };
    for entry in agents {
        let Some(mut rec) = known.iter().find(|k| k.id == entry.id).cloned() else {
            continue;
        };
        match dialer.info(&rec).await {
            Ok(facts) => {
                rec.version = facts.version;
                rec.environment = facts.environment;
                rec.labels = facts.labels;
                rec.reachable = true;
                rec.last_seen_ms = now_ms();
                rec.error.clear();
            }
            Err(e) => {
                rec.reachable = false;
                rec.error = e;
            }
        }
        if let Err(e) = store.put_agent(rec).await {
            tracing::warn!(agent = %entry.id, error = %e, "cannot update the inventory");
        }
    }
}

/// Refreshes forever, every `every` and whenever an agent dials in.
pub async fn refresh<S: Store>(
    store: Arc<S>,
    dialer: Arc<Dialer>,
    agents: Vec<AgentEntry>,
    every: Duration,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = dialer.sessions().dialled_in() => {}
        }
        refresh_once(store.as_ref(), dialer.as_ref(), &agents).await;
    }
}
