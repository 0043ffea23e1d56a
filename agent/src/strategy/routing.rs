//! Where an app's connections go: its router (the built-in front door or an existing nginx),
//! the route tables strategies apply, slots and their ports, and the front door process's own
//! life cycle (started and adopted like an instance, so it outlives the agent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{JobCtx, StrategyError, reason};
use crate::audit::{AuditLog, Entry};
use crate::config::{AppPolicy, RouterConfig, RunAs};
use crate::executor::AppRuntime;
use crate::state::Slot;
use crate::supervisor::{Backoff, Instance, InstanceSpec};
use crate::traffic::{Backend, FrontDoor, Nginx, ProcessId, ReloadVia, RouteTable, Router};

/// How long the front door gets to drain on SIGTERM before the supervisor kills it.
const FRONT_DOOR_STOP_TIMEOUT: Duration = Duration::from_secs(35);
/// How often draining backends are checked for open connections.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// `<app_dir>/traffic`: the route table (root-owned, world-readable).
fn traffic_dir(app_dir: &Path) -> PathBuf {
    app_dir.join("traffic")
}

/// `<app_dir>/traffic/run`: the front door's stats file (owned by the app's user).
fn run_dir(app_dir: &Path) -> PathBuf {
    traffic_dir(app_dir).join("run")
}

/// The router for an app, if its config names one.
pub fn make_router(
    policy: &AppPolicy,
    app_dir: &Path,
    front_door: Arc<Mutex<Option<Instance>>>,
) -> Option<Arc<dyn Router>> {
    match &policy.router {
        RouterConfig::None => None,
        RouterConfig::FrontDoor => {
            let via = ReloadVia::signal(move || {
                let guard = front_door.lock().unwrap_or_else(PoisonError::into_inner);
                guard.as_ref().map(|i| ProcessId::from(&i.record()))
            });
            Some(Arc::new(FrontDoor::new(
                traffic_dir(app_dir).join("routes.json"),
                run_dir(app_dir).join("stats.json"),
                via,
            )))
        }
        RouterConfig::Nginx {
            upstream_file,
            reload_command,
            check_command,
            pid_file,
        } => {
            let mut nginx = Nginx::new(
                policy.name.as_str(),
                upstream_file.clone(),
                reload_command.clone(),
            );
            nginx.check_command = check_command.clone();
            nginx.pid_file = pid_file.clone();
            Some(Arc::new(nginx))
        }
    }
}

/// The port of instance `index` in `slot`: blue is the first `max_instances` ports of the
/// app's range, green the next.
///
/// # Errors
///
/// [`StrategyError::Refused`] when the range has no such port.
pub fn slot_port(app: &AppRuntime, slot: Slot, index: u32) -> Result<u16, StrategyError> {
    let offset = match slot {
        Slot::Blue => 0,
        Slot::Green => app.policy.max_instances,
    };
    let range = &app.policy.ports;
    index
        .checked_add(offset)
        .and_then(|i| u16::try_from(i).ok())
        .and_then(|i| range.start().checked_add(i))
        .filter(|p| range.contains(p) && index < app.policy.max_instances)
        .ok_or_else(|| {
            StrategyError::Refused(format!(
                "app {} has no port for instance {index} of the {} slot in {}-{}",
                app.policy.name,
                slot.as_str(),
                range.start(),
                range.end()
            ))
        })
}

/// The slot a port belongs to.
pub fn slot_of(app: &AppRuntime, port: u16) -> Slot {
    let offset = u32::from(port.saturating_sub(*app.policy.ports.start()));
    if app.policy.router.is_some() && offset >= app.policy.max_instances {
        Slot::Green
    } else {
        Slot::Blue
    }
}

/// The ports of live instances in `slot`.
pub fn ports_in(app: &AppRuntime, slot: Slot) -> Vec<u16> {
    app.instances
        .iter()
        .map(|i| i.record().port)
        .filter(|p| slot_of(app, *p) == slot)
        .collect()
}

/// A backend's name in route tables and stats: slot, index and version.
pub fn backend_id(app: &AppRuntime, port: u16) -> Option<String> {
    let instance = app.instances.iter().find(|i| i.record().port == port)?;
    let r = instance.record();
    Some(format!(
        "{}-{}-{}",
        slot_of(app, port).as_str(),
        r.index,
        r.version
    ))
}

/// How each backend (by port) is weighted in the next table.
pub type Weights = BTreeMap<u16, Route>;

/// One backend's place in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Relative share of new connections.
    pub weight: u32,
    /// No new connections; open ones finish.
    pub draining: bool,
}

