//! Deploy strategies and the steps they share: install a release, start a set of instances,
//! wait until they are healthy, stop a set, and switch `current`.
//!
//! Every step is recorded in the audit log *before* it is taken ([`JobCtx::step`]), so the log
//! never claims less than happened. Rollback steps use [`JobCtx::note`], which never fails the
//! restore of service because of the log.

mod blue_green;
mod canary;
mod hot;
mod rolling;
pub mod routing;

pub use rolling::converge;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

use crate::artifact::{ArtifactError, ArtifactStore, UnpackLimits};
use crate::audit::{AuditError, AuditLog, Entry, HeldAppend};
use crate::error::reason;
use crate::executor::{AppRuntime, EventKind, JobHandle};
use crate::job::{Action, ReleaseSpec, StrategyKind, VerifiedJob};
use crate::state::{InstanceRecord, StateError};
use crate::supervisor::{Backoff, Instance, InstanceSpec, SupervisorError};

/// How a strategy run ended, with a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyOutcome {
    /// Done and healthy.
    Succeeded(String),
    /// Failed; the previous release serves again.
    RolledBack(String),
    /// Failed; nothing to return to, or the return failed too.
    Failed(String),
    /// The agent stopped during the run.
    Interrupted(String),
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// The step could not be recorded, so it was not taken.
    #[error("audit log unavailable")]
    Audit(#[from] AuditError),
    /// Installing the release failed.
    #[error("cannot install the release")]
    Install(#[from] ArtifactError),
    /// An instance could not be started or stopped.
    #[error("instance process")]
    Supervisor(#[from] SupervisorError),
    /// The app's state could not be persisted.
    #[error("cannot persist the app's state")]
    State(#[from] StateError),
    /// An instance did not become healthy.
    #[error("{0}")]
    Unhealthy(String),
    /// The job's progress deadline passed.
    #[error("progress deadline of {} exceeded", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// The job cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
    /// The router refused a route table or did not confirm it.
    #[error("traffic routing failed")]
    Traffic(#[from] crate::traffic::TrafficError),
    /// A signed abort job stopped the rollout.
    #[error("aborted by job {0}")]
    Aborted(String),
}

/// What a running job needs besides its app.
#[derive(Debug)]
pub struct JobCtx {
    /// The job.
    pub job: Arc<VerifiedJob>,
    /// Where its events go.
    pub handle: Arc<JobHandle>,
    /// The audit log.
    pub audit: AuditLog,
    /// The artifact store.
    pub store: Arc<ArtifactStore>,
    /// Limits for unpacking.
    pub unpack_limits: UnpackLimits,
    /// How many releases to keep on disk.
    pub releases_kept: usize,
    /// Instance restart policy.
    pub backoff: Backoff,
}

impl JobCtx {
    /// Records a step durably, then publishes it. The step must not be taken if this fails.
    ///
    /// # Errors
    ///
    /// [`StrategyError::Audit`] when the audit log cannot record it.
    pub async fn step(&self, step: &str, message: impl Into<String>) -> Result<(), StrategyError> {
        self.step_of(step, message.into(), 0, 0).await
    }

    /// [`JobCtx::step`] with progress units.
    ///
    /// # Errors
    ///
    /// [`StrategyError::Audit`] when the audit log cannot record it.
    pub async fn step_of(
        &self,
        step: &str,
        message: String,
        done: u32,
        total: u32,
    ) -> Result<(), StrategyError> {
        let spec = &self.job.spec;
        let entry = Entry::new("job.step")
            .with("job_id", json!(spec.id))
            .with("app", json!(spec.app))
            .with("step", json!(step))
            .with("detail", json!(message));
        self.audit.append(entry).await?;
        tracing::info!(step, "{message}");
        self.handle.publish(EventKind::Step {
            step: step.to_owned(),
            message,
            done,
            total,
        });
        Ok(())
    }

    /// Records a step without ever blocking it (rollback: restoring service comes first).
    /// While the audit log cannot be written the entry is held in memory and written, in order,
    /// once it can ([`AuditLog::append_held`]), so the record of a rollback is not lost.
    pub async fn note(&self, step: &str, message: impl Into<String>) {
        let message = message.into();
        let spec = &self.job.spec;
        let entry = Entry::new("job.step")
            .with("job_id", json!(spec.id))
            .with("app", json!(spec.app))
            .with("step", json!(step))
            .with("detail", json!(message));
        // Held, not refused, when the disk is full: see AuditLog::append_held.
        match self.audit.append_held(entry).await {
            Ok(HeldAppend::Written(_)) => tracing::info!(step, "{message}"),
            Ok(HeldAppend::Held { queued, cause }) => tracing::warn!(
                step,
                "{message} (held for the audit log, {queued} waiting: {cause})"
            ),
            Err(e) => tracing::error!(step, "{message} (not in the audit log: {})", reason(&e)),
        }
        self.handle.publish(EventKind::Step {
            step: step.to_owned(),
            message,
            done: 0,
            total: 0,
        });
    }
}

/// Stops every instance and the app's front door.
async fn stop_all(app: &mut AppRuntime, ctx: &JobCtx) -> Result<(), StrategyError> {
    stop_set(app, ctx).await?;
    let front_door = app
        .front_door
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(front_door) = front_door {
        ctx.step("front_door.stopping", "stopping the front door")
            .await?;
        front_door.stop().await?;
        app.state.front_door = None;
        app.persist()?;
    }
    Ok(())
}

/// Runs the job's action on its app.
pub async fn run(app: &mut AppRuntime, ctx: &JobCtx) -> StrategyOutcome {
    let spec = &ctx.job.spec;
    let stopped_front_door = app
        .front_door
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_none();
    if spec.action != Action::Stop && stopped_front_door {
        // Started again after a stop job (or a failed start); a no-op without one. A front
        // door that cannot start fails the job at once, with the cause.
        let started = routing::ensure_front_door(app, &ctx.audit, ctx.backoff).await;
        if let Err(e) = started {
            return StrategyOutcome::Failed(reason(&e));
        }
        if let Err(e) = app.persist() {
            return StrategyOutcome::Failed(reason(&e));
        }
    }
    match spec.action {
        Action::Deploy => match &spec.release {
            Some(release) => match release.strategy {
                StrategyKind::Hot => hot::deploy(app, ctx, release).await,
                StrategyKind::Rolling => rolling::deploy(app, ctx, release).await,
                StrategyKind::BlueGreen => blue_green::deploy(app, ctx, release).await,
                StrategyKind::Canary => canary::deploy(app, ctx, release).await,
            },
            None => StrategyOutcome::Failed("a deploy job must carry a release".to_owned()),
        },
        // With a router, a rollback never leaves the app without a healthy backend.
        Action::Rollback if app.router().is_some() => blue_green::rollback(app, ctx).await,
        Action::Rollback => hot::rollback(app, ctx).await,
        Action::Restart => hot::restart(app, ctx).await,
        Action::Stop => match stop_all(app, ctx).await {
            Ok(()) => StrategyOutcome::Succeeded("all instances stopped".to_owned()),
            Err(e) => StrategyOutcome::Failed(reason(&e)),
        },
        Action::Promote | Action::Abort => StrategyOutcome::Failed(format!(
            "there is no paused rollout of app {} to {}",
            spec.app, spec.action
        )),
    }
}

/// The release a rollback returns to: the job's target version, else the app's previous
/// release.
///
/// # Errors
///
/// The failed outcome to end the job with when the app has no previous release.
pub fn rollback_target(app: &AppRuntime, ctx: &JobCtx) -> Result<semver::Version, StrategyOutcome> {
    ctx.job
        .spec
        .target_version
        .clone()
        .or_else(|| app.state.previous.clone())
        .ok_or_else(|| {
            StrategyOutcome::Failed(format!(
                "app {} has no previous release to roll back to",
                app.policy.name
            ))
        })
}

/// The port of instance `index` in the app's active slot.
///
/// # Errors
///
/// [`StrategyError::Refused`] when the app's port range has no port for it.
pub fn port_for(app: &AppRuntime, index: u32) -> Result<u16, StrategyError> {
    routing::slot_port(app, app.state.active_slot, index)
}

/// The supervisor's spec for one instance of a release.
fn instance_spec(app: &AppRuntime, release: &ReleaseSpec, index: u32, port: u16) -> InstanceSpec {
    InstanceSpec {
        app: app.policy.name.clone(),
        version: release.version.clone(),
        index,
        port,
        release_dir: app.releases.dir_of(&release.version),
        command: release.command.clone(),
        env: release.env.clone(),
        run_as: app.policy.run_as.clone(),
        log_dir: app.dir.join("logs"),
        stop_timeout: app.policy.stop_timeout,
    }
}

/// Unpacks the release (unless it is on disk already) and remembers its spec.
///
/// # Errors
///
/// [`StrategyError`] when it cannot be unpacked or recorded.
pub async fn install(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
) -> Result<(), StrategyError> {
    if !app.releases.is_on_disk(&release.version) {
        ctx.step(
            "artifact.unpacking",
            format!(
                "unpacking {} ({} bytes)",
                release.artifact_sha256, release.artifact_size
            ),
        )
        .await?;
    }
    let releases = app.releases.clone();
    let store = Arc::clone(&ctx.store);
    let release_owned = release.clone();
    let limits = ctx.unpack_limits;
    let dir =
        tokio::task::spawn_blocking(move || releases.install(&store, &release_owned, &limits))
            .await
            .map_err(|e| StrategyError::Refused(format!("unpacking task failed: {e}")))??;
    app.state
        .releases
        .insert(release.version.to_string(), release.clone());
    app.persist()?;
    ctx.step(
        "artifact.installed",
        format!("release {} is in {}", release.version, dir.display()),
    )
    .await
}

/// Starts every instance of a release in the active slot and records them.
///
/// # Errors
///
/// [`StrategyError`] when an instance cannot be spawned or the step recorded.
pub async fn start_set(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
) -> Result<(), StrategyError> {
    let slot = app.state.active_slot;
    start_instances(app, ctx, release, slot, 0..release.instances)
        .await
        .map(drop)
}

/// Starts instances `indexes` of a release in `slot`; returns their ports.
///
/// # Errors
///
/// [`StrategyError`] when an instance cannot be spawned or the step recorded.
pub async fn start_instances(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    slot: crate::state::Slot,
    indexes: std::ops::Range<u32>,
) -> Result<Vec<u16>, StrategyError> {
    let total = indexes.len();
    let total = u32::try_from(total).unwrap_or(u32::MAX);
    let mut ports = Vec::new();
    for (n, index) in indexes.enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let port = routing::slot_port(app, slot, index)?;
        ctx.step_of(
            "instance.starting",
            format!(
                "starting instance {index} of {} on port {port} ({} slot)",
                release.version,
                slot.as_str()
            ),
            n,
            total,
        )
        .await?;
        let instance =
            Instance::spawn(instance_spec(app, release, index, port), ctx.backoff).await?;
        let pid = instance.record().pid;
        app.instances.push(instance);
        app.persist()?;
        ports.push(port);
        ctx.step_of(
            "instance.started",
            format!("instance {index} started: pid {pid}, port {port}"),
            n + 1,
            total,
        )
        .await?;
    }
    Ok(ports)
}

/// Waits until every live instance is healthy, or the first one fails.
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] naming the instance and why.
pub async fn wait_set_healthy(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
) -> Result<(), StrategyError> {
    let ports: Vec<u16> = app.instances.iter().map(|i| i.record().port).collect();
    wait_healthy_ports(app, ctx, release, &ports).await
}

/// Waits until the instances on `ports` are healthy (within the rollout's healthy deadline,
/// else the health check's) and then stay up for the rollout's `min_healthy_time`.
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] naming the instance and why.
pub async fn wait_healthy_ports(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    ports: &[u16],
) -> Result<(), StrategyError> {
    let mut health = release.health.clone();
    if let Some(deadline) = release.rollout.healthy_deadline {
        health.deadline = deadline;
    }
    let min_healthy = release.rollout.min_healthy_time;
    let mut checks = JoinSet::new();
    for ProbeTarget {
        index,
        port,
        dir,
        state,
        run_as,
    } in probe_targets(app, ports)
    {
        let health = health.clone();
        checks.spawn(async move {
            // Exec probes run as the app's user, never as the agent.
            let mut watch = state.clone();
            let result = crate::health::wait_healthy_as(&health, port, &dir, state, &run_as)
                .await
                .map_err(|e| reason(&e));
            let result = match result {
                Ok(()) if !min_healthy.is_zero() => {
                    stays_healthy(&mut watch, &health, port, &dir, &run_as, min_healthy)
                        .await
                        .map_err(|why| {
                            format!(
                                "{why} within the minimum healthy time of {}",
                                humantime::format_duration(min_healthy)
                            )
                        })
                }
                other => other,
            };
            (index, port, result)
        });
    }
    let total = u32::try_from(checks.len()).unwrap_or(u32::MAX);
    let mut done = 0;
    while let Some(joined) = checks.join_next().await {
        let (index, port, result) = joined
            .map_err(|e| StrategyError::Unhealthy(format!("health check task failed: {e}")))?;
        match result {
            Ok(()) => {
                done += 1;
                ctx.step_of(
                    "health.passed",
                    format!("instance {index} (port {port}) is healthy"),
                    done,
                    total,
                )
                .await?;
            }
            Err(e) => {
                let why = format!("instance {index} (port {port}) is unhealthy: {e}");
                ctx.note("health.failed", why.clone()).await;
                return Err(StrategyError::Unhealthy(why));
            }
        }
    }
    Ok(())
}

/// Keeps probing an instance for `time`: Err as soon as it exits or restarts, or fails
/// `unhealthy_threshold` probes in a row.
pub async fn stays_healthy(
    state: &mut tokio::sync::watch::Receiver<crate::supervisor::InstanceState>,
    health: &crate::job::HealthSpec,
    port: u16,
    dir: &std::path::Path,
    run_as: &crate::config::RunAs,
    time: Duration,
) -> Result<(), String> {
    use crate::supervisor::InstanceState;
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
            return Err(format!("it stopped running ({now_state})"));
        }
        match crate::health::probe_once_as(&health.probe, port, dir, health.timeout, run_as).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= health.unhealthy_threshold.max(1) {
                    return Err(format!(
                        "it became unhealthy ({failures} failed probe(s): {})",
                        reason(&e)
                    ));
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        // Wake early if the process exits.
        let _ = tokio::time::timeout(
            health.interval.min(end - now),
            state.wait_for(|s| restarts(s) != initial),
        )
        .await;
    }
}

