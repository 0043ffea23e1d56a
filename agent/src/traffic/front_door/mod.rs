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
//!
//! Files: this one starts the process and holds its public face (options, server, handle);
//! `shared` is the state the tasks share and the stats file, `table` the routing table, reloads
//! and drain timers, `conn` one client connection, `http` what HTTP mode reads of it.
//!
//! In HTTP mode (`--mode http`) the bytes are still copied as they are; the front door also
//! follows the HTTP/1.1 messages on each connection and counts requests, responses by status
//! class and latency per backend and per cohort (see [`crate::traffic::http_stats`]).

mod conn;
mod http;
mod shared;
mod table;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::shared::{Shared, should_warn};
use self::table::Routing;
use super::stats::{Counters, STATS_INTERVAL, Stats};
use super::{BackendAddrs, RouteTable, TrafficError};
use crate::config::FrontDoorMode;

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
    /// TCP (connections) or HTTP (requests, status classes, latency too).
    pub mode: FrontDoorMode,
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
            mode: FrontDoorMode::Tcp,
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
            mode: opts.mode,
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
            held: AtomicU64::new(0),
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
