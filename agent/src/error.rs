//! How the agent writes an error and its causes: the one [`Chain`] adapter of `gantry-policy`
//! (re-exported here) for job reasons, log lines, audit details and the binary's last words;
//! and the agent's poison-tolerant lock.

use std::error::Error;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use gantry_policy::error::Chain;

/// [`Chain`] as a `String`, for reasons that are stored or sent.
pub fn reason(e: &dyn Error) -> String {
    gantry_policy::error_chain(e)
}

/// Locks `m`, taking over a lock a panicking thread left poisoned: every mutex in the agent
/// guards state that is updated only after the fallible step, so it is consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
