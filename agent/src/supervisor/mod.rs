//! Instance processes: spawn as the app's user, stop, restart with backoff, adopt.
//!
//! Each instance runs in its own session and process group, as the app's user, in its release
//! directory, with a fixed environment and its output appended to a log file the agent opened.
//! Nothing ties it to the agent (no pipes, no kill-on-drop, no parent-death signal): instances
//! outlive the agent, and a restarted agent adopts them by pid plus process start time.
//!
//! One tokio task per [`Instance`] watches the process: it waits for the exit (or polls
//! `/proc` for an adopted process, which is not our child), publishes [`InstanceState`]s,
//! restarts with [`Backoff`] and gives up on a crash loop.

pub mod access;
mod adopt;
mod backoff;
pub mod limits;
mod monitor;
mod spawn;
mod stop;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use self::backoff::Backoff;
pub use self::monitor::describe as describe_exit;
pub(crate) use self::spawn::command;
pub use self::spawn::{INSTANCE_PATH, instance_env, log_path, resolve_program};
pub use crate::config::RunAs;
use crate::job::AppName;
use crate::state::{InstanceRecord, Slot};
use monitor::{Control, Proc};

/// Everything needed to start one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The app.
    pub app: AppName,
    /// The release it runs.
    pub version: semver::Version,
    /// Its index among the app's instances (`GANTRY_INSTANCE`).
    pub index: u32,
    /// Its port (`PORT`).
    pub port: u16,
    /// The slot it serves from (recorded with it; the supervisor does not use it).
    pub slot: Slot,
    /// The unpacked release: working directory, and base of a relative `command[0]`.
    pub release_dir: PathBuf,
    /// argv.
    pub command: Vec<String>,
    /// The job's environment (see [`instance_env`] for the full set).
    pub env: BTreeMap<String, String>,
    /// Who it runs as.
    pub run_as: RunAs,
    /// Where `<version>-<index>.log` is appended to.
    pub log_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Duration,
    /// What the process is, for logs.
    pub role: Role,
    /// The app's rlimits (`[apps.NAME.limits]`) an instance starts with; `None`, and always
    /// for a front door, keeps the agent's own (see [`limits`]).
    pub limits: Option<limits::InstanceLimits>,
}

/// What a supervised process is: one of the app's instances, or its front door (which runs
/// the agent's own binary, so its "version" is the agent's, not a release's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An instance of a release.
    #[default]
    Instance,
    /// The app's front door.
    FrontDoor,
}

/// What an instance is doing, as published on its watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Not started yet.
    Starting,
    /// The process runs.
    Running {
        /// Its pid.
        pid: u32,
        /// Restarts since the instance was spawned or adopted.
        restarts: u32,
    },
    /// The process exited unexpectedly; a restart follows after the backoff.
    Exited {
        /// How it ended ("exited with code 1", "killed by signal 9 (SIGKILL)").
        status: String,
        /// Restarts so far.
        restarts: u32,
    },
    /// Too many restarts within the window: no more restarts.
    CrashLoop {
        /// Restarts so far.
        restarts: u32,
        /// How the last run ended.
        last_status: String,
    },
    /// Stopped on request.
    Stopped,
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceState::Starting => f.write_str("starting"),
            InstanceState::Running { pid, restarts } => {
                write!(f, "running as pid {pid} ({restarts} restarts)")
            }
            InstanceState::Exited { status, restarts } => {
                write!(f, "{status} ({restarts} restarts)")
            }
            InstanceState::CrashLoop {
                restarts,
                last_status,
            } => {
                write!(
                    f,
                    "crash loop after {restarts} restarts (last: {last_status})"
                )
            }
            InstanceState::Stopped => f.write_str("stopped"),
        }
    }
}

/// Starting, watching or stopping an instance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The release has an empty command.
    #[error("app {app} instance {index}: the command is empty")]
    EmptyCommand {
        /// The app.
        app: String,
        /// The instance index.
        index: u32,
    },
    /// The log directory could not be created.
    #[error("cannot create log directory {}", path.display())]
    LogDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The log file could not be opened.
    #[error("cannot open log file {}", path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The process could not be started (including a failed setgroups/setgid/setuid).
    #[error(
        "cannot start app {app} instance {index} in {}: {}: {cause}{}",
        release_dir.display(),
        program.display(),
        blocked.as_ref().map(|b| format!(" ({b})")).unwrap_or_default()
    )]
    Spawn {
        /// The app.
        app: String,
        /// The instance index.
        index: u32,
        /// argv\[0\], resolved as the child resolves it.
        program: PathBuf,
        /// The release directory.
        release_dir: PathBuf,
        /// The OS error. Printed in the message, before the explanation, so it is not a
        /// `#[source]` (that would print it twice).
        cause: io::Error,
        /// Why the app's user cannot reach the program, when that is why it failed.
        blocked: Option<Box<access::AccessError>>,
    },
    /// `/proc/<pid>/stat` could not be read or parsed.
    #[error("cannot read {}", path.display())]
    ProcStat {
        /// The stat file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A signal could not be sent.
    #[error("cannot send {signal} to process group {pgid}")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The signal's name.
        signal: &'static str,
        /// The cause.
        #[source]
        source: nix::errno::Errno,
    },
    /// The process group survived SIGKILL.
    #[error("process {pid} (group {pgid}) is still running after SIGKILL")]
    StillRunning {
        /// The leader.
        pid: u32,
        /// Its group.
        pgid: i32,
    },
    /// Adoption needs a tokio runtime to watch the process.
    #[error("adopting pid {pid} needs a tokio runtime")]
    NoRuntime {
        /// The pid.
        pid: u32,
    },
    /// The instance was detached: it is no longer supervised.
    #[error("app {app} instance {index} is no longer supervised (detached)")]
    Detached {
        /// The app.
        app: String,
        /// The instance index.
        index: u32,
    },
}

