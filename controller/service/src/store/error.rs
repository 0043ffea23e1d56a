//! Why the store could not do what was asked.

use std::path::PathBuf;

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another `gantry server` already uses this data dir.
    #[error("another gantry server uses the store in {}: {reason}", dir.display())]
    Locked {
        /// The data dir.
        dir: PathBuf,
        /// What the lock said.
        reason: String,
    },
    /// The embedded database file could not be opened or written.
    #[error("embedded store {}: {reason}", path.display())]
    Embedded {
        /// The database file.
        path: PathBuf,
        /// The cause.
        reason: String,
    },
    /// PostgreSQL could not be reached or refused a statement.
    #[error("postgres store: {0}")]
    Postgres(String),
    /// The store was written by a newer build (a schema version this one does not know).
    #[error("store schema version {found} is newer than this build's {known}; upgrade gantry")]
    SchemaTooNew {
        /// The version in the store.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A record in the store does not decode.
    #[error("corrupt {what} record {key:?} in the store: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Its key.
        key: String,
        /// The decode error.
        reason: String,
    },
    /// A rollout with this id exists already.
    #[error("rollout {0} exists already (a plan runs once; give a new plan_id)")]
    Exists(String),
    /// No rollout with this id.
    #[error("no rollout {0}")]
    NotFound(String),
    /// The write named a lease epoch that is no longer current: another replica drives the
    /// rollout now.
    #[error("rollout {rollout_id}: lease epoch {epoch} was superseded by {current}")]
    Fenced {
        /// The rollout.
        rollout_id: String,
        /// The epoch the write named.
        epoch: u64,
        /// The current epoch.
        current: u64,
    },
    /// A flag set was handed in whose version is not above the one the service distributes.
    #[error(
        "flags of {app}: version {version} is not above version {current}, which the service distributes already (sign the next version)"
    )]
    FlagsSuperseded {
        /// The app.
        app: String,
        /// The version handed in.
        version: u64,
        /// The version kept.
        current: u64,
    },
}
