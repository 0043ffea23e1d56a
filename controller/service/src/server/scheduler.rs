//! One driver per unfinished rollout: every poll (or when woken by a start or a control
//! request) each unfinished rollout without a local driver gets one, which takes the lease if
//! it can. A rollout whose lease another replica holds is tried again at the next poll, so a
//! dead replica's rollouts move here within one lease period plus one poll.
//!
//! Every [`CATCH_UP_EVERY`], each succeeded rollout is checked for late hosts (agents its rings
//! select now that have no step yet), which [`Engine::catch_up_finished`] brings up to date.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::agents::Agents;
use crate::engine::{Driven, Engine};
use crate::store::{RolloutState, Store};

/// How often succeeded rollouts are checked for hosts that joined a ring's selector since.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(5);

/// Runs forever.
pub async fn run<S: Store, A: Agents>(
    engine: Engine<S, A>,
    store: Arc<S>,
    wake: Arc<Notify>,
    poll: Duration,
) {
    let driving: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let mut last_catch_up: Option<Instant> = None;
    loop {
        match store.rollouts().await {
            Ok(all) => {
                if last_catch_up.is_none_or(|t| t.elapsed() >= CATCH_UP_EVERY) {
                    last_catch_up = Some(Instant::now());
                    for r in all.iter().filter(|r| r.state == RolloutState::Succeeded) {
                        catch_up(&engine, &driving, r.id.clone());
                    }
                }
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

/// Brings the late hosts of succeeded rollout `id` up to date in a task of its own, unless one
/// is at it already.
fn catch_up<S: Store, A: Agents>(
    engine: &Engine<S, A>,
    driving: &Arc<Mutex<HashSet<String>>>,
    id: String,
) {
    let fresh = driving
        .lock()
        .map(|mut d| d.insert(id.clone()))
        .unwrap_or(false);
    if !fresh {
        return;
    }
    let engine = engine.clone();
    let driving = driving.clone();
    tokio::spawn(async move {
        match engine.catch_up_finished(&id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rollout = %id, hosts = n, "late hosts brought up to date"),
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "cannot bring late hosts up to date")
            }
        }
        if let Ok(mut d) = driving.lock() {
            d.remove(&id);
        }
    });
}
