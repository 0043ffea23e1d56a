//! The durable store behind one trait: an embedded database file in the data dir by default
//! ([`embedded`]), PostgreSQL for several replicas ([`postgres`]). Both run the same
//! conformance suite (`conformance.rs`, run by the tests).
//!
//! Every write that a rollout's driver makes is *fenced*: it names the lease epoch it holds,
//! and the store refuses it ([`StoreError::Fenced`]) when the lease has moved on, so a replica
//! that was paused past its lease cannot overwrite what its successor wrote.

use std::future::Future;

pub mod conformance;
pub mod embedded;
mod error;
pub mod model;
#[cfg(any(test, feature = "test-util"))]
pub mod pg_test;
pub mod postgres;

pub use error::StoreError;
pub use model::{
    AgentRecord, BakeCounts, CheckpointRecord, Control, ControlRequest, DeliveryState,
    FlagDeliveryRecord, FlagSetRecord, HostAction, HostRecord, HostStep, Lease, RolloutRecord,
    RolloutState,
};

/// What the service keeps, wherever it keeps it.
///
/// Times are Unix milliseconds passed in by the caller, so tests control the clock.
pub trait Store: Send + Sync + 'static {
    /// Adds or replaces an agent of the inventory.
    fn put_agent(&self, agent: AgentRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every agent, by id.
    fn agents(&self) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;

    /// Keeps a newly handed-in rollout.
    ///
    /// # Errors
    /// [`StoreError::Exists`] when a rollout with this id exists (a plan runs once).
    fn create_rollout(
        &self,
        rollout: RolloutRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One rollout, if it exists.
    fn rollout(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<RolloutRecord>, StoreError>> + Send;

    /// Every rollout, oldest first.
    fn rollouts(&self) -> impl Future<Output = Result<Vec<RolloutRecord>, StoreError>> + Send;

    /// Replaces a rollout's progress, if `epoch` is still the rollout's lease epoch.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when another replica holds a newer epoch;
    /// [`StoreError::NotFound`] when there is no such rollout.
    fn update_rollout(
        &self,
        rollout: RolloutRecord,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Replaces one host's step, if `epoch` is still the rollout's lease epoch.
    ///
    /// # Errors
    /// [`StoreError::Fenced`], as [`Store::update_rollout`].
    fn put_host(
        &self,
        host: HostRecord,
        epoch: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The hosts of a rollout, by ring then agent id.
    fn hosts(
        &self,
        rollout_id: &str,
    ) -> impl Future<Output = Result<Vec<HostRecord>, StoreError>> + Send;

    /// Takes the lease of a rollout for `holder` when it is free, expired, or already
    /// `holder`'s; the epoch grows by one on every take. `None` when another holder has it.
    fn acquire_lease(
        &self,
        rollout_id: &str,
        holder: &str,
        now_ms: i64,
        period_ms: i64,
    ) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    /// Extends a held lease (compare-and-set on holder and epoch). `None` when it was lost.
    fn renew_lease(
        &self,
        rollout_id: &str,
        holder: &str,
        epoch: u64,
        now_ms: i64,
        period_ms: i64,
    ) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    /// The lease of a rollout, if one was ever taken.
    fn lease(
        &self,
        rollout_id: &str,
    ) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    /// Keeps a checkpoint witnessed from an agent if its seq is higher than the one kept
    /// (forward only). True when it was kept.
    fn witness_checkpoint(
        &self,
        checkpoint: CheckpointRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records an operator's request for a rollout's driver, replacing any pending one (not
    /// fenced: any replica may take it; the lease holder applies and clears it).
    fn set_control(
        &self,
        request: ControlRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The pending request of a rollout, if any.
    fn control(
        &self,
        rollout_id: &str,
    ) -> impl Future<Output = Result<Option<ControlRequest>, StoreError>> + Send;

    /// Clears a pending request if it is still `request` (a newer one stays).
    fn clear_control(
        &self,
        request: &ControlRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest checkpoint witnessed from an agent.
    fn checkpoint(
        &self,
        agent_id: &str,
    ) -> impl Future<Output = Result<Option<CheckpointRecord>, StoreError>> + Send;

    /// Keeps `set` as its app's flag set if its version is above the one kept, or it is the
    /// kept document with other signatures (in one transaction, so replicas agree).
    /// [`Published::Same`] when exactly these bytes are kept already.
    ///
    /// # Errors
    /// [`StoreError::FlagsSuperseded`] when the kept version is higher, or equal with other
    /// bytes.
    fn publish_flags(
        &self,
        set: FlagSetRecord,
    ) -> impl Future<Output = Result<Published, StoreError>> + Send;

    /// The flag set kept for an app, if any.
    fn flag_set(
        &self,
        app: &str,
    ) -> impl Future<Output = Result<Option<FlagSetRecord>, StoreError>> + Send;

    /// Every app's flag set, by app.
    fn flag_sets(&self) -> impl Future<Output = Result<Vec<FlagSetRecord>, StoreError>> + Send;

    /// Adds or replaces one agent's delivery of an app's flag set.
    fn put_delivery(
        &self,
        delivery: FlagDeliveryRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The deliveries of an app's flag set, by agent id.
    fn deliveries(
        &self,
        app: &str,
    ) -> impl Future<Output = Result<Vec<FlagDeliveryRecord>, StoreError>> + Send;
}

/// What [`Store::publish_flags`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The set is kept now.
    New,
    /// This very document was kept already.
    Same,
}

/// Decides a publication against the set kept: `Ok(true)` to write it, `Ok(false)` when it is
/// the same document. Shared by every store so they agree exactly.
pub(crate) fn judge_publication(
    current: Option<&FlagSetRecord>,
    set: &FlagSetRecord,
) -> Result<bool, StoreError> {
    match current {
        None => Ok(true),
        Some(c) if set.version > c.version => Ok(true),
        // The same document with other signatures (an approval added): kept in its place.
        Some(c) if c.version == set.version && c.digest == set.digest => {
            Ok(c.signed_hex != set.signed_hex)
        }
        Some(c) => Err(StoreError::FlagsSuperseded {
            app: set.app.clone(),
            version: set.version,
            current: c.version,
        }),
    }
}

/// Decides a lease take: the lease after `holder` takes it at `now_ms`, or `None` when someone
/// else holds it. Shared by every store so they agree exactly.
pub(crate) fn take_lease(
    current: Option<&Lease>,
    rollout_id: &str,
    holder: &str,
    now_ms: i64,
    period_ms: i64,
) -> Option<Lease> {
    let epoch = match current {
        None => 1,
        Some(l) if l.holder == holder || l.expires_ms <= now_ms => l.epoch + 1,
        Some(_) => return None,
    };
    Some(Lease {
        rollout_id: rollout_id.to_owned(),
        holder: holder.to_owned(),
        epoch,
        expires_ms: now_ms.saturating_add(period_ms),
    })
}

/// Decides a lease renewal: the extended lease, or `None` when it is no longer `holder`'s at
/// `epoch`.
pub(crate) fn extend_lease(
    current: Option<&Lease>,
    holder: &str,
    epoch: u64,
    now_ms: i64,
    period_ms: i64,
) -> Option<Lease> {
    match current {
        Some(l) if l.holder == holder && l.epoch == epoch => Some(Lease {
            expires_ms: now_ms.saturating_add(period_ms),
            ..l.clone()
        }),
        Some(_) | None => None,
    }
}
