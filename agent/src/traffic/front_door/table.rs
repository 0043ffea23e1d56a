//! The routing table in force: every backend's slot (weight, draining, counters, its cut
//! token), installing a new table (which says whose drain starts), and the pick for a new
//! connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::traffic::RouteTable;
use crate::traffic::balance::Balancer;
use crate::traffic::http_stats::HttpCounters;
use crate::traffic::stats::Counters;

/// The table in force and every backend's state; one lock, held only for short steps.
#[derive(Debug)]
pub(super) struct Routing {
    pub(super) table: Arc<RouteTable>,
    pub(super) balancer: Balancer,
    pub(super) backends: BTreeMap<Arc<str>, Slot>,
    pub(super) reloads: u64,
    pub(super) last_reload_error: Option<String>,
    /// HTTP counters per cohort; a cohort, once seen, stays for the front door's life.
    pub(super) cohorts: BTreeMap<Arc<str>, Arc<HttpCounters>>,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) addr: SocketAddr,
    pub(super) weight: u32,
    /// Draining in the table, or removed from it.
    pub(super) draining: bool,
    pub(super) in_table: bool,
    /// Bumped whenever draining starts, so a drain timer cuts only the drain it was set for.
    pub(super) episode: u64,
    pub(super) counters: Arc<Counters>,
    /// Cancelled when the drain timeout cuts this backend's connections (then replaced).
    pub(super) cut: CancellationToken,
    /// Its cohort in the table that last listed it.
    pub(super) cohort: Arc<str>,
    /// Its HTTP counters (HTTP mode).
    pub(super) http: Arc<HttpCounters>,
}

/// A backend chosen for one connection.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) id: Arc<str>,
    pub(super) addr: SocketAddr,
    pub(super) counters: Arc<Counters>,
    pub(super) cut: CancellationToken,
    /// The backend's and its cohort's HTTP counters.
    pub(super) http: (Arc<HttpCounters>, Arc<HttpCounters>),
}

impl Routing {
    pub(super) fn new(table: RouteTable) -> (Self, Vec<(Arc<str>, u64)>) {
        let mut routing = Self {
            table: Arc::new(RouteTable::new(table.generation, Vec::new())),
            balancer: Balancer::default(),
            backends: BTreeMap::new(),
            reloads: 0,
            last_reload_error: None,
            cohorts: BTreeMap::new(),
        };
        let drains = routing.install(table);
        (routing, drains)
    }

    /// Makes `table` the one in force. Returns the backends whose draining starts now, with
    /// their drain episode, for the caller to arm drain timers.
    pub(super) fn install(&mut self, table: RouteTable) -> Vec<(Arc<str>, u64)> {
        let mut drains = Vec::new();
        for slot in self.backends.values_mut() {
            slot.in_table = false;
        }
        let edges = table.latency_edges_ms.clone();
        let mut ids = Vec::with_capacity(table.backends.len());
        for b in &table.backends {
            let cohort: Arc<str> = match self.cohorts.get_key_value(b.cohort()) {
                Some((name, _)) => Arc::clone(name),
                None => {
                    let name: Arc<str> = Arc::from(b.cohort());
                    self.cohorts
                        .insert(Arc::clone(&name), Arc::new(HttpCounters::new(&edges)));
                    name
                }
            };
            let id: Arc<str> = match self.backends.get_key_value(b.id.as_str()) {
                Some((id, _)) => Arc::clone(id),
                None => Arc::from(b.id.as_str()),
            };
            let slot = self
                .backends
                .entry(Arc::clone(&id))
                .or_insert_with(|| Slot {
                    addr: b.addr,
                    weight: 0,
                    draining: false,
                    in_table: true,
                    episode: 0,
                    counters: Arc::default(),
                    cut: CancellationToken::new(),
                    cohort: Arc::clone(&cohort),
                    http: Arc::new(HttpCounters::new(&edges)),
                });
            slot.addr = b.addr;
            slot.cohort = cohort;
            slot.weight = b.weight;
            slot.in_table = true;
            if b.draining && !slot.draining {
                slot.episode += 1;
                drains.push((Arc::clone(&id), slot.episode));
            }
            slot.draining = b.draining;
            ids.push((id, if b.draining { 0 } else { b.weight }));
        }
        for (id, slot) in &mut self.backends {
            if !slot.in_table {
                slot.weight = 0;
                if !slot.draining {
                    slot.draining = true;
                    slot.episode += 1;
                    drains.push((Arc::clone(id), slot.episode));
                }
            }
        }
        if !edges.is_empty() {
            for counters in self
                .cohorts
                .values()
                .chain(self.backends.values().map(|s| &s.http))
            {
                counters.add_edges(&edges);
            }
        }
        self.prune();
        self.balancer = Balancer::new(ids.iter().map(|(id, w)| (id, *w)));
        self.table = Arc::new(table);
        drains
    }

    /// Forgets backends that left the table and have no connection left.
    pub(super) fn prune(&mut self) {
        self.backends
            .retain(|_, s| s.in_table || s.counters.active.load(Ordering::Relaxed) > 0);
    }

    pub(super) fn pick(&mut self, exclude: &[Arc<str>]) -> Option<Target> {
        let id = self.balancer.pick(exclude)?;
        let slot = self.backends.get(&id)?;
        let cohort = self.cohorts.get(&slot.cohort)?;
        Some(Target {
            addr: slot.addr,
            counters: Arc::clone(&slot.counters),
            cut: slot.cut.clone(),
            http: (Arc::clone(&slot.http), Arc::clone(cohort)),
            id,
        })
    }
}
