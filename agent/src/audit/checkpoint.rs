//! Checkpoint entries: the agent's signature over the chain so far.
//!
//! A checkpoint is `{"seq":N,"ts":..,"prev":P,"event":"checkpoint","key_id":K,"sig":S}` where
//! `S` is the base64 Ed25519 signature over
//! `PAE("application/vnd.gantry.audit-checkpoint.v1", P)` and `P` is the checkpoint's own `prev`:
//! it vouches for every line before it. The controller keeps the latest one as a witness.

use std::sync::Arc;

use gantry_proto::audit_chain::sign_checkpoint;
use gantry_proto::keys::SigningKey;

/// The event name of checkpoint entries.
pub(crate) use gantry_proto::audit_chain::CHECKPOINT_EVENT as EVENT;

/// Signs checkpoints with the agent's own key.
pub(crate) struct Sealer {
    key: Arc<SigningKey>,
    key_id: String,
}

impl Sealer {
    /// A sealer for `key`.
    pub(crate) fn new(key: Arc<SigningKey>) -> Self {
        let key_id = key.key_id().as_str().to_owned();
        Self { key, key_id }
    }

    /// The agent's key id, the checkpoint's `key_id` field.
    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The checkpoint's `sig` field when its `prev` is `prev`.
    pub(crate) fn sign(&self, prev: &str) -> String {
        sign_checkpoint(&self.key, prev)
    }
}
