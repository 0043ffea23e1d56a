//! Holding a rollout's lease: taken once, renewed in the background while this replica is
//! alive, and given up the moment a renewal fails or the local deadline passes.
//!
//! The deadline is kept on this process's monotonic clock, so a replica frozen past its lease
//! (SIGSTOP, a long GC-like stall, a VM pause) sees on waking that its lease is gone *before*
//! it sends anything: [`HeldLease::check`] is called before every dispatch. The agents' epoch
//! check and the store's fenced writes catch whatever slips past.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_client::clock::now_ms;

use crate::store::{Lease, Store, StoreError};

/// Who this replica is and how long its leases last.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This replica's name in the store (unique per replica).
    pub holder: String,
    /// How long a lease lasts without renewal; another replica takes over after it.
    pub period: Duration,
}

impl LeaseSettings {
    fn period_ms(&self) -> i64 {
        i64::try_from(self.period.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The lease is no longer this replica's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lost the lease of rollout {rollout_id} (epoch {epoch}): another replica drives it")]
pub struct LeaseLost {
    /// The rollout.
    pub rollout_id: String,
    /// The epoch that was held.
    pub epoch: u64,
}

struct Shared {
    lost: AtomicBool,
    /// Local monotonic time when the lease runs out unless renewed.
    deadline: std::sync::Mutex<Instant>,
}

/// A lease held by this replica; renewed until dropped.
pub struct HeldLease {
    lease: Lease,
    previous_holder: Option<String>,
    shared: Arc<Shared>,
    renewer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl HeldLease {
    /// Takes the lease of `rollout_id` if it is free, expired or ours; `None` when another
    /// replica holds it.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    pub async fn acquire<S: Store>(
        store: Arc<S>,
        rollout_id: &str,
        settings: &LeaseSettings,
    ) -> Result<Option<Self>, StoreError> {
        let previous = store.lease(rollout_id).await?;
        let started = Instant::now();
        let Some(lease) = store
            .acquire_lease(rollout_id, &settings.holder, now_ms(), settings.period_ms())
            .await?
        else {
            return Ok(None);
        };
        let shared = Arc::new(Shared {
            lost: AtomicBool::new(false),
            deadline: std::sync::Mutex::new(started + settings.period),
        });
        let renewer = tokio::spawn(renew(
            store,
            lease.clone(),
            settings.clone(),
            shared.clone(),
        ));
        Ok(Some(Self {
            previous_holder: previous.map(|l| l.holder),
            lease,
            shared,
            renewer,
        }))
    }

    /// The epoch every dispatch and store write of this driver carries.
    pub fn epoch(&self) -> u64 {
        self.lease.epoch
    }

    /// The rollout.
    pub fn rollout_id(&self) -> &str {
        &self.lease.rollout_id
    }

    /// Who held the lease before this take (`None` when it is the first).
    pub fn previous_holder(&self) -> Option<&str> {
        self.previous_holder.as_deref()
    }

    /// Fails when the lease is lost or its local deadline has passed.
    ///
    /// # Errors
    /// [`LeaseLost`].
    pub fn check(&self) -> Result<(), LeaseLost> {
        let expired = self
            .shared
            .deadline
            .lock()
            .map_or(true, |d| Instant::now() >= *d);
        if expired || self.shared.lost.load(Ordering::SeqCst) {
            self.shared.lost.store(true, Ordering::SeqCst);
            return Err(LeaseLost {
                rollout_id: self.lease.rollout_id.clone(),
                epoch: self.lease.epoch,
            });
        }
        Ok(())
    }
}

/// Renews every third of the period; a renewal that is refused, or that cannot reach the
/// store before the deadline, loses the lease for good.
async fn renew<S: Store>(
    store: Arc<S>,
    lease: Lease,
    settings: LeaseSettings,
    shared: Arc<Shared>,
) {
    let every = (settings.period / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let asked = Instant::now();
        match store
            .renew_lease(
                &lease.rollout_id,
                &settings.holder,
                lease.epoch,
                now_ms(),
                settings.period_ms(),
            )
            .await
        {
            Ok(Some(_)) => {
                if let Ok(mut d) = shared.deadline.lock() {
                    *d = asked + settings.period;
                }
            }
            Ok(None) => {
                tracing::warn!(rollout = %lease.rollout_id, epoch = lease.epoch, "lease taken over");
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(rollout = %lease.rollout_id, error = %e, "cannot renew lease");
                let past = shared
                    .deadline
                    .lock()
                    .map_or(true, |d| Instant::now() >= *d);
                if past {
                    shared.lost.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lease_is_renewed_and_a_second_replica_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let a = LeaseSettings {
            holder: "a".into(),
            period: Duration::from_millis(300),
        };
        let b = LeaseSettings {
            holder: "b".into(),
            ..a.clone()
        };
        let held = HeldLease::acquire(store.clone(), "r", &a)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.epoch(), 1);
        assert_eq!(held.previous_holder(), None);
        // Well past one period: renewals kept it.
        tokio::time::sleep(Duration::from_millis(900)).await;
        held.check().unwrap();
        assert!(
            HeldLease::acquire(store.clone(), "r", &b)
                .await
                .unwrap()
                .is_none()
        );
        // Dropped (the driver ended or the process died): b takes over after the period.
        drop(held);
        let taken = loop {
            if let Some(l) = HeldLease::acquire(store.clone(), "r", &b).await.unwrap() {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(taken.epoch(), 2);
        assert_eq!(taken.previous_holder(), Some("a"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_taken_over_is_lost_at_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let a = LeaseSettings {
            holder: "a".into(),
            period: Duration::from_millis(300),
        };
        let held = HeldLease::acquire(store.clone(), "r", &a)
            .await
            .unwrap()
            .unwrap();
        // Another replica takes it behind a's back (as after a pause past the period).
        store
            .acquire_lease("r", "b", now_ms() + 10_000, 10_000)
            .await
            .unwrap();
        let e = loop {
            if let Err(e) = held.check() {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(e.epoch, 1);
        assert!(e.to_string().contains("another replica drives it"), "{e}");
    }
}