/// State shared by the handles and the monitor task.
#[derive(Debug)]
struct Shared {
    spec: InstanceSpec,
    backoff: Backoff,
    state: watch::Sender<InstanceState>,
    /// pid and start time of the current process.
    current: Mutex<(u32, u64)>,
}

impl Shared {
    fn publish(&self, state: InstanceState) {
        self.state.send_replace(state);
    }

    fn set_current(&self, pid: u32, start_time: u64) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = (pid, start_time);
    }
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
}

/// Handle of one supervised instance. Clones share the instance.
///
/// Dropping every handle is the same as [`Instance::detach`]: the process keeps running
/// unsupervised. Only [`Instance::stop`] ends it.
#[derive(Debug, Clone)]
pub struct Instance {
    handle: Arc<Handle>,
}

impl Instance {
    /// Starts the instance and supervises it. Returns once the process has started.
    ///
    /// # Errors
    ///
    /// [`SupervisorError`] when the command is empty, the log file cannot be opened or the
    /// process cannot start (missing program, failed identity switch, ...).
    pub async fn spawn(spec: InstanceSpec, backoff: Backoff) -> Result<Instance, SupervisorError> {
        let spawned = spawn::spawn(&spec)?;
        let proc = Proc::child(spawned);
        match spec.role {
            Role::Instance => {
                tracing::info!(app = %spec.app, index = spec.index, pid = proc.pid, version = %spec.version, "instance started");
            }
            Role::FrontDoor => {
                tracing::info!(app = %spec.app, pid = proc.pid, listen_port = spec.port, "front door started");
            }
        }
        let state = InstanceState::Running {
            pid: proc.pid,
            restarts: 0,
        };
        Ok(Self::supervise(spec, backoff, proc, state))
    }

    /// Takes over an instance a previous agent started: `Ok(None)` when `record.pid` is gone
    /// or now names another process (different start time). The process is watched by polling
    /// `/proc`; when it exits it is restarted like any other.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::ProcStat`] when `/proc` cannot be read, and
    /// [`SupervisorError::NoRuntime`] outside a tokio runtime.
    pub fn adopt(
        spec: InstanceSpec,
        record: &InstanceRecord,
        backoff: Backoff,
    ) -> Result<Option<Instance>, SupervisorError> {
        let Some(stat) = adopt::read_stat(record.pid)? else {
            return Ok(None);
        };
        if stat.start_time != record.start_time || stat.is_dead() {
            return Ok(None);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SupervisorError::NoRuntime { pid: record.pid });
        }
        let proc = Proc::adopted(record.pid, record.start_time, stat.pgrp);
        match spec.role {
            Role::Instance => {
                tracing::info!(app = %spec.app, index = spec.index, pid = record.pid, "instance adopted");
            }
            Role::FrontDoor => {
                tracing::info!(app = %spec.app, pid = record.pid, "front door adopted")
            }
        }
        let state = InstanceState::Running {
            pid: record.pid,
            restarts: 0,
        };
        Ok(Some(Self::supervise(spec, backoff, proc, state)))
    }

    fn supervise(spec: InstanceSpec, backoff: Backoff, proc: Proc, state: InstanceState) -> Self {
        let (state, _) = watch::channel(state);
        let shared = Arc::new(Shared {
            spec,
            backoff,
            state,
            current: Mutex::new((proc.pid, proc.start_time)),
        });
        let (control, rx) = mpsc::unbounded_channel();
        tokio::spawn(monitor::run(Arc::clone(&shared), proc, rx));
        Self {
            handle: Arc::new(Handle { shared, control }),
        }
    }

    /// The instance's spec.
    pub fn spec(&self) -> &InstanceSpec {
        &self.handle.shared.spec
    }

    /// The current process (pid + start time), for `state.json`.
    pub fn record(&self) -> InstanceRecord {
        let shared = &self.handle.shared;
        let (pid, start_time) = *shared.current.lock().unwrap_or_else(|e| e.into_inner());
        InstanceRecord {
            index: shared.spec.index,
            pid,
            start_time,
            port: shared.spec.port,
            version: shared.spec.version.clone(),
            slot: shared.spec.slot,
        }
    }

    /// A receiver of the instance's state; it sees the current state at once.
    pub fn state(&self) -> watch::Receiver<InstanceState> {
        self.handle.shared.state.subscribe()
    }

    /// Stops the instance: no more restarts, SIGTERM to its process group, SIGKILL after
    /// `stop_timeout`; publishes [`InstanceState::Stopped`]. Stopping a stopped or
    /// crash-looping instance is Ok.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Detached`] after [`Instance::detach`];
    /// [`SupervisorError::Signal`] or [`SupervisorError::StillRunning`] when the group cannot
    /// be killed.
    pub async fn stop(&self) -> Result<(), SupervisorError> {
        let detached = || SupervisorError::Detached {
            app: self.handle.shared.spec.app.to_string(),
            index: self.handle.shared.spec.index,
        };
        let (reply, answer) = oneshot::channel();
        self.handle
            .control
            .send(Control::Stop(reply))
            .map_err(|_| detached())?;
        answer.await.map_err(|_| detached())?
    }

    /// Leaves the process running and stops supervising it (agent shutdown: instances outlive
    /// the agent).
    pub fn detach(&self) {
        let _ = self.handle.control.send(Control::Detach);
    }
}
