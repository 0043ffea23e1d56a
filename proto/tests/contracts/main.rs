//! Contract tests of `gantry-proto`: key files, the signed-job envelope and the audit chain,
//! against fixed vectors and adversarial fixtures in `tests/data/<defect>/`.
//!
//! The derived fixtures (job vector, tampered envelopes, audit logs) are produced by
//! [`fixtures::generate`] from the committed keys; `fixtures_are_current` fails when they
//! drift. Regenerate with
//! `cargo test -p gantry-proto --test contracts -- --ignored regenerate_fixtures`.

#![allow(clippy::unwrap_used, missing_docs)]

mod audit;
mod envelope;
mod fixtures;
mod keys;
