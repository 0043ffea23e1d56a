//! The rolling strategy: replace instances in batches, in place. For each batch: out of
//! rotation, drain, stop, start the new release on the same ports, wait until healthy (and
//! stays up for `min_healthy_time`), back in rotation, and with `batch_analysis` its new
//! instances analysed that long (probes, restarts, each new backend's HTTP signals and the
//! Prometheus checks, see [`super::judge`]); then the whole release is watched for the
//! rollout's `watch` period. With two or more instances some are always serving. On failure, with `auto_revert` (the default), every updated instance is
//! returned to the previous release the same way.

use std::ops::Range;

use tokio::time::{Instant, timeout_at};

use super::judge::{BATCH, Window, judge_signals, signals_text};
use super::shift::{self, serve_only};
use super::steps::{
    install_within, record_release, start_instances, stop_ports, wait_healthy_ports, watch_healthy,
    within,
};
use super::{JobCtx, StrategyError};
use crate::app::AppRuntime;
use crate::app::slots::{backend_id, ports_in};
use crate::error::reason;
use crate::job::ReleaseSpec;
use crate::progress::Ended;
use crate::state::Slot;

/// Deploys `release` batch by batch.
pub async fn deploy(app: &mut AppRuntime, ctx: &JobCtx, release: &ReleaseSpec) -> Ended {
    let deadline = Instant::now() + release.progress_deadline;
    if let Some(failed) = install_within(app, ctx, release, deadline).await {
        return failed;
    }
    let slot = app.state.active_slot;
    let old = app
        .state
        .current
        .clone()
        .and_then(|v| app.state.spec_of(&v).cloned());
    let running = u32::try_from(ports_in(app, slot).len()).unwrap_or(u32::MAX);
    let total = release.instances.max(running);
    let batch = release.rollout.batch.of(total);
    // Old instances are replaced in batches; new ones beyond the old count are started first
    // (so a single instance is never the only one taken out), extra old ones stopped last.
    let replaced = release.instances.min(running);
    let batches = replaced.div_ceil(batch);
    let mut touched = 0..0;
    let forward = async {
        if release.instances > running {
            touched = 0..release.instances;
            ctx.step(
                "batch.started",
                format!("scaling up: instances {running}..{}", release.instances),
            )
            .await?;
            let new = start_instances(app, ctx, release, slot, running..release.instances).await?;
            wait_healthy_ports(app, ctx, release, &new).await?;
            let serving = ports_in(app, slot);
            serve_only(app, ctx, &serving, "new instances in rotation").await?;
        }
        for (n, first) in (0..replaced).step_by(batch as usize).enumerate() {
            let indexes = first..(first + batch).min(replaced);
            touched = 0..touched.end.max(indexes.end);
            app.shared.set_rollout(format!(
                "rolling to {}: batch {}/{batches}",
                release.version,
                n + 1
            ));
            ctx.step_of(
                "batch.started",
                format!("batch {}/{batches}: instances {indexes:?}", n + 1),
                u32::try_from(n).unwrap_or(u32::MAX),
                batches,
            )
            .await?;
            let new = replace_batch(app, ctx, slot, indexes.clone(), release).await?;
            analyse_batch(
                app,
                ctx,
                release,
                &new,
                &format!("batch {}/{batches}", n + 1),
            )
            .await?;
            ctx.step_of(
                "batch.done",
                format!("batch {}/{batches} runs {}", n + 1, release.version),
                u32::try_from(n + 1).unwrap_or(u32::MAX),
                batches,
            )
            .await?;
        }
        if running > release.instances {
            touched = 0..running;
            ctx.step(
                "batch.started",
                format!("scaling down: instances {}..{running}", release.instances),
            )
            .await?;
            replace_batch(app, ctx, slot, release.instances..running, release).await?;
        }
        // A watch failure reverts every instance, as a failed last batch would.
        let all = ports_in(app, slot);
        super::watch::watch(app, ctx, release, &all, shift::STABLE).await?;
        Ok::<(), StrategyError>(())
    };
    let failure = match within(deadline, release.progress_deadline, forward).await {
        Ok(()) => {
            return match record_release(app, &release.version, slot) {
                Ok(()) => Ended::succeeded(format!(
                    "release {} is healthy on {} instance(s), replaced {batch} at a time",
                    release.version, release.instances
                )),
                Err(e) => Ended::failed(reason(&e)),
            };
        }
        Err(failure) => failure,
    };
    revert(app, ctx, slot, touched, old.as_ref(), release, failure).await
}

