//! Watching instances that passed their health check: [`stays_healthy`] for a while (the
//! rollout's minimum healthy time, a blue-green preview), and [`healthy_for`], the wait until
//! healthy followed by that watch.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::{HealthError, probe_once, wait_healthy};
use crate::job::HealthSpec;
use crate::supervisor::{InstanceState, RunAs};

/// What a health task needs of one instance: who it is, where its release is, its state, and
/// the user its exec probes run as.
#[derive(Debug)]
pub struct ProbeTarget {
    /// Its index.
    pub index: u32,
    /// Its port.
    pub port: u16,
    /// Its release's directory (exec probes run there).
    pub dir: PathBuf,
    /// Its supervisor's state.
    pub state: watch::Receiver<InstanceState>,
    /// Who exec probes run as.
    pub run_as: RunAs,
}

/// Waits until the target is healthy, then watches it for `min_healthy` (none when zero).
///
/// # Errors
///
/// [`HealthError`]; [`HealthError::NotHealthyFor`] when it failed within `min_healthy`.
pub async fn healthy_for(
    target: &ProbeTarget,
    health: &HealthSpec,
    min_healthy: Duration,
) -> Result<(), HealthError> {
    let mut watch = target.state.clone();
    wait_healthy(
        health,
        target.port,
        &target.dir,
        target.state.clone(),
        &target.run_as,
    )
    .await?;
    if min_healthy.is_zero() {
        return Ok(());
    }
    stays_healthy(&mut watch, health, target, min_healthy)
        .await
        .map_err(|why| HealthError::NotHealthyFor {
            time: min_healthy,
            why: Box::new(why),
        })
}

/// Keeps probing an instance for `time`: Err as soon as it exits or restarts, or fails
/// `unhealthy_threshold` probes in a row.
///
/// # Errors
///
/// [`HealthError::StoppedRunning`] or [`HealthError::BecameUnhealthy`].
pub async fn stays_healthy(
    state: &mut watch::Receiver<InstanceState>,
    health: &HealthSpec,
    target: &ProbeTarget,
    time: Duration,
) -> Result<(), HealthError> {
    let restarts = |s: &InstanceState| match s {
        InstanceState::Running { restarts, .. } => Some(*restarts),
        _ => None,
    };
    let initial = restarts(&state.borrow());
    let end = tokio::time::Instant::now() + time;
    let mut failures = 0;
    loop {
        let now_state = state.borrow().clone();
        if initial.is_none() || restarts(&now_state) != initial {
            return Err(HealthError::StoppedRunning {
                state: now_state.to_string(),
            });
        }
        let probe = &health.probe;
        match probe_once(
            probe,
            target.port,
            &target.dir,
            health.timeout,
            &target.run_as,
        )
        .await
        {
            Ok(()) => failures = 0,
            Err(last) => {
                failures += 1;
                if failures >= health.unhealthy_threshold.max(1) {
                    return Err(HealthError::BecameUnhealthy { failures, last });
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        // Wake early if the process exits: a timeout here is the normal probe interval.
        let _ = tokio::time::timeout(
            health.interval.min(end - now),
            state.wait_for(|s| restarts(s) != initial),
        )
        .await;
    }
}