/// Watches the instances on `ports` for `time` with their health probes: Err naming the first
/// that exits, restarts or turns unhealthy.
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] naming the instance and why.
pub async fn watch_healthy(
    app: &AppRuntime,
    release: &ReleaseSpec,
    ports: &[u16],
    time: Duration,
) -> Result<(), StrategyError> {
    let mut checks = JoinSet::new();
    for ProbeTarget {
        index,
        port,
        dir,
        mut state,
        run_as,
    } in probe_targets(app, ports)
    {
        let health = release.health.clone();
        checks.spawn(async move {
            let r = stays_healthy(&mut state, &health, port, &dir, &run_as, time).await;
            (index, port, r)
        });
    }
    while let Some(joined) = checks.join_next().await {
        let (index, port, result) = joined
            .map_err(|e| StrategyError::Unhealthy(format!("health watch task failed: {e}")))?;
        if let Err(why) = result {
            return Err(StrategyError::Unhealthy(format!(
                "instance {index} (port {port}): {why}"
            )));
        }
    }
    Ok(())
}

/// What a health task needs of one instance: who it is, where its release is, its state, and
/// the user its exec probes run as.
struct ProbeTarget {
    index: u32,
    port: u16,
    dir: std::path::PathBuf,
    state: tokio::sync::watch::Receiver<crate::supervisor::InstanceState>,
    run_as: crate::config::RunAs,
}

