//! The state one front door's tasks share: paths, flags, the routing table under its lock;
//! reloads and the drain timers they arm, the stats file written from it, and the rate limit
//! on repeated warnings.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::Routing;
use crate::config::FrontDoorMode;
use crate::error::reason;
use crate::traffic::stats::{BackendStats, Stats};
use crate::traffic::{BackendAddrs, RouteTable, TrafficError};

/// At most one warning per this interval for each repeating cause (a dead backend, accept
/// errors, stats write errors): they are triggered by input and must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// What the listener, the connections, the reload and the stats tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) routes_path: PathBuf,
    pub(super) stats_path: PathBuf,
    pub(super) backend_addrs: BackendAddrs,
    pub(super) local_addr: SocketAddr,
    pub(super) stats_interval: Duration,
    pub(super) mode: FrontDoorMode,
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
    /// Connections held because every backend refused them.
    pub(super) held: AtomicU64,
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
        let http = self.mode == FrontDoorMode::Http;
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
                    cohort: Some(slot.cohort.to_string()),
                    http: http.then(|| slot.http.snapshot()),
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
            held: self.held.load(Ordering::Relaxed),
            backends,
            mode: self.mode.as_str().to_owned(),
            cohorts: if http {
                routing
                    .cohorts
                    .iter()
                    .map(|(name, c)| (name.to_string(), c.snapshot()))
                    .collect()
            } else {
                std::collections::BTreeMap::new()
            },
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

impl Shared {
    /// Arms one timer per backend whose draining just started.
    pub(super) fn arm_drain_timers(
        self: &Arc<Self>,
        drains: Vec<(Arc<str>, u64)>,
        timeout: Duration,
    ) {
        for (id, episode) in drains {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let mut routing = shared.lock();
                if let Some(slot) = routing.backends.get_mut(&id)
                    && slot.draining
                    && slot.episode == episode
                {
                    let open = slot.counters.active.load(Ordering::Relaxed);
                    if open > 0 {
                        tracing::info!(
                            backend = %id,
                            open,
                            "drain timeout ({}) reached: cutting open connections",
                            humantime::format_duration(timeout)
                        );
                    }
                    // Only connections to this backend hold the old token; a later return to
                    // rotation starts with a fresh one.
                    std::mem::replace(&mut slot.cut, CancellationToken::new()).cancel();
                }
            });
        }
    }

    pub(super) async fn reload(self: &Arc<Self>) {
        let path = self.routes_path.clone();
        let addrs = self.backend_addrs.clone();
        let listener = self.local_addr;
        let loaded = tokio::task::spawn_blocking(move || {
            RouteTable::load(&path, &addrs, Some(listener)).map_err(|e| reason(&e))
        })
        .await
        .unwrap_or_else(|e| Err(format!("route table reload task failed: {e}")));
        let mut routing = self.lock();
        routing.reloads += 1;
        match loaded {
            Ok(table) => {
                let generation = table.generation;
                let timeout = table.drain_timeout();
                let drains = routing.install(table);
                routing.last_reload_error = None;
                drop(routing);
                tracing::info!(generation, "route table applied");
                self.arm_drain_timers(drains, timeout);
            }
            Err(why) => {
                tracing::warn!(
                    generation = routing.table.generation,
                    "route table reload refused, keeping the current table: {why}"
                );
                routing.last_reload_error = Some(why);
            }
        }
    }
}

/// True at most once per [`WARN_EVERY`] for the cause `last` tracks.
pub(super) fn should_warn(last: &AtomicU64) -> bool {
    let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
    let prev = last.load(Ordering::Relaxed);
    let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
    now.saturating_sub(prev) >= every
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