/// Spreads `percent` (0–100) of new connections evenly over `ports`.
pub fn share(weights: &mut Weights, ports: &[u16], percent: u32) {
    if ports.is_empty() {
        return;
    }
    let count = u32::try_from(ports.len()).unwrap_or(u32::MAX);
    // Weights in units of 1/10000 of the traffic, so shares of several groups compare.
    let each = (percent * 100 / count).max(u32::from(percent > 0));
    for port in ports {
        weights.insert(
            *port,
            Route {
                weight: each,
                draining: false,
            },
        );
    }
}

/// Marks `ports` draining (no new connections).
pub fn drain(weights: &mut Weights, ports: &[u16]) {
    for port in ports {
        weights.insert(
            *port,
            Route {
                weight: 0,
                draining: true,
            },
        );
    }
}

/// Makes `weights` the route table; instances not listed are left out (the front door drains
/// them). Returns how long the router took to confirm. No-op without a router.
///
/// # Errors
///
/// [`StrategyError::Traffic`] when the router refuses or does not confirm in time.
pub async fn apply(
    app: &AppRuntime,
    ctx: &JobCtx,
    weights: &Weights,
    what: &str,
) -> Result<Duration, StrategyError> {
    let Some(router) = app.router() else {
        return Ok(Duration::ZERO);
    };
    let generation = router.current()?.map_or(1, |t| t.generation + 1);
    let backends: Vec<Backend> = weights
        .iter()
        .filter_map(|(port, route)| {
            let id = backend_id(app, *port)?;
            let mut b = Backend::new(id, ([127, 0, 0, 1], *port).into(), route.weight);
            b.draining = route.draining;
            Some(b)
        })
        .collect();
    let mut table = RouteTable::new(generation, backends);
    table.drain_timeout_ms = drain_timeout(ctx)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX);
    let described = describe(&table);
    ctx.step("traffic.applying", format!("{what}: {described}"))
        .await?;
    let applied = router.apply(table).await?;
    ctx.step(
        "traffic.switched",
        format!(
            "{what}: generation {} in effect after {} ms",
            applied.generation,
            applied.took.as_millis()
        ),
    )
    .await?;
    Ok(applied.took)
}

fn describe(table: &RouteTable) -> String {
    if table.backends.is_empty() {
        return "no backends".to_owned();
    }
    let parts: Vec<String> = table
        .backends
        .iter()
        .map(|b| {
            if b.draining {
                format!("{} draining", b.id)
            } else {
                format!("{} weight {}", b.id, b.weight)
            }
        })
        .collect();
    parts.join(", ")
}

/// The job's drain timeout (rollout parameter, or its default).
pub fn drain_timeout(ctx: &JobCtx) -> Duration {
    ctx.job
        .spec
        .release
        .as_ref()
        .map(|r| r.rollout.drain_timeout)
        .unwrap_or(Duration::from_secs(30))
}

/// Routes all new connections evenly to the instances in `ports`, draining the rest.
///
/// # Errors
///
/// See [`apply`].
pub async fn serve_only(
    app: &AppRuntime,
    ctx: &JobCtx,
    ports: &[u16],
    what: &str,
) -> Result<Duration, StrategyError> {
    let mut weights = Weights::new();
    if ports.is_empty() {
        // Nothing to serve: an empty table. Backends left out drain (they are not cut).
        return apply(app, ctx, &weights, what).await;
    }
    let others: Vec<u16> = app
        .instances
        .iter()
        .map(|i| i.record().port)
        .filter(|p| !ports.contains(p))
        .collect();
    drain(&mut weights, &others);
    share(&mut weights, ports, 100);
    apply(app, ctx, &weights, what).await
}

