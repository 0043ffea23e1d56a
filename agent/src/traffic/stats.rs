//! The front door's stats file: the route table generation it applies and per-backend counters.
//!
//! The front door rewrites it every [`STATS_INTERVAL`] and right after every reload; the agent
//! reads it to confirm a switch (the generation) and for canary analysis and `gantry status`
//! (the counters). Counters count from the front door's start (`pid`, `started_at_ms`): a
//! reader that computes rates compares two snapshots of the same `pid`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TrafficError;
use super::http_stats::HttpStats;

/// How often the front door rewrites its stats file.
pub const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// One backend's counters and how the current table treats it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendStats {
    /// Its address in the table that last listed it.
    pub addr: Option<SocketAddr>,
    /// Its weight in the current table (0 when not listed).
    pub weight: u32,
    /// Draining in the current table, or removed from it with connections still open.
    pub draining: bool,
    /// Listed in the current table.
    pub in_table: bool,
    /// Connections open now.
    pub active: u64,
    /// Connections made to it since the front door started.
    pub total: u64,
    /// Failed or timed-out connection attempts to it.
    pub connect_errors: u64,
    /// Connections cut because its drain timeout ran out (or the front door stopped).
    pub cut: u64,
    /// Bytes sent to it (client to backend).
    pub bytes_in: u64,
    /// Bytes received from it (backend to client).
    pub bytes_out: u64,
    /// Its cohort in the table that last listed it (`stable`, `canary`, `preview`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// HTTP mode: its requests, responses and latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStats>,
}

/// The stats file.
// Unknown fields are ignored and missing ones default: the agent reads files written by a
// front door started by an older or newer agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// The route table generation applied when this was written.
    pub generation: u64,
    /// The front door's pid.
    pub pid: u32,
    /// The address it listens on (the bound one, useful when it was given port 0).
    pub listen: Option<SocketAddr>,
    /// When it started, Unix milliseconds.
    pub started_at_ms: u64,
    /// When this was written, Unix milliseconds.
    pub updated_at_ms: u64,
    /// Reload attempts (signals handled), successful or not.
    pub reloads: u64,
    /// Why the last reload attempt was refused; `None` once one succeeds.
    pub last_reload_error: Option<String>,
    /// False once it stopped accepting (shutting down).
    pub accepting: bool,
    /// Client connections accepted.
    pub connections: u64,
    /// Client connections closed at once because no backend was in rotation or every
    /// backend tried refused.
    pub unrouted: u64,
    /// Client connections held because every backend in rotation refused them (see the
    /// route table's `hold_timeout_ms`); those still refused at its end count in `unrouted`.
    pub held: u64,
    /// Per backend id; backends removed from the table stay until their last connection ends.
    pub backends: BTreeMap<String, BackendStats>,
    /// `tcp` or `http` (empty in files of front doors older than the mode).
    pub mode: String,
    /// HTTP mode: per cohort, the sum over every backend that was in it, counted from the
    /// front door's start (a backend leaving does not lower them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cohorts: BTreeMap<String, HttpStats>,
}

impl Stats {
    /// Reads a stats file; `Ok(None)` when it does not exist (yet).
    ///
    /// # Errors
    ///
    /// [`TrafficError::ReadStats`] or [`TrafficError::ParseStats`] naming the file.
    pub fn load(path: &Path) -> Result<Option<Stats>, TrafficError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                TrafficError::ParseStats {
                    path: path.to_owned(),
                    source,
                }
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TrafficError::ReadStats {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the stats file: a temp file renamed over it, so readers see a whole file.
    ///
    /// Deliberately not fsynced: the file is a live view, rewritten twice a second for the
    /// front door's whole life, and worthless after a power cut.
    ///
    /// # Errors
    ///
    /// [`TrafficError::WriteStats`] naming the file.
    pub fn store(&self, path: &Path) -> Result<(), TrafficError> {
        let err = |source| TrafficError::WriteStats {
            path: path.to_owned(),
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path has no file name",
            ))
        })?;
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| err(io::Error::other(e)))?;
        bytes.push(b'\n');
        // 0644 whatever the umask (the unit's is 0077): the front door runs as the app's user,
        // and an agent that is not root must still read what it writes.
        let result = fs::File::create(&tmp)
            .and_then(|mut f| {
                f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                f.write_all(&bytes)
            })
            .and_then(|()| fs::rename(&tmp, path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    /// Whether these counters come from a front door in HTTP mode.
    pub fn is_http(&self) -> bool {
        self.mode == "http"
    }

    /// Sum of `connect_errors` over the backends whose id satisfies `pick` (e.g. a canary's).
    pub fn connect_errors_of(&self, pick: impl Fn(&str) -> bool) -> u64 {
        self.backends
            .iter()
            .filter(|(id, _)| pick(id))
            .map(|(_, b)| b.connect_errors)
            .sum()
    }
}

/// Live counters of one backend, shared by its connections and the stats writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) active: AtomicU64,
    pub(crate) total: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) cut: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// When a connect failure to it was last logged (Unix ms), to rate-limit the warning.
    pub(crate) last_warn_ms: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counters into `into`, leaving its table fields alone.
    pub(crate) fn fill(&self, into: &mut BackendStats) {
        into.active = self.active.load(Ordering::Relaxed);
        into.total = self.total.load(Ordering::Relaxed);
        into.connect_errors = self.connect_errors.load(Ordering::Relaxed);
        into.cut = self.cut.load(Ordering::Relaxed);
        into.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        into.bytes_out = self.bytes_out.load(Ordering::Relaxed);
    }
}
