//! The route table: which backends take new connections, in what proportion, and which drain.
//!
//! The agent writes it as JSON with [`crate::state::write_atomic`]; the front door reads it at
//! start and on SIGHUP. Both sides validate it with [`RouteTable::validate`], so a table the
//! agent would refuse to write is also one the front door refuses to load.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TrafficError;

/// Default time a draining backend's open connections get before they are cut.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// Default time the front door waits for a backend to accept a connection.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Most backends a table may list.
pub const MAX_BACKENDS: usize = 1024;
/// Largest weight of one backend (weights are relative; percentages fit easily).
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Longest drain timeout a table may ask for.
pub const MAX_DRAIN_TIMEOUT_MS: u64 = 3_600_000;
/// Longest hold a table may ask for.
pub const MAX_HOLD_TIMEOUT_MS: u64 = 60_000;
/// Longest connect timeout a table may ask for.
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
/// Largest route file the front door reads.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Longest backend id.
pub const MAX_ID_LEN: usize = 128;
/// Longest cohort name.
pub const MAX_COHORT_LEN: usize = 32;
/// The cohort of a backend a table does not put in one.
pub const DEFAULT_COHORT: &str = "stable";
/// Longest latency edge a table may add to the front door's histograms (1 h).
pub const MAX_LATENCY_EDGE_MS: u64 = 3_600_000;

/// One backend: an instance the front door may send connections to.
// No `deny_unknown_fields`: a front door started by an older agent must keep reading the
// tables a newer agent writes (it outlives agent upgrades).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Stable name, unique in the table (e.g. `v1.2.0-0`: version and instance index).
    /// Counters in the stats file are keyed by it.
    pub id: String,
    /// Where the instance listens.
    pub addr: SocketAddr,
    /// Relative share of new connections; 0 takes the backend out of rotation without
    /// cutting its open connections.
    pub weight: u32,
    /// No new connections; open ones finish or are cut after the table's drain timeout.
    #[serde(default)]
    pub draining: bool,
    /// Which group its HTTP counters are summed into (`stable`, `canary`, `preview`); absent:
    /// `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
}

impl Backend {
    /// A backend in rotation with `weight`.
    pub fn new(id: impl Into<String>, addr: SocketAddr, weight: u32) -> Self {
        Self {
            id: id.into(),
            addr,
            weight,
            draining: false,
            cohort: None,
        }
    }

    /// Its cohort (`stable` when the table names none).
    pub fn cohort(&self) -> &str {
        self.cohort.as_deref().unwrap_or(DEFAULT_COHORT)
    }

    /// Does it take new connections?
    pub fn in_rotation(&self) -> bool {
        !self.draining && self.weight > 0
    }
}

/// The whole table, as written to the route file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Increases with every table the agent writes; the front door reports the generation it
    /// applies in its stats file, which is how the agent knows a switch took effect.
    pub generation: u64,
    /// The backends, in no particular order.
    pub backends: Vec<Backend>,
    /// How long open connections of a draining (or removed) backend may run on.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How long to wait for a backend to accept before trying another one.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long a new connection waits, retrying, when every backend in rotation refuses it
    /// (between an old instance stopping and the new one listening) before it is closed.
    /// 0 (the default): closed at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hold_timeout_ms: u64,
    /// New connections that no backend in rotation can take (the table is empty, or every
    /// backend drains) are held up to `hold_timeout_ms` instead of closed at once: what a
    /// hot deploy writes between draining the old instances and routing to the new ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holding: bool,
    /// Latency histogram edges (milliseconds) the front door adds to its defaults in HTTP
    /// mode: the thresholds the running job checks, so that its verdicts are exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_edges_ms: Vec<u64>,
}

fn default_drain_timeout_ms() -> u64 {
    DEFAULT_DRAIN_TIMEOUT_MS
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

/// Which backend addresses a table may name. Loopback is always allowed: instances listen
/// there. Anything else must be listed, so a route table cannot turn the front door into a
/// relay to arbitrary hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BackendAddrs {
    /// Loopback addresses only.
    #[default]
    LoopbackOnly,
    /// Loopback and these addresses (any port).
    LoopbackAnd(BTreeSet<IpAddr>),
}

impl BackendAddrs {
    /// Loopback plus `extra` (loopback only when `extra` is empty).
    pub fn with_extra(extra: impl IntoIterator<Item = IpAddr>) -> Self {
        let extra: BTreeSet<IpAddr> = extra.into_iter().collect();
        if extra.is_empty() {
            Self::LoopbackOnly
        } else {
            Self::LoopbackAnd(extra)
        }
    }