/// Puts the instances of a failed rolling deploy back on the previous release.
async fn revert(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    slot: Slot,
    touched: Range<u32>,
    old: Option<&ReleaseSpec>,
    release: &ReleaseSpec,
    failure: String,
) -> Ended {
    let Some(old) = old.filter(|_| release.rollout.auto_revert) else {
        let versions = describe_versions(app, slot);
        ctx.note(
            "rollback.skipped",
            format!("{failure}; not reverting ({versions})"),
        )
        .await;
        return Ended::failed(format!("{failure}; instances left as they are: {versions}"));
    };
    ctx.note(
        "rollback.started",
        format!(
            "{failure}; returning instances {touched:?} to {}",
            old.version
        ),
    )
    .await;
    app.shared
        .set_rollout(format!("reverting to {}", old.version));
    let give_up =
        Instant::now() + old.health.deadline * 2 + drain_budget(ctx) + old.progress_deadline;
    let back = async {
        let batch = release.rollout.batch.of(touched.end.max(1));
        for first in touched.clone().step_by(batch as usize) {
            let indexes = first..(first + batch).min(touched.end);
            replace_batch(app, ctx, slot, indexes, old).await?;
        }
        Ok::<(), StrategyError>(())
    };
    match timeout_at(give_up, back).await {
        Ok(Ok(())) => {
            ctx.note(
                "rollback.done",
                format!("all instances run {} again", old.version),
            )
            .await;
            Ended::rolled_back(format!(
                "{failure}; rolled back to {}, which is healthy",
                old.version
            ))
        }
        Ok(Err(e)) => Ended::failed(format!(
            "{failure}; reverting to {} failed: {} ({})",
            old.version,
            reason(&e),
            describe_versions(app, slot)
        )),
        Err(_) => Ended::failed(format!(
            "{failure}; reverting to {} did not finish in time ({})",
            old.version,
            describe_versions(app, slot)
        )),
    }
}

fn drain_budget(ctx: &JobCtx) -> std::time::Duration {
    shift::drain_timeout(ctx)
}

