//! The agent's side of the front door: write the route table, signal the process, wait until
//! its stats file shows the new generation.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::front_door::FrontDoorHandle;
use super::{Applied, BackendAddrs, BoxFuture, RouteTable, Router, Stats, TrafficError};
use crate::state::{InstanceRecord, write_atomic};

/// How long [`FrontDoor::apply`](Router::apply) waits for the front door's acknowledgement
/// unless told otherwise.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the stats file is polled while waiting for an acknowledgement.
const ACK_POLL: Duration = Duration::from_millis(5);

/// A process named so that a reused pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` when the process was started or adopted.
    pub start_time: u64,
}

impl ProcessId {
    /// The running process `pid`, with its start time read now; `None` when there is no such
    /// process (or it is a zombie).
    pub fn of(pid: u32) -> Option<Self> {
        start_time_of(pid).map(|start_time| Self { pid, start_time })
    }
}

impl From<&InstanceRecord> for ProcessId {
    fn from(r: &InstanceRecord) -> Self {
        Self {
            pid: r.pid,
            start_time: r.start_time,
        }
    }
}

/// How the front door is told to reread its route table.
#[derive(Clone)]
pub enum ReloadVia {
    /// SIGHUP to the process the function names (typically the supervisor's current record
    /// of the front door instance, which changes when it is restarted); `None` while it is
    /// not running. The pid is signalled only while its start time still matches.
    Signal(Arc<dyn Fn() -> Option<ProcessId> + Send + Sync>),
    /// A front door running inside this process (tests, embedding).
    InProcess(FrontDoorHandle),
}

impl fmt::Debug for ReloadVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signal(_) => f.write_str("ReloadVia::Signal(..)"),
            Self::InProcess(h) => write!(f, "ReloadVia::InProcess({})", h.local_addr()),
        }
    }
}

impl ReloadVia {
    /// [`ReloadVia::Signal`] from a function.
    pub fn signal(current: impl Fn() -> Option<ProcessId> + Send + Sync + 'static) -> Self {
        Self::Signal(Arc::new(current))
    }

    /// The pid that should be writing the stats file now, if the front door runs.
    fn pid(&self) -> Option<u32> {
        match self {
            Self::Signal(current) => current()
                .filter(|p| start_time_of(p.pid) == Some(p.start_time))
                .map(|p| p.pid),
            Self::InProcess(_) => Some(std::process::id()),
        }
    }

    fn reload(&self) -> Result<(), TrafficError> {
        match self {
            Self::InProcess(handle) => {
                handle.reload();
                Ok(())
            }
            Self::Signal(current) => {
                let Some(p) = current() else {
                    return Ok(());
                };
                if start_time_of(p.pid) != Some(p.start_time) {
                    return Err(TrafficError::ProcessChanged { pid: p.pid });
                }
                let pid = i32::try_from(p.pid).map_err(|_| TrafficError::Signal {
                    pid: p.pid,
                    source: nix::errno::Errno::ESRCH,
                })?;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .map_err(|source| TrafficError::Signal { pid: p.pid, source })
            }
        }
    }
}

/// The built-in front door, seen from the agent.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    routes_path: PathBuf,
    stats_path: PathBuf,
    via: ReloadVia,
    backend_addrs: BackendAddrs,
    ack_timeout: Duration,
}

impl FrontDoor {
    /// A front door reading `routes_path` and writing `stats_path` (the paths given to
    /// `gantry-agent front-door --routes --stats`), with loopback-only backends and
    /// [`DEFAULT_ACK_TIMEOUT`].
    pub fn new(routes_path: PathBuf, stats_path: PathBuf, via: ReloadVia) -> Self {
        Self {
            routes_path,
            stats_path,
            via,
            backend_addrs: BackendAddrs::LoopbackOnly,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
        }
    }

    /// Allows these backend addresses besides loopback (the front door must be started with
    /// the same `--allow-backend` list).
    #[must_use]
    pub fn with_backend_addrs(mut self, addrs: BackendAddrs) -> Self {
        self.backend_addrs = addrs;
        self
    }

    /// How long `apply` waits for the acknowledgement.
    #[must_use]
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// The route file.
    pub fn routes_path(&self) -> &Path {
        &self.routes_path
    }

    /// The stats file.
    pub fn stats_path(&self) -> &Path {
        &self.stats_path
    }

