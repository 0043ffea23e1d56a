//! Feature-flag sets: sign one (`SignedFlags`, DESIGN "Feature flags"), push it to an agent,
//! read the set in force.

use gantry_proto::envelope::sign_flags;
use gantry_proto::keys::{KeyId, SigningKey};
use gantry_proto::v1::{FlagsInForce, FlagsReceipt, FlagsRequest, SignedFlags};

use crate::connect::{Agent, ClientError};

/// Adds `key`'s signature over the set's exact bytes, unless it signed already; returns its
/// key id.
pub fn add_flags_signature(signed: &mut SignedFlags, key: &SigningKey) -> KeyId {
    let id = key.key_id();
    if !signed.signatures.iter().any(|s| s.key_id == id.as_str()) {
        signed.signatures.push(sign_flags(key, &signed.flags));
    }
    id
}

/// Pushes a signed flag set; the receipt says what changed.
///
/// # Errors
///
/// [`ClientError::Rejected`] when the agent refuses it, or a connection or agent failure.
pub async fn push(agent: &Agent, signed: SignedFlags) -> Result<FlagsReceipt, ClientError> {
    let mut client = agent.client.clone();
    client
        .push_flags(signed)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| agent.error("PushFlags", s))
}

/// The flag set in force for `app`.
///
/// # Errors
///
/// [`ClientError`] when the agent has no flags for the app, or the call fails.
pub async fn in_force(agent: &Agent, app: &str) -> Result<FlagsInForce, ClientError> {
    let mut client = agent.client.clone();
    client
        .get_flags(FlagsRequest {
            app: app.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| agent.error("GetFlags", s))
}
