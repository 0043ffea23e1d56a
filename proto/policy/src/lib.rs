//! What Gantry's agent and controller must agree on that is not a wire format.
//!
//! `gantry-proto` fixes the bytes; this crate fixes their meaning: the validated job types and
//! their names, the pure checks that decide whether an agent admits a job, and the agent's
//! config (the trust boundary) with its policy. The agent enforces them; the controller uses
//! the same code to explain a job against a policy (`gantry job show --policy`) and to write
//! agent configs, so neither side can drift from the other.
//!
//! # Layout
//!
//! * [`job`]: domain types of a job (`Action`, `StrategyKind`, `JobSpec`, `VerifiedJob`, names
//!   and digests), with the names used in configs, audit entries and messages.
//! * [`dns`]: [`DnsName`](dns::DnsName), the one check of a DNS name as certificates carry it
//!   (agent ids, controller names).
//! * [`admission`]: the pure checks: signatures over the raw bytes, decoding, the validity
//!   window, roles and quorum, and their one-at-a-time explanation.
//! * [`environment`]: the rules per environment (pre-releases, required gates, approvals).
//! * [`error`]: [`Chain`](error::Chain), how an error and its causes are written.
//! * [`config`]: the agent's TOML as written ([`config::raw`], also a typed builder) and
//!   validated into [`config::Config`], with the policy report.
//!
//! # Design
//!
//! No async runtime and no server: the crate is linked by the CLI as well as the daemon.

#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod dns;
pub mod environment;
pub mod error;
pub mod job;

use std::time::{SystemTime, UNIX_EPOCH};

/// An error and its chain of causes on one line, `outer: cause: root cause`; a cause whose
/// text the message already ends with is not repeated ([`error::Chain`] as a `String`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    error::Chain(e).to_string()
}

/// The system clock in Unix seconds (0 before the epoch).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
