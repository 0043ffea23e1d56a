//! Rings as flags (`--ring SPEC`, repeatable) or a TOML file (`--rings FILE`), validated into
//! `gantry.v1.Ring` (stage two). Both spell the same keys:
//!
//! ```toml
//! [[ring]]
//! name = "canary"
//! agent_ids = ["web-1"]            # and/or
//! labels = { ring = "0" }          # every label equal
//! max_parallel = "1"               # a count or a percent of the ring's hosts; default 1
//! min_healthy = "100%"             # a count or a percent; default 100%
//! bake = "1h"                      # how long the ring stays healthy before the next starts
//! on_failure = "rollback_ring"     # halt (default), rollback_ring, rollback_all
//! max_restarts = 0                 # gates over each host during the deploy and the bake
//! max_conn_errors = 0
//! max_unhealthy_hosts = 0
//! host_deadline = "20m"            # default: the release's progress deadline plus 1 min
//! flag_percent = 10                # with --canary-flag: the flag's percent once promoted
//! ```
//!
//! As a flag: `name=canary,ids=web-1;web-2,labels=ring:0;region:eu,bake=1h,...`.

use std::collections::BTreeMap;
use std::path::Path;

use gantry_proto::v1::{OnFailure, Ring, RingGates, Selector};
use serde::Deserialize;

use super::RolloutError;
use crate::flags::{self, FlagError};

/// One ring as written, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRing {
    /// Shown in status.
    pub name: String,
    /// Agents selected by id.
    #[serde(default)]
    pub agent_ids: Vec<String>,
    /// Agents selected by labels (every one equal).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Hosts at once: `N` or `P%`.
    pub max_parallel: Option<String>,
    /// Hosts that must end healthy: `N` or `P%`.
    pub min_healthy: Option<String>,
    /// Bake time, humantime.
    pub bake: Option<String>,
    /// `halt`, `rollback_ring` or `rollback_all`.
    pub on_failure: Option<String>,
    /// Gate: instance restarts per host.
    pub max_restarts: Option<u32>,
    /// Gate: front-door connection errors per host.
    pub max_conn_errors: Option<u64>,
    /// Gate: hosts of the ring not running all instances.
    pub max_unhealthy_hosts: Option<u32>,
    /// A host's deploy deadline, humantime.
    pub host_deadline: Option<String>,
    /// With the release's canary flag: the percent its hosts serve once promoted.
    pub flag_percent: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RingsFile {
    #[serde(default)]
    ring: Vec<RawRing>,
}

const RING: &str = "--ring";

fn bad(message: impl Into<String>) -> FlagError {
    FlagError::new(RING, message)
}

/// Parses one `--ring` spec.
///
/// # Errors
///
/// [`FlagError`] for `--ring` naming the bad part.
pub fn parse_spec(raw: &str) -> Result<RawRing, FlagError> {
    let mut ring = RawRing::default();
    for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
        let (k, v) = (k.trim(), v.trim());
        let number = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{what} {v:?} is not a number")))
        };
        match k {
            "name" => ring.name = v.to_owned(),
            "ids" | "agent_ids" => ring.agent_ids = list(v),
            "labels" => {
                for item in list(v) {
                    let (lk, lv) = item
                        .split_once(':')
                        .ok_or_else(|| bad(format!("label {item:?} is not NAME:VALUE")))?;
                    ring.labels.insert(lk.to_owned(), lv.to_owned());
                }
            }
            "max_parallel" => ring.max_parallel = Some(v.to_owned()),
            "min_healthy" => ring.min_healthy = Some(v.to_owned()),
            "bake" => ring.bake = Some(v.to_owned()),
            "on_failure" => ring.on_failure = Some(v.to_owned()),
            "host_deadline" => ring.host_deadline = Some(v.to_owned()),
            "max_restarts" => {
                ring.max_restarts =
                    Some(u32::try_from(number(k)?).map_err(|_| bad(format!("{k} is too large")))?);
            }
            "max_unhealthy_hosts" => {
                ring.max_unhealthy_hosts =
                    Some(u32::try_from(number(k)?).map_err(|_| bad(format!("{k} is too large")))?);
            }
            "max_conn_errors" => ring.max_conn_errors = Some(number(k)?),
            "flag_percent" => {
                ring.flag_percent =
                    Some(u32::try_from(number(k)?).map_err(|_| bad(format!("{k} is too large")))?);
            }
            other => {
                return Err(bad(format!(
                    "unknown key {other:?} (expected name, ids, labels, max_parallel, \
                     min_healthy, bake, on_failure, max_restarts, max_conn_errors, \
                     max_unhealthy_hosts, host_deadline, flag_percent)"
                )));
            }
        }
    }
    Ok(ring)
}

