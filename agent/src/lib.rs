//! The Gantry agent: one daemon per production host that obeys only signed deploy jobs its
//! local policy trusts.
//!
//! # Layout
//!
//! A job flows top to bottom, and every import points down (checked with
//! `scripts/import-graph.py`; the one exception is named at the end):
//!
//! * [`daemon`] assembles the rest for `gantry-agent run` ([`lock`]: one agent per data dir;
//!   [`readiness`]: systemd notifications; [`exporter`]: `/metrics`; [`dashboard`]: the
//!   read-only deploy dashboard on the same listener); [`cli`] holds the
//!   operator commands.
//! * [`server`]: gRPC over mutual TLS, the per-certificate throttle and the rejection flood
//!   summary; proto types stop at `server::convert`, errors become codes in `server::status`.
//!   The service is `server::service` (each RPC maps in and delegates), with its job streams
//!   (`answer`), recorded refusals (`rejections`), `upload` and `audit_tail`; transport set-up
//!   is `tls` (listening) or `dialout`, the connection wrapper `gantry_proto::conn`.
//! * [`intake`]: the submit use case (admit → reserve → `job.accepted` within a deadline →
//!   spawn, `IntakeError`), the same for a fleet dispatch, and the look-up of a job admitted
//!   earlier for `watch`.
//! * [`admission`]: signatures over the raw job bytes, policy roles, validity window, and the
//!   replay check-and-insert on the [`ledger`]; yields a [`job::VerifiedJob`]. Its `dispatch`
//!   module admits a signed fleet plan plus a signed dispatch as the job the plan describes
//!   (epochs and plan runs in `ledger::plans`).
//! * [`executor`]: one job at a time per app (`mod`), start-up adoption, recovery and standby
//!   scale-down (`recovery`), what `status` shows (`status`).
//! * [`strategy`]: dispatch and `StrategyError` (`mod`), the job's context (`ctx`), shared steps
//!   and the `within` template (`steps`), traffic shifts (`shift`); hot, rolling, blue-green,
//!   canary.
//! * [`app`]: one app's runtime (state, releases, instances), its slots, its router and the
//!   front door process's life cycle; `AppView`, what admission asks the executor.
//! * [`health`]: http, tcp and exec probes, the wait until healthy, and `watch` for instances
//!   that must stay healthy. [`traffic`]: route tables, the front door proxy, nginx.
//!   [`artifact`]: the content-addressed store, safe unpacking, releases and `current`.
//!   [`reach`] and [`fsguard`]: start-up checks of paths and modes.
//! * [`flags`]: signed feature-flag sets per app: admission (`admit`), the store of the set
//!   in force (`store`), and the OFREP endpoint that serves it to the app (`ofrep`).
//! * [`supervisor`]: instance processes: spawn as the app's user, stop, restart, adopt.
//! * [`config`] (the agent's TOML, validated) and [`secrets`] (keyed hashes of secret env
//!   values for the audit log).
//! * The ground floor, importing nothing above it: [`audit`] (the append-only, hash-chained,
//!   group-committed log every floor writes to), [`state`] (write_atomic, what runs where),
//!   [`ledger`] (every admitted job id and where it stands, rebuilt from the audit log when
//!   `jobs/` is lost), [`progress`] (job outcomes, events and their feed), [`clock`], [`error`] (the error-chain
//!   formatter), [`job`] (domain types), [`telemetry`], [`metrics`] (the Prometheus counters
//!   every floor bumps) and [`shutdown`].
//!
//! [`keys`](gantry_proto::keys) come from `gantry-proto`.
//!
//! Shared with the controller, from the `gantry-policy` crate and re-exported here under
//! their old paths: [`job`] (domain types of a job and their names), [`config`] (the agent's
//! TOML, validated, and the policy report), and the pure checks that [`admission`] runs
//! (`admission::{decode, policy, window, explain}`, `AdmissionError`).
//!
//! Known exception, to be removed: inside `supervisor`, `monitor` and `stop` share the process
//! type and call each other.

pub mod admission;
pub mod app;
pub mod artifact;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod dashboard;
pub mod error;
pub mod executor;
pub mod exporter;
pub mod flags;
pub mod fsguard;
pub mod health;
pub mod intake;
pub mod ledger;
pub mod lock;
pub mod metrics;
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
