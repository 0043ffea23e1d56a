//! The front door: a TCP proxy process per app (`gantry-agent front-door`).
//!
//! It listens on the app's address and sends each new connection to a backend chosen by
//! smooth weighted round-robin among the backends in rotation; a backend that refuses (or does
//! not answer within the connect timeout) is counted and the next one is tried, so one dead
//! instance costs no client connection. Bytes are then copied both ways until either side
//! closes.
//!
//! On SIGHUP it rereads the route table and swaps it in under a lock: open connections are not
//! touched, new ones follow the new table. A backend that turns draining (or is removed) gets
//! no new connections; its open ones finish, or are cut when the table's drain timeout runs
//! out. A route file that fails to load keeps the old table, and the stats file says why.
//!
//! SIGTERM (or SIGINT) stops accepting, lets open connections finish up to the drain timeout,
//! cuts the rest and exits 0; a second SIGTERM cuts at once.
//!
//! The process needs nothing from the agent: it reads its route file, writes its stats file,
//! and keeps serving when the agent is gone.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balance::Balancer;
use super::stats::{BackendStats, Counters, STATS_INTERVAL, Stats};
use super::{BackendAddrs, RouteTable, TrafficError};
use crate::error::reason;

/// At most one warning per this interval for each repeating cause (a dead backend, accept
/// errors, stats write errors): they are triggered by input and must not flood the log.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// What the front door needs to start.
#[derive(Debug, Clone)]
pub struct FrontDoorOptions {
    /// The route table file (read at start and on every reload).
    pub routes: PathBuf,
    /// Where to listen (the app's address).
    pub listen: SocketAddr,
    /// The stats file.
    pub stats: PathBuf,
    /// Which backend addresses the route table may name.
    pub backend_addrs: BackendAddrs,
    /// How often the stats file is rewritten.
    pub stats_interval: Duration,
}

impl FrontDoorOptions {
    /// Options with loopback-only backends and the default stats interval.
    pub fn new(routes: PathBuf, listen: SocketAddr, stats: PathBuf) -> Self {
        Self {
            routes,
            listen,
            stats,
            backend_addrs: BackendAddrs::LoopbackOnly,
            stats_interval: STATS_INTERVAL,
        }
    }
}

/// Runs the front door as a process: installs the signal handlers, binds, serves until
/// SIGTERM or SIGINT and the drain that follows.
///
/// # Errors
///
/// [`TrafficError`] when it cannot start: no runtime or signal handlers, the address cannot be
/// bound, the route table cannot be loaded.
pub fn run_process(opts: FrontDoorOptions) -> Result<(), TrafficError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| TrafficError::Setup {
            what: "start the async runtime",
            source,
        })?;
    runtime.block_on(async move {
        // Handlers first: until they exist a SIGHUP would kill the process (its default
        // action). The agent only signals once the stats file names this pid, which is later.
        let setup = |source| TrafficError::Setup {
            what: "install signal handlers",
            source,
        };
        let mut hup = signal(SignalKind::hangup()).map_err(setup)?;
        let mut term = signal(SignalKind::terminate()).map_err(setup)?;
        let mut int = signal(SignalKind::interrupt()).map_err(setup)?;
        let server = FrontDoorServer::bind(opts).await?;
        let handle = server.handle();
        tracing::info!(
            listen = %handle.local_addr(),
            generation = handle.generation(),
            "front door listening"
        );
        tokio::spawn(async move {
            let mut stopping = false;
            loop {
                let name = tokio::select! {
                    _ = hup.recv() => {
                        handle.reload();
                        continue;
                    }
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if stopping {
                    tracing::info!("{name} again: cutting open connections");
                    handle.cut_all();
                } else {
                    tracing::info!("{name}: no new connections; draining open ones");
                    handle.shutdown();
                    stopping = true;
                }
            }
        });
        server.run().await
    })
}

/// A bound front door, ready to [`run`](FrontDoorServer::run).
#[derive(Debug)]
pub struct FrontDoorServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Controls a running front door from the same process (the signal handlers use it; so do
/// tests and anything embedding the proxy).
#[derive(Debug, Clone)]
pub struct FrontDoorHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    routes_path: PathBuf,
    stats_path: PathBuf,
    backend_addrs: BackendAddrs,
    local_addr: SocketAddr,
    stats_interval: Duration,
    pid: u32,
    started_at_ms: u64,
    routing: Mutex<Routing>,
    /// Reload requests; a request while a reload runs is kept, so none is lost.
    reload: Notify,
    /// Asks the stats writer for an immediate write.
    write_stats: Notify,
    stop_accepting: CancellationToken,
    stop_stats: CancellationToken,
    cut_all: CancellationToken,
    accepting: AtomicBool,
    connections: AtomicU64,
    unrouted: AtomicU64,
    last_accept_warn: AtomicU64,
    last_stats_warn: AtomicU64,
    conns: TaskTracker,
}