fn list(v: &str) -> Vec<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads the rings of a `--rings` TOML file, in order.
///
/// # Errors
///
/// [`RolloutError::ReadRings`] or [`RolloutError::ParseRings`].
pub fn read_file(path: &Path) -> Result<Vec<RawRing>, RolloutError> {
    let text = std::fs::read_to_string(path).map_err(|source| RolloutError::ReadRings {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str::<RingsFile>(&text)
        .map(|f| f.ring)
        .map_err(|e| RolloutError::ParseRings {
            path: path.to_owned(),
            detail: e.to_string(),
        })
}

/// A count (`N`, at least `min`) or a percent (`P%`, 1 to 100).
fn count_or_percent(what: &str, raw: &str, min: u64) -> Result<String, FlagError> {
    let raw = raw.trim();
    if let Some(p) = raw.strip_suffix('%') {
        return match p.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(format!("{n}%")),
            _ => Err(bad(format!("{what} {raw:?}: a percent is 1% to 100%"))),
        };
    }
    match raw.parse::<u64>() {
        Ok(n) if n >= min => Ok(n.to_string()),
        _ => Err(bad(format!(
            "{what} {raw:?} is neither a count (at least {min}) nor a percent (P%)"
        ))),
    }
}

fn millis(what: &str, raw: Option<&str>) -> Result<u64, FlagError> {
    match raw.map(str::trim) {
        None | Some("0") => Ok(0),
        Some(raw) => flags::duration(RING, raw)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| bad(format!("{what}: {e}"))),
    }
}

/// What `on_failure` says, by its name (`halt`, `rollback_ring`, `rollback_all`).
///
/// # Errors
///
/// [`FlagError`] for another name.
pub fn on_failure(raw: &str) -> Result<OnFailure, FlagError> {
    match raw.replace('-', "_").as_str() {
        "halt" => Ok(OnFailure::Halt),
        "rollback_ring" => Ok(OnFailure::RollbackRing),
        "rollback_all" => Ok(OnFailure::RollbackAll),
        _ => Err(bad(format!(
            "on_failure {raw:?} is not halt, rollback_ring or rollback_all"
        ))),
    }
}

/// The name of an `on_failure` wire value.
pub fn on_failure_name(value: i32) -> &'static str {
    match OnFailure::try_from(value) {
        Ok(OnFailure::Halt | OnFailure::Unspecified) => "halt",
        Ok(OnFailure::RollbackRing) => "rollback_ring",
        Ok(OnFailure::RollbackAll) => "rollback_all",
        Err(_) => "unknown",
    }
}

/// Validates one ring.
///
/// # Errors
///
/// [`FlagError`] for `--ring` naming the ring and the problem.
pub fn build(raw: &RawRing, index: usize) -> Result<Ring, FlagError> {
    let at = |e: FlagError| bad(format!("ring {index} ({:?}): {}", raw.name, e.message));
    if raw.name.trim().is_empty() {
        return Err(bad(format!("ring {index} has no name")));
    }
    if raw.agent_ids.is_empty() && raw.labels.is_empty() {
        return Err(at(bad("selects no agent: give ids or labels")));
    }
    if raw.agent_ids.iter().any(String::is_empty)
        || raw.labels.iter().any(|(k, v)| k.is_empty() || v.is_empty())
    {
        return Err(at(bad("an agent id or a label is empty")));
    }
    Ok(Ring {
        name: raw.name.trim().to_owned(),
        selector: Some(Selector {
            agent_ids: raw.agent_ids.clone(),
            labels: raw
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        max_parallel: count_or_percent(
            "max_parallel",
            raw.max_parallel.as_deref().unwrap_or("1"),
            1,
        )
        .map_err(at)?,
        min_healthy: count_or_percent(
            "min_healthy",
            raw.min_healthy.as_deref().unwrap_or("100%"),
            0,
        )
        .map_err(at)?,
        bake_ms: millis("bake", raw.bake.as_deref()).map_err(at)?,
        gates: Some(RingGates {
            max_restarts: raw.max_restarts.unwrap_or(0),
            max_conn_errors: raw.max_conn_errors.unwrap_or(0),
            max_unhealthy_hosts: raw.max_unhealthy_hosts.unwrap_or(0),
        }),
        on_failure: on_failure(raw.on_failure.as_deref().unwrap_or("halt"))
            .map_err(at)?
            .into(),
        host_deadline_ms: millis("host_deadline", raw.host_deadline.as_deref()).map_err(at)?,
        flag_percent: match raw.flag_percent {
            Some(p) if p > 100 => {
                return Err(at(bad(format!(
                    "flag_percent {p} is more than 100 (percent)"
                ))));
            }
            p => p,
        },
    })
}
