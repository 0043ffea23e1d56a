//! The steps strategies share: install a release, start a set of instances and wait until
//! they are healthy, stop a set, record the release as current, and run a strategy's forward
//! part within its deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use super::{JobCtx, Refused, StrategyError, Unhealthy};
use crate::app::AppRuntime;
use crate::app::slots::{self, NoPort};
use crate::error::reason;
use crate::health::watch::{ProbeTarget, healthy_for, stays_healthy};
use crate::job::ReleaseSpec;
use crate::progress::Ended;
use crate::state::Slot;
use crate::supervisor::{Instance, InstanceSpec};

/// The port of instance `index` in the app's active slot.
///
/// # Errors
///
/// [`NoPort`] when the app's port range has no port for it.
pub fn port_for(app: &AppRuntime, index: u32) -> Result<u16, NoPort> {
    slots::slot_port(app, app.state.active_slot, index)
}

/// The supervisor's spec for one instance of a release, on `port` of `slot`.
pub fn instance_spec(
    app: &AppRuntime,
    release: &ReleaseSpec,
    index: u32,
    port: u16,
    slot: Slot,
) -> InstanceSpec {
    InstanceSpec {
        app: app.policy.name.clone(),
        version: release.version.clone(),
        index,
        port,
        slot,
        release_dir: app.releases.dir_of(&release.version),
        command: release.command.clone(),
        env: with_flags_url(release.env.clone(), app),
        run_as: app.policy.run_as.clone(),
        log_dir: app.dir.join("logs"),
        stop_timeout: app.policy.stop_timeout,
        role: crate::supervisor::Role::Instance,
        limits: Some(app.policy.limits),
    }
}

