//! End-to-end harness for Gantry: the real `gantry-agent` and `gantry` binaries on loopback,
//! with PKI and keys generated per test, in a throw-away directory and a hermetic environment.
//!
//! # Layout
//!
//! * [`bins`]: finds the built binaries beside the test executable.
//! * [`browser`]: headless Chromium for the dashboard tests (the DOM after scripts, screenshots).
//! * [`process`]: runs a command with a deadline and captures its [`Output`]; cleans up every
//!   process a test left behind.
//! * [`mod@env`]: [`TestEnv`], one temp dir with PKI, keys and an `agent.toml`.
//! * [`agent`]: [`Agent`], a running `gantry-agent run`.
//! * [`controller`]: [`Controller`], the `gantry` CLI with the connection flags set.
//! * [`grpc`]: raw submissions the CLI would refuse to send, and fleet dispatches.
//! * [`fleet`]: plans and dispatches built and signed as the controller service does.
//! * [`service`]: a fleet of agents in rings and `gantry server` processes over them.
//! * [`certs`]: client certificates the handshake must refuse (other CA, expired, not yet valid).
//! * [`artifact`]: release tarballs of the sample app, honest and hostile.
//! * [`load`]: [`Load`], steady HTTP traffic through a front door, counting every failure.
//! * [`nginx`]: a real nginx in front of an app, configured inside the test's directory.
//! * [`prometheus`]: a real Prometheus scraping an agent, configured inside the test's directory.
//! * [`probe`]: [`wait_until`], [`http_get`], [`audit_lines`], free ports.
//! * [`reports`]: real JUnit, LCOV, Cobertura and SARIF reports from pytest, coverage.py and
//!   bandit, for the gate tests.
//! * [`sse`]: [`sse::Watchers`], clients of an app's OFREP event stream.
//! * [`tamper`]: damaged copies of an audit log.
//!
//! # Design
//!
//! Tests run in parallel, each with its own [`TestEnv`]; ports are probed free and handed out
//! once per process. Nothing sleeps a fixed time: [`wait_until`] polls a condition against a
//! deadline. Dropping an [`Agent`] or a [`TestEnv`] kills every process started under its
//! directory, so a failed test leaves nothing running.

#![forbid(unsafe_code)]

pub mod agent;
pub mod artifact;
pub mod bins;
pub mod browser;
pub mod certs;
pub mod controller;
pub mod diskfull;
pub mod env;
pub mod fleet;
pub mod grpc;
pub mod load;
pub mod nginx;
pub mod ofrep;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod reports;
pub mod service;
pub mod sse;
pub mod tamper;

pub use agent::Agent;
pub use artifact::{Hostile, make_artifact, make_hostile_artifact, make_large_artifact};
pub use controller::Controller;
pub use env::SHORT;
pub use env::{KeyPair, Keys, NginxFiles, Options, Pki, Router, TestEnv};
pub use load::{Load, LoadOptions, LoadReport};
pub use probe::{audit_events, audit_lines, banner, http_get, rfc3339, unix_now, wait_until};
pub use process::Output;