/// Waits until the backends on `ports` have no open connections, at most the drain timeout.
/// Routers without counters (nginx drains by itself on reload) return at once.
pub async fn wait_drained(app: &AppRuntime, ctx: &JobCtx, ports: &[u16]) {
    let Some(router) = app.router() else { return };
    let ids: Vec<String> = ports.iter().filter_map(|p| backend_id(app, *p)).collect();
    let deadline = Instant::now() + drain_timeout(ctx);
    loop {
        let open: u64 = match router.stats() {
            Ok(stats) => ids
                .iter()
                .filter_map(|id| stats.backends.get(id))
                .map(|b| b.active)
                .sum(),
            Err(_) => return,
        };
        if open == 0 {
            return;
        }
        if Instant::now() >= deadline {
            ctx.note(
                "backend.drain_timeout",
                format!("{open} connection(s) still open after the drain timeout; stopping anyway"),
            )
            .await;
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Front-door connection errors to the backends on `ports` since the front door started.
pub fn connect_errors(app: &AppRuntime, ports: &[u16]) -> u64 {
    let Some(router) = app.router() else { return 0 };
    let ids: Vec<String> = ports.iter().filter_map(|p| backend_id(app, *p)).collect();
    router
        .stats()
        .map(|s| s.connect_errors_of(|id| ids.iter().any(|i| i == id)))
        .unwrap_or(0)
}

/// Starts (or adopts) the app's front door and makes sure its route table lists the live
/// instances of the active slot. Called at agent start, before any job.
pub async fn ensure_front_door(app: &mut AppRuntime, audit: &AuditLog, backoff: Backoff) {
    if app.policy.router != RouterConfig::FrontDoor {
        return;
    }
    let Some(listen) = app.policy.listen else {
        return;
    };
    if let Err(e) = prepare_dirs(&app.dir, &app.policy.run_as) {
        tracing::error!(app = %app.policy.name, "cannot prepare the front door's directories: {e}");
        return;
    }
    let routes = traffic_dir(&app.dir).join("routes.json");
    if !routes.exists() {
        let mut table = RouteTable::new(1, Vec::new());
        let active = app.state.active_slot;
        for port in ports_in(app, active) {
            if let Some(id) = backend_id(app, port) {
                table
                    .backends
                    .push(Backend::new(id, ([127, 0, 0, 1], port).into(), 100));
            }
        }
        if let Err(e) = crate::state::write_atomic(&routes, &table.to_bytes()) {
            tracing::error!(app = %app.policy.name, "cannot write the first route table: {}", reason(&e));
            return;
        }
        set_mode(&routes, 0o644);
    }
    let spec = match front_door_spec(app, listen, &routes) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::error!(app = %app.policy.name, "cannot start the front door: {e}");
            return;
        }
    };
    let adopted = match &app.state.front_door {
        Some(record) => Instance::adopt(spec.clone(), record, backoff)
            .ok()
            .flatten(),
        None => None,
    };
    let (instance, event) = match adopted {
        Some(instance) => (instance, "front_door.adopted"),
        None => match Instance::spawn(spec, backoff).await {
            Ok(instance) => (instance, "front_door.started"),
            Err(e) => {
                tracing::error!(app = %app.policy.name, "cannot start the front door: {}", reason(&e));
                return;
            }
        },
    };
    let record = instance.record();
    let entry = Entry::new(event)
        .with("app", json!(app.policy.name))
        .with("pid", json!(record.pid))
        .with("listen", json!(listen.to_string()));
    if let Err(e) = audit.append(entry).await {
        tracing::error!("cannot record {event}: {}", reason(&e));
    }
    app.state.front_door = Some(record);
    *app.front_door
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(instance);
}

fn front_door_spec(
    app: &AppRuntime,
    listen: std::net::SocketAddr,
    routes: &Path,
) -> Result<InstanceSpec, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the agent's own executable: {e}"))?;
    let stats = run_dir(&app.dir).join("stats.json");
    let version = semver::Version::parse(env!("CARGO_PKG_VERSION"))
        .map_err(|e| format!("agent version: {e}"))?;
    Ok(InstanceSpec {
        app: app.policy.name.clone(),
        version,
        index: 0,
        port: listen.port(),
        release_dir: traffic_dir(&app.dir),
        command: vec![
            exe.to_string_lossy().into_owned(),
            "front-door".to_owned(),
            "--routes".to_owned(),
            routes.to_string_lossy().into_owned(),
            "--listen".to_owned(),
            listen.to_string(),
            "--stats".to_owned(),
            stats.to_string_lossy().into_owned(),
        ],
        env: BTreeMap::new(),
        run_as: app.policy.run_as.clone(),
        log_dir: app.dir.join("logs").join("front-door"),
        stop_timeout: FRONT_DOOR_STOP_TIMEOUT,
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// `traffic/` root-owned 0755 (the route table is the agent's word); `traffic/run/` owned by
/// the app's user, where the front door writes its counters.
fn prepare_dirs(app_dir: &Path, run_as: &RunAs) -> std::io::Result<()> {
    crate::executor::create_dir_mode(&traffic_dir(app_dir), 0o755)?;
    let run = run_dir(app_dir);
    crate::executor::create_dir_mode(&run, 0o755)?;
    if let RunAs::User { uid, gid, .. } = run_as {
        nix::unistd::chown(
            &run,
            Some(nix::unistd::Uid::from_raw(*uid)),
            Some(nix::unistd::Gid::from_raw(*gid)),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}
