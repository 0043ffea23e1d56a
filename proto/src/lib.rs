//! Gantry's contracts: everything the agent and the controller must agree on byte for byte.
//!
//! # Layout
//!
//! * [`v1`]: the generated gRPC service and messages of `gantry/v1/gantry.proto`.
//! * [`envelope`]: the DSSE pre-authentication encoding, signing and verifying a job's exact bytes.
//! * [`keys`]: Ed25519 keys as PEM files (PKCS#8 private, SPKI public) and their key ids.
//! * [`audit_chain`]: audit-line hashing, checkpoint signatures and chain verification.
//! * [`audit_line`]: an audit entry as the one line both `audit tail` commands print.
//! * [`attest`]: release evidence, in-toto statements of quality gates in DSSE envelopes.
//! * [`fleet`]: the payload types of plans and dispatches, and the job id a dispatch carries.
//! * [`conn`]: the connection wrapper both ends of a dial-out link hand to tonic.
//! * [`dashboard_http`]: what the agent's and the service's read-only dashboards answer alike.
//!
//! This crate has no runtime, no policy and no I/O beyond reading and writing key files (and
//! passing a connection's bytes through [`conn`], building HTTP answers in [`dashboard_http`]).
//!
//! The formats are written down for other implementations in `docs/protocol.md` (service,
//! envelope, keys) and `docs/audit-log.md` (audit lines, checkpoints, witness);
//! `tests/data/` holds test vectors and one folder of adversarial input per defect.

#![forbid(unsafe_code)]

pub mod attest;
pub mod audit_chain;
pub mod audit_line;
pub mod conn;
pub mod dashboard_http;
pub mod envelope;
pub mod fleet;
pub mod keys;

/// The generated code of `gantry.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls
)]
pub mod v1 {
    tonic::include_proto!("gantry.v1");
}