/// The job's environment plus `GANTRY_OFREP_URL`, where the app evaluates its feature flags,
/// when it has `[apps.NAME.flags]`.
fn with_flags_url(
    mut env: std::collections::BTreeMap<String, String>,
    app: &AppRuntime,
) -> std::collections::BTreeMap<String, String> {
    if let Some(flags) = &app.policy.flags {
        env.insert(
            "GANTRY_OFREP_URL".to_owned(),
            format!("http://{}", flags.listen),
        );
    }
    env
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
            .map_err(|e| Refused::UnpackTask(e.to_string()))??;
    check_command(app, release, &dir)?;
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

/// Refuses a release whose command is not there to run, before anything that serves is
/// touched (a hot deploy would otherwise stop the old instances first): argv\[0\] as the
/// instances resolve it must be a file the app's user can execute.
///
/// # Errors
///
/// [`StrategyError::Refused`] naming the command and where it was looked for.
fn check_command(
    app: &AppRuntime,
    release: &ReleaseSpec,
    dir: &std::path::Path,
) -> Result<(), StrategyError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(argv0) = release.command.first() else {
        return Err(Refused::EmptyCommand {
            version: release.version.clone(),
        }
        .into());
    };
    let program = crate::supervisor::resolve_program(dir, argv0);
    let refused = |why: String| {
        StrategyError::Refused(Refused::CannotRun {
            version: release.version.clone(),
            argv0: argv0.clone(),
            why,
        })
    };
    match std::fs::metadata(&program) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
        Ok(m) if m.is_file() => {
            return Err(refused(format!("{} is not executable", program.display())));
        }
        Ok(_) => return Err(refused(format!("{} is not a file", program.display()))),
        Err(e) => return Err(refused(format!("{}: {e}", program.display()))),
    }
    match crate::supervisor::access::Identity::of(&app.policy.run_as) {
        Some(who) => crate::supervisor::access::check_executable(&who, &program)
            .map_err(|e| refused(crate::error::reason(&e))),
        None => Ok(()),
    }
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
    slot: Slot,
    indexes: std::ops::Range<u32>,
) -> Result<Vec<u16>, StrategyError> {
    let total = indexes.len();
    let total = u32::try_from(total).unwrap_or(u32::MAX);
    let mut ports = Vec::new();
    for (n, index) in indexes.enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let port = slots::slot_port(app, slot, index)?;
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
            Instance::spawn(instance_spec(app, release, index, port, slot), ctx.backoff).await?;
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
    for target in probe_targets(app, ports) {
        let health = health.clone();
        checks.spawn(async move {
            // Exec probes run as the app's user, never as the agent.
            let result = healthy_for(&target, &health, min_healthy).await;
            (target.index, target.port, result)
        });
    }
    let total = u32::try_from(checks.len()).unwrap_or(u32::MAX);
    let mut done = 0;
    while let Some(joined) = checks.join_next().await {
        let (index, port, result) = joined.map_err(|e| Unhealthy::Task {
            task: "health check",
            error: e.to_string(),
        })?;
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
                let why = Unhealthy::Check {
                    index,
                    port,
                    why: reason(&e),
                };
                ctx.note("health.failed", why.to_string()).await;
                return Err(why.into());
            }
        }
    }
    Ok(())
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
    for target in probe_targets(app, ports) {
        let health = release.health.clone();
        checks.spawn(async move {
            let mut state = target.state.clone();
            let r = stays_healthy(&mut state, &health, &target, time).await;
            (target.index, target.port, r)
        });
    }
    while let Some(joined) = checks.join_next().await {
        let (index, port, result) = joined.map_err(|e| Unhealthy::Task {
            task: "health watch",
            error: e.to_string(),
        })?;
        if let Err(why) = result {
            return Err(Unhealthy::Watched {
                index,
                port,
                why: why.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// The instances of `app` on `ports`, ready to be probed.
/// What the health tasks need of the instances on `ports`.
pub fn probe_targets(app: &AppRuntime, ports: &[u16]) -> Vec<ProbeTarget> {
    app.instances
        .iter()
        .filter(|i| ports.contains(&i.record().port))
        .map(|instance| {
            let record = instance.record();
            ProbeTarget {
                index: record.index,
                port: record.port,
                dir: app.releases.dir_of(&record.version),
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

/// Stops every instance and the app's front door.
pub async fn stop_all(app: &mut AppRuntime, ctx: &JobCtx) -> Result<(), StrategyError> {
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
    }
    // Remembered across agent restarts: a stopped app stays stopped.
    app.state.stopped = true;
    app.persist()?;
    Ok(())
}

/// Deletes releases beyond the configured count, never the current, previous or last
/// known-good one. Every strategy's successful deploy ends with it.
pub async fn prune(app: &mut AppRuntime, ctx: &JobCtx) {
    let protect: Vec<_> = [
        &app.state.current,
        &app.state.previous,
        &app.state.last_known_good,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    match app.releases.prune(ctx.releases_kept, &protect) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => {
            for version in &removed {
                app.state.releases.remove(&version.to_string());
            }
            let list: Vec<String> = removed.iter().map(ToString::to_string).collect();
            ctx.note(
                "releases.pruned",
                format!("removed old releases {}", list.join(", ")),
            )
            .await;
            if let Err(e) = app.persist() {
                tracing::error!("cannot persist state after pruning: {}", reason(&e));
            }
        }
        Err(e) => tracing::warn!("cannot prune old releases: {}", reason(&e)),
    }
}

/// Runs a strategy's `forward` part within `deadline`: its value, or the failure text the
/// strategy's way back starts from (the step's error chain, or the deadline of `limit`).
///
/// # Errors
///
/// The readable failure when `forward` fails or the deadline passes.
pub async fn within<T>(
    deadline: Instant,
    limit: Duration,
    forward: impl Future<Output = Result<T, StrategyError>>,
) -> Result<T, String> {
    match timeout_at(deadline, forward).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(reason(&e)),
        Err(_) => Err(StrategyError::Deadline(limit).to_string()),
    }
}

/// Installs the release within the job's deadline; `Some(failed)` when that failed (nothing
/// was changed then).
pub async fn install_within(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    deadline: Instant,
) -> Option<Ended> {
    within(
        deadline,
        release.progress_deadline,
        install(app, ctx, release),
    )
    .await
    .err()
    .map(Ended::failed)
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
    slot: Slot,
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
