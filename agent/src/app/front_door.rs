//! The app's router (the built-in front door or an existing nginx) and the front door
//! process's own life cycle: started and adopted like an instance, so it outlives the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;

use super::AppRuntime;
use super::slots::{backend_id, ports_in};
use crate::audit::{AuditLog, Entry};
use crate::config::{AppPolicy, RouterConfig, RunAs, SwitchedBy};
use crate::error::reason;
use crate::supervisor::{Backoff, Instance, InstanceSpec};
use crate::traffic::{Backend, FrontDoor, Nginx, ProcessId, ReloadVia, RouteTable, Router};

/// How long the front door gets to drain on SIGTERM before the supervisor kills it.
const FRONT_DOOR_STOP_TIMEOUT: Duration = Duration::from_secs(35);

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

/// Why the front door could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrontDoorError {
    /// `traffic/` or `traffic/run/` could not be made.
    #[error("cannot prepare the front door's directories in {}", dir.display())]
    Dirs {
        /// The app's directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The first route table could not be written.
    #[error("cannot write the first route table")]
    FirstTable(#[source] crate::state::StateError),
    /// The first route table could not be made readable by the front door's user.
    #[error("cannot make {} readable by the front door", path.display())]
    RouteTableMode {
        /// The route table.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent's own executable (which the front door runs) cannot be found or placed
    /// where the app's user can execute it.
    #[error("the front door runs as {user} and could not be started")]
    Program {
        /// The user it runs as.
        user: String,
        /// The cause.
        #[source]
        source: ProgramError,
    },
    /// The process did not start.
    #[error("the front door runs as {user} and could not be started")]
    Spawn {
        /// The user it runs as.
        user: String,
        /// The cause.
        #[source]
        source: crate::supervisor::SupervisorError,
    },
}

/// Why the front door's program could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// `current_exe` failed.
    #[error("cannot find the agent's own executable")]
    OwnExe(#[source] std::io::Error),
    /// Copying it into the app's traffic directory failed.
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        /// The agent's executable.
        from: PathBuf,
        /// The copy.
        to: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent's own version is not SemVer (a build mistake).
    #[error("the agent's version is not SemVer")]
    Version(#[source] semver::Error),
    /// Neither the agent's executable nor the copy is in reach of the app's user.
    #[error(transparent)]
    OutOfReach(#[from] crate::supervisor::access::AccessError),
}

/// Starts (or adopts) the app's front door and makes sure its route table lists the live
/// instances of the active slot. Called at agent start, before any job, and by a job that
/// finds no front door running. Apps without a front door are left alone.
///
/// # Errors
///
/// [`FrontDoorError`] when the front door is not running afterwards.
pub async fn ensure_front_door(
    app: &mut AppRuntime,
    audit: &AuditLog,
    backoff: Backoff,
) -> Result<(), FrontDoorError> {
    if app.policy.router != RouterConfig::FrontDoor {
        return Ok(());
    }
    let Some(listen) = app.policy.listen else {
        return Ok(());
    };
    prepare_dirs(&app.dir, &app.policy.run_as).map_err(|source| FrontDoorError::Dirs {
        dir: app.dir.clone(),
        source,
    })?;
    let routes = traffic_dir(&app.dir).join("routes.json");
    if !routes.exists() {
        let mut table = RouteTable::new(1, Vec::new());
        table.hold_timeout_ms = hold_timeout_ms(app);
        let active = app.state.active_slot;
        for port in ports_in(app, active) {
            if let Some(id) = backend_id(app, port) {
                table
                    .backends
                    .push(Backend::new(id, ([127, 0, 0, 1], port).into(), 100));
            }
        }
        crate::state::write_atomic(&routes, &table.to_bytes())
            .map_err(FrontDoorError::FirstTable)?;
        // write_atomic creates 0600; the front door runs as the app's user and must read it.
        set_mode(&routes, 0o644).map_err(|source| FrontDoorError::RouteTableMode {
            path: routes.clone(),
            source,
        })?;
    }
    let user = match &app.policy.run_as {
        RunAs::User { name, .. } => name.clone(),
        RunAs::CurrentUser { uid, .. } => format!("the agent's user (uid {uid})"),
    };
    let spec = front_door_spec(app, listen, &routes).map_err(|source| FrontDoorError::Program {
        user: user.clone(),
        source,
    })?;
    let adopted = match &app.state.front_door {
        Some(record) => Instance::adopt(spec.clone(), record, backoff)
            .ok()
            .flatten(),
        None => None,
    };
    let (instance, event) = match adopted {
        Some(instance) => (instance, "front_door.adopted"),
        None => {
            let instance = Instance::spawn(spec, backoff)
                .await
                .map_err(|source| FrontDoorError::Spawn { user, source })?;
            (instance, "front_door.started")
        }
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
    Ok(())
}

/// How long the app's front door holds a connection while no backend is up, as a route
/// table says it.
pub fn hold_timeout_ms(app: &AppRuntime) -> u64 {
    app.policy
        .hold_timeout
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

fn front_door_spec(
    app: &AppRuntime,
    listen: std::net::SocketAddr,
    routes: &Path,
) -> Result<InstanceSpec, ProgramError> {
    let exe = front_door_program(&app.policy.run_as, &traffic_dir(&app.dir))?;
    let stats = run_dir(&app.dir).join("stats.json");
    let version =
        semver::Version::parse(env!("CARGO_PKG_VERSION")).map_err(ProgramError::Version)?;
    Ok(InstanceSpec {
        app: app.policy.name.clone(),
        version,
        index: 0,
        port: listen.port(),
        slot: crate::state::Slot::Blue,
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
            "--mode".to_owned(),
            app.policy.front_door_mode.as_str().to_owned(),
        ],
        env: BTreeMap::new(),
        run_as: app.policy.run_as.clone(),
        log_dir: app.dir.join("logs").join("front-door"),
        stop_timeout: FRONT_DOOR_STOP_TIMEOUT,
        role: crate::supervisor::Role::FrontDoor,
        limits: None,
    })
}

/// The program the front door runs: the agent's own executable when the app's user can
/// execute it where it is (`/usr/bin` in production), else a copy in the app's `traffic/`
/// directory (root-owned, 0755), made anew only when it differs. An agent built in a private
/// tree (a `cargo build` under a 0700 home) thus still starts front doors as the app's user.
///
/// # Errors
///
/// [`ProgramError`] when neither the executable nor a copy can be executed by that user.
pub fn front_door_program(run_as: &RunAs, traffic_dir: &Path) -> Result<PathBuf, ProgramError> {
    use crate::supervisor::access;
    let exe = std::env::current_exe().map_err(ProgramError::OwnExe)?;
    let Some(who) = access::Identity::of(run_as) else {
        return Ok(exe);
    };
    if access::check_executable(&who, &exe).is_ok() {
        return Ok(exe);
    }
    let copy = traffic_dir.join("gantry-agent");
    let copy_err = |source| ProgramError::Copy {
        from: exe.clone(),
        to: copy.clone(),
        source,
    };
    if !same_contents(&exe, &copy).map_err(copy_err)? {
        copy_executable(&exe, &copy).map_err(copy_err)?;
    }
    access::check_executable(&who, &copy)?;
    Ok(copy)
}

fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return Ok(false);
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

/// Copies `from` to `to` through a temp file and a rename, so that a running front door
/// keeps its old inode and no one ever executes a half-written file.
fn copy_executable(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = to.with_extension(format!("tmp-{}", std::process::id()));
    let result = std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, to));
    if result.is_err() {
        // Best effort: the temp name is ours alone and a start-up sweep would not know it.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `traffic/` the agent's, 0755 (the route table is the agent's word); `traffic/run/`, where
/// the front door writes its counters, writable by the app's user: owned by it when the agent
/// is root, else the agent's with an ACL entry for it (a non-root agent has no CAP_CHOWN).
fn prepare_dirs(app_dir: &Path, run_as: &RunAs) -> std::io::Result<()> {
    crate::state::create_dir_mode(&traffic_dir(app_dir), 0o755)?;
    let run = run_dir(app_dir);
    crate::state::create_dir_mode(&run, 0o755)?;
    match run_as {
        RunAs::User {
            uid,
            gid,
            by: SwitchedBy::Root,
            ..
        } => nix::unistd::chown(
            &run,
            Some(nix::unistd::Uid::from_raw(*uid)),
            Some(nix::unistd::Gid::from_raw(*gid)),
        )
        .map_err(std::io::Error::from),
        RunAs::User {
            uid,
            by: SwitchedBy::Capabilities,
            ..
        } => super::grant::grant_write(&run, *uid),
        RunAs::CurrentUser { .. } => Ok(()),
    }
}