    /// May a backend listen at `ip`?
    pub fn allows(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || match self {
                Self::LoopbackOnly => false,
                Self::LoopbackAnd(extra) => extra.contains(&ip),
            }
    }
}

/// What is wrong with a route table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteProblem {
    /// A backend id is empty, too long or has a character outside `[A-Za-z0-9._+-]`.
    #[error(
        "backend id {id:?} is not valid: 1 to {MAX_ID_LEN} characters of letters, digits, '.', '_', '+' and '-'"
    )]
    BadId {
        /// The id.
        id: String,
    },
    /// Two backends share an id.
    #[error("backend id {id:?} appears more than once")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// New connections would have nowhere to go.
    #[error(
        "no backend takes new connections: the weights of backends not draining sum to 0 (an empty table is the way to route nothing; with holding, to make new connections wait)"
    )]
    NoWeight,
    /// `holding` is set but `hold_timeout_ms` is 0: nothing would be held.
    #[error("holding is set but hold_timeout_ms is 0: new connections would not be held")]
    HoldingWithoutTimeout,
    /// A weight is above [`MAX_WEIGHT`].
    #[error("backend {id:?} has weight {weight}, above the maximum of {MAX_WEIGHT}")]
    WeightTooLarge {
        /// The backend.
        id: String,
        /// Its weight.
        weight: u32,
    },
    /// An address is neither loopback nor allowed.
    #[error("backend {id:?} address {addr} is not loopback and not an allowed backend address")]
    AddrNotAllowed {
        /// The backend.
        id: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// Port 0 or the unspecified address.
    #[error("backend {id:?} address {addr} cannot be connected to")]
    AddrUnusable {
        /// The backend.
        id: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A backend is the front door itself: every connection would loop.
    #[error("backend {id:?} address {addr} is the front door's own listening address")]
    AddrIsListener {
        /// The backend.
        id: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// More than [`MAX_BACKENDS`] backends.
    #[error("{count} backends, more than the maximum of {MAX_BACKENDS}")]
    TooManyBackends {
        /// How many.
        count: usize,
    },
    /// A timeout is 0 or above its maximum.
    #[error("{field} is {value} ms; it must be between 1 and {max} ms")]
    BadTimeout {
        /// `drain_timeout_ms`, `connect_timeout_ms` or `hold_timeout_ms`.
        field: &'static str,
        /// The value.
        value: u64,
        /// The maximum.
        max: u64,
    },
    /// A cohort name is empty, too long or not lowercase letters, digits and '-'.
    #[error(
        "backend {id:?} cohort {cohort:?} is not valid: 1 to {MAX_COHORT_LEN} lowercase letters, digits and '-'"
    )]
    BadCohort {
        /// The backend.
        id: String,
        /// The cohort.
        cohort: String,
    },
    /// A latency edge is 0, too large, or there are too many.
    #[error(
        "latency_edges_ms {edges:?}: at most {max} edges, each between 1 and {MAX_LATENCY_EDGE_MS} ms",
        max = crate::traffic::http_stats::MAX_LATENCY_EDGES
    )]
    BadLatencyEdges {
        /// The edges.
        edges: Vec<u64>,
    },
}

impl RouteTable {
    /// An empty table (routes nothing) at `generation`, with default timeouts.
    pub fn new(generation: u64, backends: Vec<Backend>) -> Self {
        Self {
            generation,
            backends,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            hold_timeout_ms: 0,
            holding: false,
            latency_edges_ms: Vec::new(),
        }
    }

