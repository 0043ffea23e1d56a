//! The state one front door's tasks share: paths, flags, the routing table under its lock,
//! and the stats file written from it.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::should_warn;
use super::table::Routing;
use crate::error::reason;
use crate::traffic::stats::{BackendStats, Stats};
use crate::traffic::{BackendAddrs, TrafficError};

/// What the listener, the connections, the reload and the stats tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) routes_path: PathBuf,
    pub(super) stats_path: PathBuf,
    pub(super) backend_addrs: BackendAddrs,
    pub(super) local_addr: SocketAddr,
    pub(super) stats_interval: Duration,
    pub(super) pid: u32,
    pub(super) started_at_ms: u64,
    pub(super) routing: Mutex<Routing>,
    /// Reload requests; a request while a reload runs is kept, so none is lost.
    pub(super) reload: Notify,
    /// Asks the stats writer for an immediate write.
    pub(super) write_stats: Notify,
    pub(super) stop_accepting: CancellationToken,
    pub(super) stop_stats: CancellationToken,
    pub(super) cut_all: CancellationToken,
    pub(super) accepting: AtomicBool,
    pub(super) connections: AtomicU64,
    pub(super) unrouted: AtomicU64,
    pub(super) last_accept_warn: AtomicU64,
    pub(super) last_stats_warn: AtomicU64,
    pub(super) conns: TaskTracker,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Routing> {
        // Every critical section leaves Routing consistent, so a panic elsewhere cannot have
        // left it half-updated: keep serving.
        self.routing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn snapshot(&self) -> Stats {
        let mut routing = self.lock();
        let backends = routing
            .backends
            .iter()
            .map(|(id, slot)| {
                let mut b = BackendStats {
                    addr: Some(slot.addr),
                    weight: slot.weight,
                    draining: slot.draining,
                    in_table: slot.in_table,
                    ..BackendStats::default()
                };
                slot.counters.fill(&mut b);
                (id.to_string(), b)
            })
            .collect();
        let stats = Stats {
            generation: routing.table.generation,
            pid: self.pid,
            listen: Some(self.local_addr),
            started_at_ms: self.started_at_ms,
            updated_at_ms: u64::try_from(crate::clock::now_ms()).unwrap_or(0),
            reloads: routing.reloads,
            last_reload_error: routing.last_reload_error.clone(),
            accepting: self.accepting.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            unrouted: self.unrouted.load(Ordering::Relaxed),
            backends,
        };
        routing.prune();
        stats
    }

    pub(super) async fn write_stats(&self) {
        let stats = self.snapshot();
        let path = self.stats_path.clone();
        let result = tokio::task::spawn_blocking(move || stats.store(&path))
            .await
            .unwrap_or_else(|e| {
                Err(TrafficError::WriteStats {
                    path: self.stats_path.clone(),
                    source: io::Error::other(e),
                })
            });
        if let Err(e) = result
            && should_warn(&self.last_stats_warn)
        {
            tracing::warn!("{}", reason(&e));
        }
    }

    pub(super) async fn stats_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.stats_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.write_stats.notified() => {}
                () = self.stop_stats.cancelled() => return,
            }
            self.write_stats().await;
        }
    }

    pub(super) async fn reload_loop(self: Arc<Self>) {
        loop {
            self.reload.notified().await;
            self.reload().await;
            self.write_stats.notify_one();
        }
    }
}