/// The table in force and every backend's state; one lock, held only for short steps.
#[derive(Debug)]
struct Routing {
    table: Arc<RouteTable>,
    balancer: Balancer,
    backends: BTreeMap<Arc<str>, Slot>,
    reloads: u64,
    last_reload_error: Option<String>,
}

#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    weight: u32,
    /// Draining in the table, or removed from it.
    draining: bool,
    in_table: bool,
    /// Bumped whenever draining starts, so a drain timer cuts only the drain it was set for.
    episode: u64,
    counters: Arc<Counters>,
    /// Cancelled when the drain timeout cuts this backend's connections (then replaced).
    cut: CancellationToken,
}

/// A backend chosen for one connection.
#[derive(Debug)]
struct Target {
    id: Arc<str>,
    addr: SocketAddr,
    counters: Arc<Counters>,
    cut: CancellationToken,
}

impl Routing {
    fn new(table: RouteTable) -> (Self, Vec<(Arc<str>, u64)>) {
        let mut routing = Self {
            table: Arc::new(RouteTable::new(table.generation, Vec::new())),
            balancer: Balancer::default(),
            backends: BTreeMap::new(),
            reloads: 0,
            last_reload_error: None,
        };
        let drains = routing.install(table);
        (routing, drains)
    }

    /// Makes `table` the one in force. Returns the backends whose draining starts now, with
    /// their drain episode, for the caller to arm drain timers.
    fn install(&mut self, table: RouteTable) -> Vec<(Arc<str>, u64)> {
        let mut drains = Vec::new();
        for slot in self.backends.values_mut() {
            slot.in_table = false;
        }
        let mut ids = Vec::with_capacity(table.backends.len());
        for b in &table.backends {
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
                });
            slot.addr = b.addr;
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
        self.prune();
        self.balancer = Balancer::new(ids.iter().map(|(id, w)| (id, *w)));
        self.table = Arc::new(table);
        drains
    }

    /// Forgets backends that left the table and have no connection left.
    fn prune(&mut self) {
        self.backends
            .retain(|_, s| s.in_table || s.counters.active.load(Ordering::Relaxed) > 0);
    }

    fn pick(&mut self, exclude: &[Arc<str>]) -> Option<Target> {
        let id = self.balancer.pick(exclude)?;
        let slot = self.backends.get(&id)?;
        Some(Target {
            addr: slot.addr,
            counters: Arc::clone(&slot.counters),
            cut: slot.cut.clone(),
            id,
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Routing> {
        // Every critical section leaves Routing consistent, so a panic elsewhere cannot have
        // left it half-updated: keep serving.
        self.routing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> Stats {
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

    /// Arms one timer per backend whose draining just started.
    fn arm_drain_timers(self: &Arc<Self>, drains: Vec<(Arc<str>, u64)>, timeout: Duration) {
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

    async fn reload(self: &Arc<Self>) {
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

    async fn write_stats(&self) {
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

    async fn stats_loop(self: Arc<Self>) {
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

    async fn reload_loop(self: Arc<Self>) {
        loop {
            self.reload.notified().await;
            self.reload().await;
            self.write_stats.notify_one();
        }
    }

    async fn serve(self: Arc<Self>, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        let mut tried: Vec<Arc<str>> = Vec::new();
        let (upstream, target) = loop {
            let picked = {
                let mut routing = self.lock();
                let timeout = routing.table.connect_timeout();
                routing.pick(&tried).map(|t| (t, timeout))
            };
            let Some((target, timeout)) = picked else {
                Counters::bump(&self.unrouted);
                if !tried.is_empty() && should_warn(&self.last_accept_warn) {
                    tracing::warn!(
                        "no backend accepted a connection (tried {}); closing it",
                        tried.len()
                    );
                }
                return;
            };
            let failure = match tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await
            {
                Ok(Ok(stream)) => break (stream, target),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {}", humantime::format_duration(timeout)),
            };
            Counters::bump(&target.counters.connect_errors);
            if should_warn(&target.counters.last_warn_ms) {
                tracing::warn!(
                    backend = %target.id,
                    addr = %target.addr,
                    "cannot connect to backend, trying another: {failure}"
                );
            }
            tried.push(target.id);
        };
        let _ = upstream.set_nodelay(true);
        let counters = Arc::clone(&target.counters);
        Counters::bump(&counters.total);
        Counters::bump(&counters.active);
        let _active = Active(Arc::clone(&counters));
        let mut upstream = Counted {
            inner: upstream,
            counters: Arc::clone(&counters),
        };
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = result {
                    tracing::debug!(backend = %target.id, "connection ended: {e}");
                }
            }
            () = target.cut.cancelled() => Counters::bump(&counters.cut),
            () = self.cut_all.cancelled() => Counters::bump(&counters.cut),
        }
    }
}

impl FrontDoorServer {
    /// Binds the listening address and loads the route table.
    ///
    /// # Errors
    ///
    /// [`TrafficError::Bind`], or the route table's load error (a front door never starts
    /// without a valid table).
    pub async fn bind(opts: FrontDoorOptions) -> Result<Self, TrafficError> {
        let bind_err = |source| TrafficError::Bind {
            addr: opts.listen,
            source,
        };
        let listener = TcpListener::bind(opts.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let routes = opts.routes.clone();
        let addrs = opts.backend_addrs.clone();
        let table = tokio::task::spawn_blocking(move || {
            RouteTable::load(&routes, &addrs, Some(local_addr))
        })
        .await
        .map_err(|e| TrafficError::Setup {
            what: "load the route table",
            source: io::Error::other(e),
        })??;
        let timeout = table.drain_timeout();
        let (routing, drains) = Routing::new(table);
        let shared = Arc::new(Shared {
            routes_path: opts.routes,
            stats_path: opts.stats,
            backend_addrs: opts.backend_addrs,
            local_addr,
            stats_interval: opts.stats_interval,
            pid: std::process::id(),
            started_at_ms: u64::try_from(crate::clock::now_ms()).unwrap_or(0),
            routing: Mutex::new(routing),
            reload: Notify::new(),
            write_stats: Notify::new(),
            stop_accepting: CancellationToken::new(),
            stop_stats: CancellationToken::new(),
            cut_all: CancellationToken::new(),
            accepting: AtomicBool::new(true),
            connections: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            last_accept_warn: AtomicU64::new(0),
            last_stats_warn: AtomicU64::new(0),
            conns: TaskTracker::new(),
        });
        shared.arm_drain_timers(drains, timeout);
        Ok(Self { listener, shared })
    }

    /// A handle to reload or stop it.
    pub fn handle(&self) -> FrontDoorHandle {
        FrontDoorHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until [`FrontDoorHandle::shutdown`], then drains: waits for open connections up
    /// to the table's drain timeout, cuts the rest, writes the stats a last time.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for fatal listener errors.
    pub async fn run(self) -> Result<(), TrafficError> {
        let shared = self.shared;
        let stats = tokio::spawn(Arc::clone(&shared).stats_loop());
        let reloads = tokio::spawn(Arc::clone(&shared).reload_loop());
        loop {
            let accepted = tokio::select! {
                () = shared.stop_accepting.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    Counters::bump(&shared.connections);
                    shared.conns.spawn(Arc::clone(&shared).serve(stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    if should_warn(&shared.last_accept_warn) {
                        tracing::warn!("cannot accept a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        shared.accepting.store(false, Ordering::Relaxed);
        shared.write_stats.notify_one();
        let drain = shared.lock().table.drain_timeout();
        shared.conns.close();
        if tokio::time::timeout(drain, shared.conns.wait())
            .await
            .is_err()
        {
            tracing::info!(
                "drain timeout ({}) reached at shutdown: cutting open connections",
                humantime::format_duration(drain)
            );
            shared.cut_all.cancel();
            shared.conns.wait().await;
        }
        reloads.abort();
        shared.stop_stats.cancel();
        let _ = stats.await;
        shared.write_stats().await;
        tracing::info!("front door stopped");
        Ok(())
    }
}

impl FrontDoorHandle {
    /// Rereads the route table (what SIGHUP does). Returns at once; the stats file shows the
    /// outcome.
    pub fn reload(&self) {
        self.shared.reload.notify_one();
    }

    /// Stops accepting and starts the drain (what SIGTERM does).
    pub fn shutdown(&self) {
        self.shared.stop_accepting.cancel();
    }

    /// Cuts every open connection now (a second SIGTERM).
    pub fn cut_all(&self) {
        self.shared.stop_accepting.cancel();
        self.shared.cut_all.cancel();
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The generation of the table in force.
    pub fn generation(&self) -> u64 {
        self.shared.lock().table.generation
    }

    /// The counters as they would be written to the stats file now.
    pub fn stats(&self) -> Stats {
        self.shared.snapshot()
    }
}

/// Keeps a backend's `active` count while a connection is open, however it ends.
struct Active(Arc<Counters>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backend side of a connection, counting bytes as they pass so that long-lived
/// connections show up in the stats while they run.
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = (buf.filled().len() - before) as u64;
            this.counters.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.counters
                .bytes_in
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// True at most once per [`WARN_EVERY`] for the cause `last` tracks.
fn should_warn(last: &AtomicU64) -> bool {
    let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
    let prev = last.load(Ordering::Relaxed);
    let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
    now.saturating_sub(prev) >= every
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
