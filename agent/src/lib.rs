//! The Gantry agent: one daemon per production host that obeys only signed deploy jobs its
//! local policy trusts.
//!
//! # Layout
//!
//! Data flows one way, top to bottom:
//!
//! * [`server`]: gRPC over mutual TLS; proto types stop at `server::convert`.
//! * [`admission`]: signatures over the raw job bytes, policy roles, replay, validity window;
//!   yields a [`job::VerifiedJob`].
//! * [`audit`]: the append-only, hash-chained, group-committed audit log with signed checkpoints.
//! * [`executor`]: one job at a time per app; runs a [`strategy`] and publishes its events.
//! * [`strategy`]: hot, rolling, blue-green and canary deploys and their rollbacks.
//! * [`supervisor`]: instance processes: spawn as the app's user, stop, restart, adopt.
//! * [`artifact`]: the content-addressed store, safe unpacking, releases and `current`.
//! * [`health`]: http, tcp and exec probes with thresholds and deadlines.
//! * [`traffic`]: where connections go: route tables, the front door proxy, nginx.
//! * [`state`]: what runs where, written atomically.
//!
//! [`daemon`] assembles them for `gantry-agent run`.
//!
//! Beside the flow: [`fsguard`] (start-up checks of key, config and data-dir ownership, modes
//! and symlinks), [`cli`] (the operator commands), [`secrets`] (keyed hashes of secret env
//! values for the audit log), [`telemetry`] and [`shutdown`].
//!
//! Shared with the controller, from the `gantry-policy` crate and re-exported here under
//! their old paths: [`job`] (domain types of a job and their names), [`config`] (the agent's
//! TOML, validated, and the policy report), and the pure checks that [`admission`] runs
//! (`admission::{decode, policy, window, explain}`, `AdmissionError`). [`keys`](gantry_proto::keys)
//! come from `gantry-proto`.

pub mod admission;
pub mod app;
pub mod artifact;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod error;
pub mod executor;
pub mod fsguard;
pub mod health;
pub mod lock;
pub mod progress;
pub mod reach;
pub mod readiness;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod strategy;
pub mod supervisor;
pub mod telemetry;
pub mod traffic;

// Shared with the controller through gantry-policy; re-exported under their old paths so that
// `crate::job::…` and `crate::config::…` keep working.
pub use gantry_policy::{config, job};