    async fn apply_table(&self, table: RouteTable) -> Result<Applied, TrafficError> {
        let started = Instant::now();
        let generation = table.generation;
        table
            .validate(&self.backend_addrs, None)
            .map_err(|problem| TrafficError::InvalidRoutes {
                path: self.routes_path.clone(),
                problem,
            })?;
        check_generation(self.current(), &self.routes_path, generation)?;
        let path = self.routes_path.clone();
        let bytes = table.to_bytes();
        tokio::task::spawn_blocking(move || write_readable(&path, &bytes))
            .await
            .map_err(|e| {
                TrafficError::WriteRoutes(crate::state::StateError::Write {
                    path: self.routes_path.clone(),
                    source: io::Error::other(e),
                })
            })??;

        // The front door is "ready" once its stats file names its pid: only then are its
        // signal handlers certainly installed (before that a SIGHUP would kill it). A front
        // door that starts after the write above loads the new table by itself.
        let deadline = started + self.ack_timeout;
        let mut signalled: Option<(u32, u64)> = None;
        loop {
            let seen = match (self.via.pid(), Stats::load(&self.stats_path)) {
                (None, _) => "the front door is not running".to_owned(),
                (Some(pid), Ok(Some(stats))) if stats.pid == pid => {
                    if stats.generation == generation {
                        return Ok(Applied {
                            generation,
                            took: started.elapsed(),
                        });
                    }
                    match signalled {
                        Some((signalled_pid, before)) if signalled_pid == pid => {
                            if stats.reloads > before
                                && let Some(why) = stats.last_reload_error
                            {
                                return Err(TrafficError::ReloadRejected {
                                    generation,
                                    reason: why,
                                });
                            }
                        }
                        _ => {
                            self.via.reload()?;
                            signalled = Some((pid, stats.reloads));
                        }
                    }
                    format!(
                        "front door pid {pid} still applies generation {}",
                        stats.generation
                    )
                }
                (Some(pid), Ok(_)) => format!("front door pid {pid} has not written stats yet"),
                (Some(_), Err(e)) => crate::error::reason(&e),
            };
            if Instant::now() >= deadline {
                return Err(TrafficError::NotAcknowledged {
                    generation,
                    timeout: self.ack_timeout,
                    state: seen,
                });
            }
            tokio::time::sleep(ACK_POLL).await;
        }
    }
}

impl Router for FrontDoor {
    fn name(&self) -> &'static str {
        "front-door"
    }

    fn can_hold(&self) -> bool {
        true
    }

    fn apply(&self, table: RouteTable) -> BoxFuture<'_, Result<Applied, TrafficError>> {
        Box::pin(self.apply_table(table))
    }

    fn current(&self) -> Result<Option<RouteTable>, TrafficError> {
        load_if_exists(&self.routes_path, &self.backend_addrs)
    }

    fn stats(&self) -> Result<Stats, TrafficError> {
        Stats::load(&self.stats_path)?.ok_or_else(|| TrafficError::NoStats {
            path: self.stats_path.clone(),
        })
    }
}

/// Refuses a table older than the one in place. A route file that cannot be read is no
/// reason to refuse: the agent is the authority, and its new table replaces the broken one.
pub(crate) fn check_generation(
    current: Result<Option<RouteTable>, TrafficError>,
    path: &Path,
    requested: u64,
) -> Result<(), TrafficError> {
    match current {
        Ok(Some(current)) if requested < current.generation => Err(TrafficError::StaleGeneration {
            path: path.to_owned(),
            requested,
            current: current.generation,
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(
                "replacing an unreadable route table: {}",
                crate::error::reason(&e)
            );
            Ok(())
        }
    }
}

/// Loads a route file; `Ok(None)` when it does not exist.
fn load_if_exists(path: &Path, addrs: &BackendAddrs) -> Result<Option<RouteTable>, TrafficError> {
    match RouteTable::load(path, addrs, None) {
        Ok(table) => Ok(Some(table)),
        Err(TrafficError::ReadRoutes { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// [`write_atomic`], then mode 0644: the reader (a front door or nginx running as another
/// user) must be able to read it, and a route table holds no secret.
pub(crate) fn write_readable(path: &Path, bytes: &[u8]) -> Result<(), TrafficError> {
    write_atomic(path, bytes).map_err(TrafficError::WriteRoutes)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(|source| {
        TrafficError::WriteRoutes(crate::state::StateError::Write {
            path: path.to_owned(),
            source,
        })
    })
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks after boot); `None` when the
/// process does not exist or is a zombie.
pub(crate) fn start_time_of(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` (field 2) may hold spaces and parentheses: count fields after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    // Field 3 was `state`; field 22 is 18 further on.
    fields.nth(22 - 4)?.parse().ok()
}
