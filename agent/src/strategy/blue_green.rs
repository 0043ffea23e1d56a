//! The blue-green strategy: start the full new set in the idle slot, wait until healthy,
//! optionally send it a preview share of new connections while it is watched (probes,
//! restarts, connection errors and, with a front door in HTTP mode, the preview cohort's
//! error rate and p95 latency, plus the job's Prometheus checks), then switch
//! all new connections at once. The old slot keeps running for `scale_down_delay`, so a
//! rollback in that window is a switch back; there is never a moment with no healthy backend.
//!
//! Rollbacks of apps with a router also go through here: a switch back to the standby slot
//! when it still runs the target, else the target is started from disk in the idle slot.

use std::time::Duration;

use tokio::time::Instant;

use super::shift::{self, PREVIEW, Weights, serve_only, share};
use super::steps::{
    install_within, record_release, refuse_pending_controls, start_instances, stop_ports,
    wait_healthy_ports, within,
};
use super::{JobCtx, Refused, StrategyError, Unhealthy};
use crate::app::AppRuntime;
use crate::app::slots::ports_in;
use crate::error::reason;
use crate::job::{Action, ReleaseSpec};
use crate::progress::{Ended, Outcome};
use crate::state::Standby;

/// Deploys `release` into the idle slot and switches to it.
pub async fn deploy(app: &mut AppRuntime, ctx: &JobCtx, release: &ReleaseSpec) -> Ended {
    let deadline = Instant::now() + release.progress_deadline;
    if let Some(failed) = install_within(app, ctx, release, deadline).await {
        return failed;
    }
    switch_to(app, ctx, release, deadline).await
}

/// Starts `release` in the idle slot, previews, waits for promotion if asked, switches.
async fn switch_to(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    deadline: Instant,
) -> Ended {
    let active = app.state.active_slot;
    let idle = active.other();
    let old_ports = ports_in(app, active);
    let old_version = app.state.current.clone();
    // The idle slot may still hold a standby from the last switch: it is replaced now.
    let leftovers = ports_in(app, idle);
    if let Err(e) = stop_ports(app, ctx, &leftovers).await {
        return Ended::failed(reason(&e));
    }
    app.state.standby = None;
    let mut switch_ms = 0;
    let forward = async {
        app.shared.set_rollout(format!(
            "blue-green: starting {} in {}",
            release.version,
            idle.as_str()
        ));
        let new_ports = start_instances(app, ctx, release, idle, 0..release.instances).await?;
        wait_healthy_ports(app, ctx, release, &new_ports).await?;
        let rollout = &release.rollout;
        if rollout.preview_weight > 0 && !old_ports.is_empty() {
            let mut weights = Weights::new();
            share(
                &mut weights,
                &old_ports,
                100 - rollout.preview_weight.min(100),
            );
            share(&mut weights, &new_ports, rollout.preview_weight);
            app.shared.set_rollout(format!(
                "blue-green: preview {}% to {} for {}",
                rollout.preview_weight,
                release.version,
                humantime::format_duration(rollout.preview)
            ));
            // Counted from before the preview gets traffic: an earlier deploy's preview counts.
            let base = super::judge::Window::cohort(app, PREVIEW);
            shift::apply(app, ctx, &weights, "preview").await?;
            watch(app, ctx, release, &new_ports, rollout.preview, base).await?;
        }
        if !rollout.auto_promote {
            wait_for_promote(app, ctx, release).await?;
        }
        app.shared
            .set_rollout(format!("blue-green: switching to {}", idle.as_str()));
        let took = serve_only(
            app,
            ctx,
            &new_ports,
            &format!("switch to {}", idle.as_str()),
        )
        .await?;
        switch_ms = took.as_millis();
        Ok::<Vec<u16>, StrategyError>(new_ports)
    };
    let result = within(deadline, release.progress_deadline, forward).await;
    refuse_pending_controls(app);
    let failure = match result {
        Ok(_) => {
            if let Err(e) = record_release(app, &release.version, idle) {
                return Ended::failed(reason(&e));
            }
            let delay = release.rollout.scale_down_delay;
            let kept = match (&old_version, old_ports.is_empty()) {
                (Some(v), false) => {
                    app.state.standby = Some(Standby {
                        slot: active,
                        version: v.clone(),
                        until_ms: ctx.clock.now_ms()
                            + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                    });
                    if let Err(e) = app.persist() {
                        return Ended::failed(reason(&e));
                    }
                    format!(
                        "; {} keeps {v} running for {} for an instant rollback",
                        active.as_str(),
                        humantime::format_duration(delay)
                    )
                }
                _ => String::new(),
            };
            return Ended::succeeded(format!(
                "switched to {} ({} on {} instance(s)) in {switch_ms} ms{kept}",
                idle.as_str(),
                release.version,
                release.instances
            ));
        }
        Err(failure) => failure,
    };
    // Back to the old slot; it never stopped serving unless the preview or switch moved traffic.
    ctx.note(
        "rollback.started",
        format!("{failure}; keeping {}", active.as_str()),
    )
    .await;
    if !old_ports.is_empty()
        && let Err(e) = serve_only(
            app,
            ctx,
            &old_ports,
            &format!("back to {}", active.as_str()),
        )
        .await
    {
        return Ended::failed(format!("{failure}; switching back failed: {}", reason(&e)));
    }
    let new_ports = ports_in(app, idle);
    if let Err(e) = stop_ports(app, ctx, &new_ports).await {
        ctx.note("instances.stop_failed", reason(&e)).await;
    }
    // Service is restored either way; a state file that could not be written is said in the
    // job's record (the executor tries again when the job ends).
    if let Err(e) = app.persist() {
        ctx.note("state.persist_failed", reason(&e)).await;
    }
    match old_version {
        Some(v) if !old_ports.is_empty() => {
            Ended::rolled_back(format!("{failure}; {} still serves {v}", active.as_str()))
        }
        _ => Ended::failed(format!("{failure}; there was no previous release serving")),
    }
}

