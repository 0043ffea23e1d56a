//! One driver per unfinished rollout: every poll (or when woken by a start or a control
//! request) each unfinished rollout without a local driver gets one, which takes the lease if
//! it can. A rollout whose lease another replica holds is tried again at the next poll, so a
//! dead replica's rollouts move here within one lease period plus one poll.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::agents::Agents;
use crate::engine::{Driven, Engine};
use crate::store::Store;

/// Runs forever.
pub async fn run<S: Store, A: Agents>(
    engine: Engine<S, A>,
    store: Arc<S>,
    wake: Arc<Notify>,
    poll: Duration,
) {
    let driving: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    loop {
        match store.rollouts().await {
            Ok(all) => {
                for r in all.into_iter().filter(|r| !r.state.is_final()) {
                    let fresh = driving
                        .lock()
                        .map(|mut d| d.insert(r.id.clone()))
                        .unwrap_or(false);
                    if !fresh {
                        continue;
                    }
                    let engine = engine.clone();
                    let driving = driving.clone();
                    tokio::spawn(async move {
                        match engine.drive(&r.id).await {
                            Ok(Driven::Finished(state)) => {
                                tracing::info!(rollout = %r.id, state = state.as_str(), "rollout ended");
                            }
                            Ok(Driven::NotLeader) => {
                                tracing::debug!(rollout = %r.id, "another replica drives it");
                            }
                            Ok(Driven::LeaseLost) => {
                                tracing::warn!(rollout = %r.id, "lease lost; another replica drives it now");
                            }
                            Err(e) => {
                                tracing::error!(rollout = %r.id, error = %e, "driver stopped")
                            }
                        }
                        if let Ok(mut d) = driving.lock() {
                            d.remove(&r.id);
                        }
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list rollouts"),
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}
