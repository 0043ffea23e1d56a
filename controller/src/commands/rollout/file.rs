//! The plan file: the protobuf encoding of `gantry.v1.SignedPlan`, read, written atomically
//! and signed.

use std::path::Path;

use gantry_proto::fleet;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{Plan, SignedPlan};
use prost::Message;

use crate::commands::envelope_file::{BoundedRead, read_bounded, write_atomic};

use super::{MAX_PLAN_FILE, RolloutError};

/// A plan file in memory: the envelope and the decoded plan.
#[derive(Debug, Clone)]
pub struct PlanFile {
    /// The envelope, as read.
    pub signed: SignedPlan,
    /// `signed.plan` decoded (for display; signatures cover the bytes).
    pub plan: Plan,
}

impl PlanFile {
    /// Wraps a new plan with no signatures.
    pub fn new(plan: Plan) -> Self {
        Self {
            signed: SignedPlan {
                plan: plan.encode_to_vec(),
                signatures: Vec::new(),
                comments: Vec::new(),
            },
            plan,
        }
    }

    /// Decodes an envelope.
    ///
    /// # Errors
    ///
    /// [`RolloutError::Decode`] naming `path`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self, RolloutError> {
        let signed = SignedPlan::decode(bytes).map_err(|source| RolloutError::Decode {
            path: path.to_owned(),
            what: "envelope",
            source,
        })?;
        let plan = Plan::decode(signed.plan.as_slice()).map_err(|source| RolloutError::Decode {
            path: path.to_owned(),
            what: "plan bytes",
            source,
        })?;
        Ok(Self { signed, plan })
    }

    /// Reads and decodes a plan file.
    ///
    /// # Errors
    ///
    /// [`RolloutError`] when it cannot be read or decoded.
    pub fn read(path: &Path) -> Result<Self, RolloutError> {
        let bytes = read_bounded(path, MAX_PLAN_FILE).map_err(|e| match e {
            BoundedRead::Io(source) => RolloutError::Read {
                path: path.to_owned(),
                source,
            },
            BoundedRead::TooLarge(size) => RolloutError::TooLarge {
                path: path.to_owned(),
                size,
            },
        })?;
        Self::decode(path, &bytes)
    }

    /// Writes the envelope atomically (temp file in the same directory, fsync, rename).
    ///
    /// # Errors
    ///
    /// [`RolloutError::Write`].
    pub fn write(&self, path: &Path) -> Result<(), RolloutError> {
        write_atomic(path, &self.signed.encode_to_vec()).map_err(|source| RolloutError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// The plan digest (SHA-256 of the exact plan bytes): what dispatches name.
    pub fn digest(&self) -> String {
        fleet::plan_digest(&self.signed.plan)
    }

    /// Adds `key`'s signature.
    ///
    /// # Errors
    ///
    /// [`RolloutError::AlreadySigned`] when `key` signed it already (by key id or by a
    /// verifying signature).
    pub fn sign(&mut self, path: &Path, key: &SigningKey) -> Result<(), RolloutError> {
        let key_id = key.key_id();
        let public = key.public_key();
        let dup = self.signed.signatures.iter().any(|s| {
            s.key_id == key_id.as_str()
                || fleet::verify_plan(&public, &self.signed.plan, &s.sig).is_ok()
        });
        if dup {
            return Err(RolloutError::AlreadySigned {
                path: path.to_owned(),
                key_id: key_id.to_string(),
            });
        }
        self.signed
            .signatures
            .push(fleet::sign_plan(key, &self.signed.plan));
        Ok(())
    }
}
