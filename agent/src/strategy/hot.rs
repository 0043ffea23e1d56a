//! The hot strategy: stop the old instances, switch `current`, start the new ones, wait until
//! they are healthy, then watch them for the rollout's `watch` period. Brief downtime by
//! design; none behind the front door, which holds new connections from before the old
//! instances stop (they drain first) until the new ones are routed. When the new release
//! fails (unhealthy, crashing, or past the progress deadline) the previous release is
//! reactivated and verified healthy.
//!
//! Rollback and restart jobs reuse the same sequence with a release already on disk.

use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::steps::{install_within, start_set, stop_set, wait_set_healthy, within};
use super::{JobCtx, StrategyError};
use crate::app::AppRuntime;
use crate::error::reason;
use crate::job::ReleaseSpec;
use crate::progress::Ended;

/// Extra time a rollback gets beyond the old release's own health deadline.
const RESTORE_MARGIN: Duration = Duration::from_secs(30);

/// Deploys `release`: install, then replace the running release with it.
pub async fn deploy(app: &mut AppRuntime, ctx: &JobCtx, release: &ReleaseSpec) -> Ended {
    let deadline = Instant::now() + release.progress_deadline;
    // Install before touching anything: a release that cannot be unpacked changes nothing.
    if let Some(failed) = install_within(app, ctx, release, deadline).await {
        return failed;
    }
    replace(app, ctx, release, deadline).await
}

/// Returns to the job's target version, or the previous release, from disk.
pub async fn rollback(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    let target = match super::rollback_target(app, ctx) {
        Ok(target) => target,
        Err(outcome) => return outcome,
    };
    if app.state.current.as_ref() == Some(&target) && !app.instances.is_empty() {
        return Ended::failed(format!("release {target} is already current"));
    }
    let Some(release) = app.state.spec_of(&target).cloned() else {
        return Ended::failed(format!(
            "release {target} of app {} is not on disk; deploy it again",
            app.policy.name
        ));
    };
    if !app.releases.is_on_disk(&target) {
        return Ended::failed(format!("release {target} is no longer on disk"));
    }
    let deadline = Instant::now() + release.progress_deadline;
    replace(app, ctx, &release, deadline).await
}

/// Restarts the current release's instances.
pub async fn restart(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    let Some(current) = app.state.current.clone() else {
        return Ended::failed(format!("app {} has no release to restart", app.policy.name));
    };
    let Some(release) = app.state.spec_of(&current).cloned() else {
        return Ended::failed(format!("the spec of release {current} is missing"));
    };
    let deadline = Instant::now() + release.progress_deadline;
    let run = async {
        super::shift::hold_new(app, ctx).await?;
        stop_set(app, ctx).await?;
        start_set(app, ctx, &release).await?;
        wait_set_healthy(app, ctx, &release).await?;
        refresh_routes(app, ctx).await
    };
    match within(deadline, release.progress_deadline, run).await {
        Ok(()) => Ended::succeeded(format!(
            "release {current} restarted on {} instance(s)",
            release.instances
        )),
        Err(failure) => Ended::failed(failure),
    }
}

/// Stops what runs, switches to `release`, starts it and waits for health; on failure puts
/// back what ran before.
async fn replace(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    deadline: Instant,
) -> Ended {
    let before_current = app.state.current.clone();
    let before_previous = app.state.previous.clone();
    let forward = async {
        super::shift::hold_new(app, ctx).await?;
        stop_set(app, ctx).await?;
        switch(app, ctx, &release.version).await?;
        start_set(app, ctx, release).await?;
        wait_set_healthy(app, ctx, release).await?;
        refresh_routes(app, ctx).await?;
        let ports: Vec<u16> = app.instances.iter().map(|i| i.record().port).collect();
        super::watch::watch(app, ctx, release, &ports, super::shift::STABLE).await
    };
    let failure = match within(deadline, release.progress_deadline, forward).await {
        Ok(()) => {
            app.state.last_known_good = Some(release.version.clone());
            if let Err(e) = app.persist() {
                return Ended::failed(reason(&e));
            }
            return Ended::succeeded(format!(
                "release {} is healthy on {} instance(s)",
                release.version, release.instances
            ));
        }
        Err(failure) => failure,
    };
    restore(app, ctx, before_current, before_previous, failure).await
}

/// Points `current` at `version` and records the switch.
async fn switch(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    version: &semver::Version,
) -> Result<(), StrategyError> {
    ctx.step(
        "release.activating",
        format!("switching current to {version}"),
    )
    .await?;
    app.releases.activate(version)?;
    if app.state.current.as_ref() != Some(version) {
        app.state.previous = app.state.current.take();
        app.state.current = Some(version.clone());
    }
    app.persist()?;
    Ok(())
}

/// Stops the failed release and brings back the one that ran before, verified healthy.
async fn restore(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    before_current: Option<semver::Version>,
    before_previous: Option<semver::Version>,
    failure: String,
) -> Ended {
    let failed_version = app.state.current.clone();
    let Some(target) = before_current.filter(|v| Some(v) != failed_version.as_ref()) else {
        ctx.note(
            "rollback.impossible",
            format!("{failure}; there is no previous release to return to"),
        )
        .await;
        stop_best_effort(app, ctx).await;
        return Ended::failed(format!("{failure}; no previous release to return to"));
    };
    ctx.note(
        "rollback.started",
        format!("{failure}; returning to {target}"),
    )
    .await;
    stop_best_effort(app, ctx).await;
    let Some(release) = app.state.spec_of(&target).cloned() else {
        return Ended::failed(format!("{failure}; the spec of {target} is missing"));
    };
    let give_up = Instant::now() + release.health.deadline + RESTORE_MARGIN;
    let back = async {
        app.releases.activate(&target)?;
        app.state.current = Some(target.clone());
        app.state.previous = before_previous;
        app.persist()?;
        ctx.note("release.activated", format!("current is {target} again"))
            .await;
        start_set(app, ctx, &release).await?;
        wait_set_healthy(app, ctx, &release).await?;
        refresh_routes(app, ctx).await
    };
    let restored: Result<(), StrategyError> = match timeout_at(give_up, back).await {
        Ok(r) => r,
        Err(_) => Err(StrategyError::Deadline(
            release.health.deadline + RESTORE_MARGIN,
        )),
    };
    match restored {
        Ok(()) => {
            ctx.note("rollback.done", format!("{target} is healthy again"))
                .await;
            Ended::rolled_back(format!(
                "{failure}; rolled back to {target}, which is healthy"
            ))
        }
        Err(e) => Ended::failed(format!(
            "{failure}; rollback to {target} failed: {}",
            reason(&e)
        )),
    }
}

async fn stop_best_effort(app: &mut AppRuntime, ctx: &JobCtx) {
    if let Err(e) = super::shift::hold_new(app, ctx).await {
        ctx.note("traffic.hold_failed", reason(&e)).await;
    }
    if let Err(e) = stop_set(app, ctx).await {
        ctx.note("instances.stop_failed", reason(&e)).await;
    }
}

/// With a router, points it at the instances now running (same ports, new backend ids).
async fn refresh_routes(app: &AppRuntime, ctx: &JobCtx) -> Result<(), StrategyError> {
    if app.router().is_none() {
        return Ok(());
    }
    let ports = crate::app::slots::ports_in(app, app.state.active_slot);
    super::shift::serve_only(app, ctx, &ports, "route to the new instances")
        .await
        .map(drop)
}