/// Watches the new instances for `time`: any exit, restart, run of failed health probes, or
/// front-door connection error to them fails the preview, and so does a breach of the
/// preview cohort's HTTP signals (counted from `base`) or of a Prometheus check, judged as
/// the post-deploy watch judges them.
async fn watch(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    ports: &[u16],
    time: Duration,
    base: Option<super::judge::Window>,
) -> Result<(), StrategyError> {
    let errors_before = shift::connect_errors(app, ports);
    let signals = super::judge::signals_text(base.is_some(), release);
    ctx.step(
        "preview.started",
        format!(
            "watching the preview of {} for {}: health probes, restarts, connection errors{signals}",
            release.version,
            humantime::format_duration(time)
        ),
    )
    .await?;
    let (_, unanswered) = tokio::try_join!(
        super::steps::watch_healthy(app, release, ports, time),
        super::judge::judge_signals(
            app,
            ctx,
            release,
            time,
            PREVIEW,
            base.into_iter().collect(),
            &super::judge::PREVIEW
        ),
    )?;
    let errors = shift::connect_errors(app, ports).saturating_sub(errors_before);
    if errors > 0 {
        return Err(Unhealthy::PreviewConnErrors { errors }.into());
    }
    let mut passed = format!(
        "healthy, no crash and no connection error during the preview{}",
        if signals.is_empty() {
            ""
        } else {
            "; its signals stayed within the limits"
        }
    );
    for v in &unanswered {
        passed.push_str(&format!("; no verdict: {v}"));
    }
    ctx.step("preview.passed", passed).await
}

/// Pauses the rollout until a signed promote (go on) or abort (fail) job arrives.
pub(super) async fn wait_for_promote(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
) -> Result<(), StrategyError> {
    let message = format!(
        "waiting for promote: run gantry promote --app {} (or gantry abort)",
        app.policy.name
    );
    app.shared.set_rollout(format!(
        "{} {}: {message}",
        release.strategy, release.version
    ));
    ctx.step("rollout.paused", message).await?;
    match app.control.recv().await {
        Some(control) if control.action == Action::Promote => {
            let _ = control.reply.send(Ok(format!(
                "promoted the rollout of {} (job {})",
                release.version, ctx.job.spec.id
            )));
            ctx.step(
                "rollout.promoted",
                format!("promoted by job {}", control.job_id),
            )
            .await
        }
        Some(control) => {
            let _ = control.reply.send(Ok(format!(
                "aborted the rollout of {} (job {})",
                release.version, ctx.job.spec.id
            )));
            Err(StrategyError::Aborted(control.job_id.to_string()))
        }
        None => Err(Refused::ControlClosed.into()),
    }
}

/// Returns an app with a router to the target release: an instant switch back to the standby
/// slot when it still runs it, else a blue-green deploy of the target from disk.
pub async fn rollback(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    let target = match super::rollback_target(app, ctx) {
        Ok(target) => target,
        Err(outcome) => return outcome,
    };
    if app.state.current.as_ref() == Some(&target) {
        return Ended::failed(format!("release {target} is already current"));
    }
    let standby = app.state.standby.clone().filter(|s| s.version == target);
    if let Some(standby) = standby {
        let ports = ports_in(app, standby.slot);
        if !ports.is_empty() {
            let active = app.state.active_slot;
            return match serve_only(
                app,
                ctx,
                &ports,
                &format!("switch back to {}", standby.slot.as_str()),
            )
            .await
            {
                Ok(took) => {
                    let failed = ports_in(app, active);
                    if let Err(e) = stop_ports(app, ctx, &failed).await {
                        ctx.note("instances.stop_failed", reason(&e)).await;
                    }
                    app.state.standby = None;
                    match record_release(app, &target, standby.slot) {
                        Ok(()) => Ended::succeeded(format!(
                            "switched back to {} ({target}) in {} ms",
                            standby.slot.as_str(),
                            took.as_millis()
                        )),
                        Err(e) => Ended::failed(reason(&e)),
                    }
                }
                Err(e) => Ended::failed(reason(&e)),
            };
        }
    }
    let Some(mut release) = app.state.spec_of(&target).cloned() else {
        return Ended::failed(format!(
            "release {target} of app {} is not on disk; deploy it again",
            app.policy.name
        ));
    };
    // A rollback switches as soon as the target is healthy: no preview, no waiting.
    release.rollout.preview_weight = 0;
    release.rollout.auto_promote = true;
    if !app.releases.is_on_disk(&target) {
        return Ended::failed(format!("release {target} is no longer on disk"));
    }
    let deadline = Instant::now() + release.progress_deadline;
    let mut ended = switch_to(app, ctx, &release, deadline).await;
    // Back where it started is a failed rollback job, not a rolled-back one.
    if ended.outcome == Outcome::RolledBack {
        ended.outcome = Outcome::Failed;
    }
    ended
}