/// "2 run 1.1.0, 2 run 1.0.0".
fn describe_versions(app: &AppRuntime, slot: Slot) -> String {
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for port in ports_in(app, slot) {
        if let Some(i) = app.instances.iter().find(|i| i.record().port == port) {
            *counts.entry(i.record().version.to_string()).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return "no instance runs".to_owned();
    }
    counts
        .iter()
        .map(|(v, n)| format!("{n} run {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Watches a batch's new instances on `ports` for the rollout's `batch_analysis` (no-op when
/// zero): their probes and restarts, each one's HTTP signals as a backend of the front door,
/// and the Prometheus checks (on the `stable` cohort, which the batch has joined).
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] naming what failed; the caller reverts.
async fn analyse_batch(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    ports: &[u16],
    label: &str,
) -> Result<(), StrategyError> {
    let period = release.rollout.batch_analysis;
    if period.is_zero() || ports.is_empty() {
        return Ok(());
    }
    let windows: Vec<Window> = ports
        .iter()
        .filter_map(|p| backend_id(app, *p))
        .filter_map(|id| Window::backend(app, id))
        .collect();
    let signals = signals_text(!windows.is_empty(), release);
    ctx.step(
        "batch.analysis",
        format!(
            "{label}: analysing ports {ports:?} for {}: health probes, restarts{signals}",
            humantime::format_duration(period)
        ),
    )
    .await?;
    let (_, unanswered) = tokio::try_join!(
        watch_healthy(app, release, ports, period),
        judge_signals(app, ctx, release, period, shift::STABLE, windows, &BATCH),
    )?;
    let mut passed = format!(
        "{label}: stayed healthy{}",
        if signals.is_empty() {
            ""
        } else {
            " within the limits"
        }
    );
    for v in &unanswered {
        passed.push_str(&format!("; no verdict: {v}"));
    }
    ctx.step("batch.analysis_passed", passed).await
}

/// Replaces the instances `indexes` of `slot` with `target`: out of rotation, drained,
/// stopped, started anew, healthy, back in rotation. Returns the new instances' ports.
async fn replace_batch(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    slot: Slot,
    indexes: Range<u32>,
    target: &ReleaseSpec,
) -> Result<Vec<u16>, StrategyError> {
    let in_batch = |app: &AppRuntime, port: u16| {
        app.instances
            .iter()
            .find(|i| i.record().port == port)
            .is_some_and(|i| indexes.contains(&i.record().index))
    };
    let slot_ports = ports_in(app, slot);
    let (old, staying): (Vec<u16>, Vec<u16>) = slot_ports.iter().partition(|p| in_batch(app, **p));
    if !old.is_empty() {
        ctx.step(
            "backend.draining",
            format!("taking ports {old:?} out of rotation"),
        )
        .await?;
        serve_only(app, ctx, &staying, "batch out of rotation").await?;
        shift::wait_drained(app, ctx, &old).await;
        stop_ports(app, ctx, &old).await?;
    }
    let start = indexes.start.min(target.instances)..indexes.end.min(target.instances);
    let new = start_instances(app, ctx, target, slot, start).await?;
    wait_healthy_ports(app, ctx, target, &new).await?;
    let serving = ports_in(app, slot);
    serve_only(app, ctx, &serving, "batch back in rotation").await?;
    Ok(new)
}

/// Restarts the current release of an app behind a router one instance at a time, each out
/// of rotation, drained, restarted, healthy and back before the next, so the app keeps
/// serving (with a single instance there is a moment with no backend).
pub async fn restart(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    let Some(current) = app.state.current.clone() else {
        return Ended::failed(format!("app {} has no release to restart", app.policy.name));
    };
    let Some(release) = app.state.spec_of(&current).cloned() else {
        return Ended::failed(format!("the spec of release {current} is missing"));
    };
    let slot = app.state.active_slot;
    let run = async {
        for index in 0..release.instances {
            replace_batch(app, ctx, slot, index..index + 1, &release).await?;
        }
        Ok::<(), StrategyError>(())
    };
    let deadline = Instant::now() + release.progress_deadline;
    match within(deadline, release.progress_deadline, run).await {
        Ok(()) => Ended::succeeded(format!(
            "release {current} restarted on {} instance(s), one at a time",
            release.instances
        )),
        Err(failure) => Ended::failed(failure),
    }
}

/// Brings an app whose job was interrupted (agent killed mid-rollout) back to one release:
/// every instance of the active slot runs `current` (the last release that finished; a
/// rolling deploy switches it only at the end), the other slot is emptied unless it is the
/// blue-green standby, and the router serves the active slot.
pub async fn converge(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    let Some(target) = app
        .state
        .current
        .clone()
        .and_then(|v| app.state.spec_of(&v).cloned())
    else {
        return Ended::succeeded("no release to converge to".to_owned());
    };
    let slot = app.state.active_slot;
    let run = async {
        let standby = app.state.standby.as_ref().map(|s| s.slot);
        let idle: Vec<u16> = ports_in(app, slot.other())
            .into_iter()
            .filter(|_| standby != Some(slot.other()))
            .collect();
        if !idle.is_empty() {
            let serving = ports_in(app, slot);
            serve_only(app, ctx, &serving, "serve the active slot").await?;
            stop_ports(app, ctx, &idle).await?;
        }
        let stray: Vec<u32> = app
            .instances
            .iter()
            .map(|i| i.record())
            .filter(|r| r.slot == slot && r.version != target.version)
            .map(|r| r.index)
            .collect();
        for index in stray {
            replace_batch(app, ctx, slot, index..index + 1, &target).await?;
        }
        let present: Vec<u32> = app
            .instances
            .iter()
            .map(|i| i.record())
            .filter(|r| r.slot == slot)
            .map(|r| r.index)
            .collect();
        for index in (0..target.instances).filter(|i| !present.contains(i)) {
            let new = start_instances(app, ctx, &target, slot, index..index + 1).await?;
            wait_healthy_ports(app, ctx, &target, &new).await?;
        }
        let serving = ports_in(app, slot);
        serve_only(app, ctx, &serving, "serve the converged release").await?;
        Ok::<(), StrategyError>(())
    };
    let deadline = Instant::now() + target.progress_deadline;
    match within(deadline, target.progress_deadline, run).await {
        Ok(()) => Ended::succeeded(format!(
            "every instance of the {} slot runs {}",
            slot.as_str(),
            target.version
        )),
        Err(failure) => Ended::failed(failure),
    }
}
