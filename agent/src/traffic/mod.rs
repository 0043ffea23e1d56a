//! Where an app's connections go: the [`Router`] trait that strategies call, the built-in
//! front door (a TCP proxy process per app) and an adapter for an existing nginx.
//!
//! # Design
//!
//! The data plane never runs inside the agent. The front door is a process of its own
//! (`gantry-agent front-door`, started and adopted by the supervisor like an instance); the
//! agent talks to it only through two files and a signal:
//!
//! * the **route table** ([`RouteTable`]), written atomically by the agent; the front door
//!   rereads it on SIGHUP and swaps it in without touching open connections;
//! * the **stats file** ([`Stats`]), written by the front door every 500 ms and after every
//!   reload: the generation it applies (the agent's acknowledgement) and per-backend counters.
//!
//! So a dead or restarting agent leaves traffic flowing exactly as last routed.
//! [`FrontDoor`] is the agent's side of that protocol, [`front_door`] the proxy itself,
//! [`Nginx`] the same interface over an nginx upstream file. `docs/traffic.md` documents the
//! file formats and signals.

pub mod front_door;

mod balance;
pub mod http_stats;
mod nginx;
mod route_table;
mod router;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub use self::nginx::Nginx;
pub use self::route_table::{
    Backend, BackendAddrs, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_DRAIN_TIMEOUT_MS, MAX_BACKENDS,
    MAX_FILE_BYTES, MAX_WEIGHT, RouteProblem, RouteTable,
};
pub use self::router::{DEFAULT_ACK_TIMEOUT, FrontDoor, ProcessId, ReloadVia};
pub use self::stats::{BackendStats, STATS_INTERVAL, Stats};
use crate::state::StateError;

/// A boxed future, so that [`Router`] can be used as `dyn Router`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What strategies call to move traffic. Implemented by [`FrontDoor`] and [`Nginx`].
pub trait Router: Send + Sync + fmt::Debug {
    /// A short name for messages and audit entries (`"front-door"`, `"nginx"`).
    fn name(&self) -> &'static str;

    /// Makes `table` the one new connections follow, and returns once it is in effect.
    ///
    /// # Errors
    ///
    /// [`TrafficError`]: the table is invalid or older than the one in place, it could not
    /// be written, the router could not be told, or it did not confirm in time.
    fn apply(&self, table: RouteTable) -> BoxFuture<'_, Result<Applied, TrafficError>>;

    /// The table last written (what the router follows, or will once told), if any. A
    /// restarted agent continues from its generation.
    ///
    /// # Errors
    ///
    /// [`TrafficError`] when it exists but cannot be read or parsed.
    fn current(&self) -> Result<Option<RouteTable>, TrafficError>;

    /// Live counters per backend.
    ///
    /// # Errors
    ///
    /// [`TrafficError::StatsUnsupported`] for routers without counters;
    /// [`TrafficError::NoStats`] before the front door wrote any.
    fn stats(&self) -> Result<Stats, TrafficError>;

    /// Whether it can hold new connections while no backend is in rotation (a table's
    /// `holding`), so that a deploy may drain the old instances before stopping them.
    fn can_hold(&self) -> bool {
        false
    }
}

/// A table that took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Its generation.
    pub generation: u64,
    /// From the start of `apply` until the router confirmed it.
    pub took: Duration,
}

/// Traffic routing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// The route file cannot be read.
    #[error("cannot read route table {}", path.display())]
    ReadRoutes {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The route file is not a route table.
    #[error("route table {} is not valid JSON of the expected shape", path.display())]
    ParseRoutes {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The route table breaks a rule.
    #[error("route table {} is refused", path.display())]
    InvalidRoutes {
        /// The file (or the file it was meant for).
        path: PathBuf,
        /// What is wrong.
        #[source]
        problem: RouteProblem,
    },
    /// The route (or upstream) file cannot be written.
    #[error("cannot write the route table")]
    WriteRoutes(#[source] StateError),
    /// The table is older than the one in place.
    #[error(
        "route table generation {requested} is older than generation {current} already in {}",
        path.display()
    )]
    StaleGeneration {
        /// The file.
        path: PathBuf,
        /// The table's generation.
        requested: u64,
        /// The generation in place.
        current: u64,
    },
    /// The stats file cannot be read.
    #[error("cannot read front door stats {}", path.display())]
    ReadStats {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stats file is not valid.
    #[error("front door stats {} are not valid JSON of the expected shape", path.display())]
    ParseStats {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The stats file cannot be written.
    #[error("cannot write front door stats {}", path.display())]
    WriteStats {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No stats file yet: the front door has not started (or never ran).
    #[error("no front door stats at {} (is the front door running?)", path.display())]
    NoStats {
        /// The file.
        path: PathBuf,
    },
    /// The router has no counters.
    #[error("the {router} router has no traffic counters")]
    StatsUnsupported {
        /// The router's name.
        router: &'static str,
    },
    /// The router cannot express this table.
    #[error("the {router} router cannot apply this table: {what}")]
    Unsupported {
        /// The router's name.
        router: &'static str,
        /// Why.
        what: String,
    },
    /// The pid names another process now (it was reused): it is not signalled.
    #[error("front door pid {pid} is no longer the process that was started (pid reused)")]
    ProcessChanged {
        /// The pid.
        pid: u32,
    },
    /// Signalling the front door failed.
    #[error("cannot signal front door pid {pid}")]
    Signal {
        /// The pid.
        pid: u32,
        /// The cause.
        #[source]
        source: nix::errno::Errno,
    },
    /// The front door did not report the new generation in time.
    #[error(
        "front door did not apply route table generation {generation} within {}: {state}",
        humantime::format_duration(*timeout)
    )]
    NotAcknowledged {
        /// The generation written.
        generation: u64,
        /// How long the agent waited.
        timeout: Duration,
        /// What was seen instead.
        state: String,
    },
    /// The front door refused the new table and kept the old one.
    #[error("front door refused route table generation {generation}: {reason}")]
    ReloadRejected {
        /// The generation written.
        generation: u64,
        /// The front door's reason.
        reason: String,
    },
    /// The front door cannot listen.
    #[error("front door cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A process-level setup step failed (runtime, signal handlers).
    #[error("front door cannot {what}")]
    Setup {
        /// What it was doing.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A router command (nginx reload or check) could not be run.
    #[error("cannot run {command}")]
    CommandSpawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A router command failed.
    #[error("{command} {status}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A router command did not finish in time (it was killed).
    #[error("{command} did not finish within {}", humantime::format_duration(*timeout))]
    CommandTimeout {
        /// The command line.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// nginx's pid file cannot be read or holds no pid.
    #[error("cannot read nginx's master pid from {}", path.display())]
    NginxPid {
        /// The pid file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// nginx started no new worker after the reload: it did not load the new upstream file
    /// (a refused configuration, or a master too busy to reload in time).
    #[error(
        "nginx (master pid {pid}) started no new worker within {} of the reload: the new upstream file is not in effect (see nginx's error log)",
        humantime::format_duration(*timeout)
    )]
    NginxNotReloaded {
        /// The master's pid.
        pid: i32,
        /// How long the agent waited.
        timeout: Duration,
    },
}