    /// The drain timeout.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How long a refused connection is held.
    pub fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.hold_timeout_ms)
    }

    /// The backend named `id`.
    pub fn backend(&self, id: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.id == id)
    }

    /// Checks the table. `listener` is the front door's own address, when known.
    ///
    /// # Errors
    ///
    /// The first [`RouteProblem`] found.
    pub fn validate(
        &self,
        addrs: &BackendAddrs,
        listener: Option<SocketAddr>,
    ) -> Result<(), RouteProblem> {
        if self.backends.len() > MAX_BACKENDS {
            return Err(RouteProblem::TooManyBackends {
                count: self.backends.len(),
            });
        }
        check_timeout(
            "drain_timeout_ms",
            self.drain_timeout_ms,
            MAX_DRAIN_TIMEOUT_MS,
        )?;
        check_timeout(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            MAX_CONNECT_TIMEOUT_MS,
        )?;
        if self.hold_timeout_ms > MAX_HOLD_TIMEOUT_MS {
            return Err(RouteProblem::BadTimeout {
                field: "hold_timeout_ms",
                value: self.hold_timeout_ms,
                max: MAX_HOLD_TIMEOUT_MS,
            });
        }
        if self.holding && self.hold_timeout_ms == 0 {
            return Err(RouteProblem::HoldingWithoutTimeout);
        }
        if self.latency_edges_ms.len() > crate::traffic::http_stats::MAX_LATENCY_EDGES
            || self
                .latency_edges_ms
                .iter()
                .any(|e| !(1..=MAX_LATENCY_EDGE_MS).contains(e))
        {
            return Err(RouteProblem::BadLatencyEdges {
                edges: self.latency_edges_ms.clone(),
            });
        }
        let mut ids = BTreeSet::new();
        let mut routed: u64 = 0;
        for b in &self.backends {
            if let Some(c) = &b.cohort
                && !valid_cohort(c)
            {
                return Err(RouteProblem::BadCohort {
                    id: b.id.clone(),
                    cohort: c.clone(),
                });
            }
            if !valid_id(&b.id) {
                return Err(RouteProblem::BadId { id: b.id.clone() });
            }
            if !ids.insert(b.id.as_str()) {
                return Err(RouteProblem::DuplicateId { id: b.id.clone() });
            }
            if b.weight > MAX_WEIGHT {
                return Err(RouteProblem::WeightTooLarge {
                    id: b.id.clone(),
                    weight: b.weight,
                });
            }
            if b.addr.port() == 0 || b.addr.ip().is_unspecified() {
                return Err(RouteProblem::AddrUnusable {
                    id: b.id.clone(),
                    addr: b.addr,
                });
            }
            if !addrs.allows(b.addr.ip()) {
                return Err(RouteProblem::AddrNotAllowed {
                    id: b.id.clone(),
                    addr: b.addr,
                });
            }
            if listener.is_some_and(|l| points_at(l, b.addr)) {
                return Err(RouteProblem::AddrIsListener {
                    id: b.id.clone(),
                    addr: b.addr,
                });
            }
            if !b.draining {
                routed += u64::from(b.weight);
            }
        }
        if !self.backends.is_empty() && routed == 0 && !self.holding {
            return Err(RouteProblem::NoWeight);
        }
        Ok(())
    }

    /// Serialises the table as the route file's bytes (pretty JSON, newline-terminated).
    pub fn to_bytes(&self) -> Vec<u8> {
        // A RouteTable has only strings, numbers and addresses: serialising cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates route file bytes; `origin` names the file in errors.
    ///
    /// # Errors
    ///
    /// [`TrafficError::ParseRoutes`] or [`TrafficError::InvalidRoutes`].
    pub fn from_bytes(
        bytes: &[u8],
        origin: &Path,
        addrs: &BackendAddrs,
        listener: Option<SocketAddr>,
    ) -> Result<Self, TrafficError> {
        let table: RouteTable =
            serde_json::from_slice(bytes).map_err(|source| TrafficError::ParseRoutes {
                path: origin.to_owned(),
                source,
            })?;
        table
            .validate(addrs, listener)
            .map_err(|problem| TrafficError::InvalidRoutes {
                path: origin.to_owned(),
                problem,
            })?;
        Ok(table)
    }

    /// Reads, parses and validates a route file.
    ///
    /// # Errors
    ///
    /// [`TrafficError::ReadRoutes`] (missing, unreadable, over [`MAX_FILE_BYTES`]),
    /// [`TrafficError::ParseRoutes`] or [`TrafficError::InvalidRoutes`].
    pub fn load(
        path: &Path,
        addrs: &BackendAddrs,
        listener: Option<SocketAddr>,
    ) -> Result<Self, TrafficError> {
        let bytes = read_limited(path)?;
        Self::from_bytes(&bytes, path, addrs, listener)
    }
}

/// Reads at most [`MAX_FILE_BYTES`] of `path`; more is an error, not a truncation.
fn read_limited(path: &Path) -> Result<Vec<u8>, TrafficError> {
    let err = |source| TrafficError::ReadRoutes {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        )));
    }
    Ok(bytes)
}

fn check_timeout(field: &'static str, value: u64, max: u64) -> Result<(), RouteProblem> {
    if value == 0 || value > max {
        return Err(RouteProblem::BadTimeout { field, value, max });
    }
    Ok(())
}

/// `[A-Za-z0-9._+-]{1,128}`: safe in logs, JSON keys and an nginx comment.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// A cohort name: it becomes a metric label, so a small, tame alphabet.
fn valid_cohort(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_COHORT_LEN
        && c.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Would connecting to `backend` reach the listener at `listener`? A wildcard listener
/// (`0.0.0.0:P`) is reached through every local address on port P.
fn points_at(listener: SocketAddr, backend: SocketAddr) -> bool {
    listener.port() == backend.port()
        && (listener.ip() == backend.ip()
            || (listener.ip().is_unspecified() && backend.ip().is_loopback()))
}