/// The instances of `app` on `ports`, ready to be probed.
fn probe_targets(app: &AppRuntime, ports: &[u16]) -> Vec<ProbeTarget> {
    app.instances
        .iter()
        .filter(|i| ports.contains(&i.record().port))
        .map(|instance| {
            let InstanceRecord {
                index,
                port,
                version,
                ..
            } = instance.record();
            ProbeTarget {
                index,
                port,
                dir: app.releases.dir_of(&version),
                state: instance.state(),
                run_as: app.policy.run_as.clone(),
            }
        })
        .collect()
}

/// Stops the instances on `ports` and forgets them.
///
/// # Errors
///
/// [`StrategyError`] when the step cannot be recorded, a stop fails, or the state cannot be
/// persisted.
pub async fn stop_ports(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    ports: &[u16],
) -> Result<(), StrategyError> {
    let (stop, keep): (Vec<_>, Vec<_>) = app
        .instances
        .drain(..)
        .partition(|i| ports.contains(&i.record().port));
    app.instances = keep;
    if stop.is_empty() {
        return Ok(());
    }
    ctx.step(
        "instances.stopping",
        format!("stopping {} instance(s) on ports {ports:?}", stop.len()),
    )
    .await?;
    let mut first_error = None;
    for instance in stop {
        if let Err(e) = instance.stop().await {
            first_error.get_or_insert(e);
        }
    }
    app.persist()?;
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Stops every live instance (SIGTERM, then SIGKILL after the stop timeout) and records it.
///
/// # Errors
///
/// [`StrategyError`] when the step cannot be recorded or the state persisted.
pub async fn stop_set(app: &mut AppRuntime, ctx: &JobCtx) -> Result<(), StrategyError> {
    if app.instances.is_empty() {
        return Ok(());
    }
    ctx.step(
        "instances.stopping",
        format!("stopping {} instance(s)", app.instances.len()),
    )
    .await?;
    let mut first_error = None;
    for instance in app.instances.drain(..) {
        if let Err(e) = instance.stop().await {
            first_error.get_or_insert(e);
        }
    }
    app.persist()?;
    match first_error {
        Some(e) => Err(e.into()),
        None => ctx.step("instances.stopped", "all instances stopped").await,
    }
}

/// Adopts the instances a previous agent run left running; restarts those of the current
/// release that are gone. Called once per app at start, before any job.
pub async fn adopt(app: &mut AppRuntime, audit: &AuditLog, backoff: Backoff) {
    let records = std::mem::take(&mut app.state.instances);
    for record in records {
        let Some(release) = app.state.spec_of(&record.version).cloned() else {
            tracing::warn!(
                pid = record.pid,
                "no spec for release {}; not adopting",
                record.version
            );
            continue;
        };
        let spec = instance_spec(app, &release, record.index, record.port);
        match Instance::adopt(spec, &record, backoff) {
            Ok(Some(instance)) => {
                record_entry(audit, "instance.adopted", app, &record).await;
                app.instances.push(instance);
            }
            Ok(None) => record_entry(audit, "instance.lost", app, &record).await,
            Err(e) => {
                tracing::error!(pid = record.pid, "cannot adopt instance: {}", reason(&e));
                record_entry(audit, "instance.lost", app, &record).await;
            }
        }
    }
    let Some(current) = app.state.current.clone() else {
        return;
    };
    let Some(release) = app.state.spec_of(&current).cloned() else {
        return;
    };
    for index in 0..release.instances {
        if app.instances.iter().any(|i| i.record().index == index) {
            continue;
        }
        let Ok(port) = port_for(app, index) else {
            continue;
        };
        match Instance::spawn(instance_spec(app, &release, index, port), backoff).await {
            Ok(instance) => {
                record_entry(audit, "instance.restarted", app, &instance.record()).await;
                app.instances.push(instance);
            }
            Err(e) => tracing::error!(
                index,
                "cannot restart instance of {current}: {}",
                reason(&e)
            ),
        }
    }
}

async fn record_entry(
    audit: &AuditLog,
    event: &'static str,
    app: &AppRuntime,
    record: &InstanceRecord,
) {
    let entry = Entry::new(event)
        .with("app", json!(app.policy.name))
        .with("index", json!(record.index))
        .with("pid", json!(record.pid))
        .with("port", json!(record.port))
        .with("version", json!(record.version.to_string()));
    if let Err(e) = audit.append(entry).await {
        tracing::error!("cannot record {event}: {}", reason(&e));
    }
}

/// Installs the release within the job's deadline; `Some(outcome)` when that failed (nothing
/// was changed then).
pub async fn install_within(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    deadline: tokio::time::Instant,
) -> Option<StrategyOutcome> {
    match tokio::time::timeout_at(deadline, install(app, ctx, release)).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(StrategyOutcome::Failed(reason(&e))),
        Err(_) => Some(StrategyOutcome::Failed(
            StrategyError::Deadline(release.progress_deadline).to_string(),
        )),
    }
}

/// Records that `version`, serving from `slot`, is now the app's current, healthy release:
/// `current` switched, the one before kept as `previous`.
///
/// # Errors
///
/// [`StrategyError`] when `current` cannot be switched or the state persisted.
pub fn record_release(
    app: &mut AppRuntime,
    version: &semver::Version,
    slot: crate::state::Slot,
) -> Result<(), StrategyError> {
    app.releases.activate(version)?;
    if app.state.current.as_ref() != Some(version) {
        app.state.previous = app.state.current.take();
        app.state.current = Some(version.clone());
    }
    app.state.last_known_good = Some(version.clone());
    app.state.active_slot = slot;
    app.persist()?;
    Ok(())
}

/// Answers promote/abort requests nobody is waiting for any more.
pub fn refuse_pending_controls(app: &mut AppRuntime) {
    while let Ok(control) = app.control.try_recv() {
        let _ = control.reply.send(Err(format!(
            "no rollout of app {} is waiting for {}",
            app.policy.name, control.action
        )));
    }
}
