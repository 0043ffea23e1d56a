//! Tests of the traffic layer: route tables, the front door in front of real backends, the
//! agent's side of the protocol, and the nginx adapter.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::front_door::{FrontDoorHandle, FrontDoorOptions, FrontDoorServer};
use super::*;
use crate::state::write_atomic;

const DEADLINE: Duration = Duration::from_secs(10);

fn lo(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn table(generation: u64, backends: &[(&str, SocketAddr, u32, bool)]) -> RouteTable {
    RouteTable::new(
        generation,
        backends
            .iter()
            .map(|&(id, addr, weight, draining)| Backend {
                id: id.to_owned(),
                addr,
                weight,
                draining,
            })
            .collect(),
    )
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Backends: each connection gets the backend's name on a line, then an echo of what it sends.

struct TestBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(name: &'static str) -> TestBackend {
    let listener = TcpListener::bind(lo(0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if stream
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    TestBackend {
        addr,
        accepted,
        task,
    }
}

/// An address nothing listens on: connections are refused.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind(lo(0)).await.unwrap();
    listener.local_addr().unwrap()
}

/// A client connection through the front door, knowing which backend it reached.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    backend: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let (r, writer) = stream.into_split();
        let mut reader = BufReader::new(r);
        let mut backend = String::new();
        reader.read_line(&mut backend).await?;
        if backend.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        backend.pop();
        Ok(Conn {
            reader,
            writer,
            backend,
        })
    }

    async fn echo(&mut self, msg: &str) -> std::io::Result<()> {
        self.writer.write_all(format!("{msg}\n").as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        if line != format!("{msg}\n") {
            return Err(std::io::Error::other(format!("echo {line:?} for {msg:?}")));
        }
        Ok(())
    }

    /// Waits until the front door closes the connection (EOF or reset).
    async fn closed(mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(DEADLINE, self.reader.read_to_end(&mut rest)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// One request: connect, read the backend's name, one echo round trip, close.
async fn request(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = Conn::open(addr).await?;
    conn.echo("ping").await?;
    Ok(conn.backend)
}

// ---------------------------------------------------------------------------------------------
// A front door running in this process.

struct Door {
    _dir: tempfile::TempDir,
    routes: PathBuf,
    stats: PathBuf,
    handle: FrontDoorHandle,
    run: JoinHandle<Result<(), TrafficError>>,
}

impl Door {
    async fn start(initial: &RouteTable) -> Door {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.json");
        let stats = dir.path().join("stats.json");
        write_atomic(&routes, &initial.to_bytes()).unwrap();
        let mut opts = FrontDoorOptions::new(routes.clone(), lo(0), stats.clone());
        opts.stats_interval = Duration::from_millis(50);
        let server = FrontDoorServer::bind(opts).await.unwrap();
        let handle = server.handle();
        let run = tokio::spawn(server.run());
        let door = Door {
            _dir: dir,
            routes,
            stats,
            handle,
            run,
        };
        let stats = door.stats.clone();
        wait_until("the first stats file", || stats.exists()).await;
        door
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn router(&self) -> FrontDoor {
        FrontDoor::new(
            self.routes.clone(),
            self.stats.clone(),
            ReloadVia::InProcess(self.handle.clone()),
        )
    }

    fn stats(&self) -> Stats {
        Stats::load(&self.stats).unwrap().unwrap()
    }
}

async fn tally(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(request(addr).await.unwrap()).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// Route table rules.

#[test]
fn valid_tables_pass_and_round_trip() {
    let t = table(
        7,
        &[
            ("v1.2.0-0", lo(18000), 90, false),
            ("v1.3.0+build.1-0", lo(18001), 10, false),
            ("v1.1.0-0", lo(18002), 0, true),
        ],
    );
    t.validate(&BackendAddrs::LoopbackOnly, Some(lo(8080)))
        .unwrap();
    let back = RouteTable::from_bytes(
        &t.to_bytes(),
        Path::new("routes.json"),
        &BackendAddrs::default(),
        None,
    )
    .unwrap();
    assert_eq!(back, t);
    // An empty table routes nothing, on purpose.
    table(8, &[])
        .validate(&BackendAddrs::LoopbackOnly, None)
        .unwrap();
}

#[test]
fn each_broken_rule_is_named() {
    let ok = BackendAddrs::LoopbackOnly;
    let check = |t: RouteTable| t.validate(&ok, Some(lo(8080))).unwrap_err();

    assert_eq!(
        check(table(1, &[("a", lo(1), 1, false), ("a", lo(2), 1, false)])),
        RouteProblem::DuplicateId { id: "a".into() }
    );
    for bad in ["", "a b", "a\nserver evil", "ä", &"x".repeat(129)] {
        assert!(
            matches!(
                check(table(1, &[(bad, lo(1), 1, false)])),
                RouteProblem::BadId { .. }
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        check(table(1, &[("a", lo(1), 0, false), ("b", lo(2), 0, false)])),
        RouteProblem::NoWeight
    );
    // Every backend draining: new connections would have nowhere to go.
    assert_eq!(
        check(table(1, &[("a", lo(1), 100, true)])),
        RouteProblem::NoWeight
    );
    assert!(matches!(
        check(table(1, &[("a", lo(1), MAX_WEIGHT + 1, false)])),
        RouteProblem::WeightTooLarge { .. }
    ));
    let remote: SocketAddr = "10.1.2.3:80".parse().unwrap();
    assert!(matches!(
        check(table(1, &[("a", remote, 1, false)])),
        RouteProblem::AddrNotAllowed { .. }
    ));
    table(1, &[("a", remote, 1, false)])
        .validate(&BackendAddrs::with_extra([remote.ip()]), None)
        .unwrap();
    assert!(matches!(
        check(table(1, &[("a", lo(0), 1, false)])),
        RouteProblem::AddrUnusable { .. }
    ));
    assert!(matches!(
        check(table(1, &[("a", "0.0.0.0:80".parse().unwrap(), 1, false)])),
        RouteProblem::AddrUnusable { .. }
    ));
    assert!(matches!(
        check(table(1, &[("a", lo(8080), 1, false)])),
        RouteProblem::AddrIsListener { .. }
    ));
    // A wildcard listener is reached through loopback too.
    assert!(matches!(
        table(1, &[("a", lo(8080), 1, false)])
            .validate(&ok, Some("0.0.0.0:8080".parse().unwrap()))
            .unwrap_err(),
        RouteProblem::AddrIsListener { .. }
    ));
    let mut t = table(1, &[("a", lo(1), 1, false)]);
    t.drain_timeout_ms = 0;
    assert!(matches!(
        check(t.clone()),
        RouteProblem::BadTimeout {
            field: "drain_timeout_ms",
            ..
        }
    ));
    t.drain_timeout_ms = 1000;
    t.connect_timeout_ms = 3_600_000;
    assert!(matches!(
        check(t),
        RouteProblem::BadTimeout {
            field: "connect_timeout_ms",
            ..
        }
    ));
    let many: Vec<(String, SocketAddr)> = (0..=MAX_BACKENDS)
        .map(|i| (format!("b{i}"), lo(10_000 + i as u16)))
        .collect();
    let big = RouteTable::new(
        1,
        many.iter()
            .map(|(id, addr)| Backend::new(id.clone(), *addr, 1))
            .collect(),
    );
    assert!(matches!(check(big), RouteProblem::TooManyBackends { .. }));
}

#[test]
fn route_files_parse_leniently_but_report_errors_by_file() {
    let origin = Path::new("/run/gantry/web/routes.json");
    let addrs = BackendAddrs::LoopbackOnly;
    // Defaults for the optional fields; unknown fields (from a newer agent) are ignored.
    let t = RouteTable::from_bytes(
        br#"{"generation":3,"backends":[{"id":"a","addr":"127.0.0.1:9","weight":1,"future":1}],"later":true}"#,
        origin,
        &addrs,
        None,
    )
    .unwrap();
    assert_eq!(t.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
    assert_eq!(t.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    assert!(!t.backends[0].draining);

    let err = RouteTable::from_bytes(b"{\"generation\":", origin, &addrs, None).unwrap_err();
    assert!(matches!(err, TrafficError::ParseRoutes { .. }));
    assert!(err.to_string().contains("/run/gantry/web/routes.json"));
    let err = RouteTable::from_bytes(
        br#"{"generation":3,"backends":[{"id":"a","addr":"127.0.0.1:9","weight":0}]}"#,
        origin,
        &addrs,
        None,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::InvalidRoutes {
            problem: RouteProblem::NoWeight,
            ..
        }
    ));
    let err = RouteTable::load(Path::new("/nonexistent/routes.json"), &addrs, None).unwrap_err();
    assert!(matches!(err, TrafficError::ReadRoutes { .. }));
}

// ---------------------------------------------------------------------------------------------
// The front door in front of real backends.

#[tokio::test]
async fn new_connections_follow_the_weights() {
    let (a, b) = (backend("a").await, backend("b").await);
    let door = Door::start(&table(
        1,
        &[("a", a.addr, 3, false), ("b", b.addr, 1, false)],
    ))
    .await;
    let counts = tally(door.addr(), 40).await;
    assert_eq!(counts["a"], 30);
    assert_eq!(counts["b"], 10);

    // A canary at 1 in 10.
    let applied = door
        .router()
        .apply(table(
            2,
            &[("a", a.addr, 90, false), ("b", b.addr, 10, false)],
        ))
        .await
        .unwrap();
    assert_eq!(applied.generation, 2);
    let counts = tally(door.addr(), 100).await;
    assert_eq!(counts["a"], 90);
    assert_eq!(counts["b"], 10);
}

#[tokio::test]
async fn a_reload_switches_new_connections_and_keeps_open_ones() {
    let (a, b) = (backend("a").await, backend("b").await);
    let door = Door::start(&table(1, &[("a", a.addr, 1, false)])).await;
    let mut open = Conn::open(door.addr()).await.unwrap();
    assert_eq!(open.backend, "a");
    open.echo("before").await.unwrap();

    door.router()
        .apply(table(2, &[("b", b.addr, 1, false)]))
        .await
        .unwrap();
    assert_eq!(tally(door.addr(), 5).await["b"], 5);
    // The connection opened before the switch still works, mid-stream.
    open.echo("after the switch").await.unwrap();
    let stats = door.stats();
    assert_eq!(stats.generation, 2);
    let old = &stats.backends["a"];
    assert!(!old.in_table && old.draining);
    assert_eq!(old.active, 1);
    drop(open);
    wait_until(
        "the old backend's connection is gone from the stats",
        || !door.stats().backends.contains_key("a"),
    )
    .await;
}

#[tokio::test]
async fn a_draining_backend_gets_no_new_connections_and_its_open_one_completes() {
    let (a, b) = (backend("a").await, backend("b").await);
    let door = Door::start(&table(
        1,
        &[("a", a.addr, 1, false), ("b", b.addr, 1, false)],
    ))
    .await;
    let mut to_a = loop {
        let conn = Conn::open(door.addr()).await.unwrap();
        if conn.backend == "a" {
            break conn;
        }
    };
    let accepted_by_a = a.accepted.load(Ordering::SeqCst);
    door.router()
        .apply(table(2, &[("a", a.addr, 1, true), ("b", b.addr, 1, false)]))
        .await
        .unwrap();
    assert_eq!(tally(door.addr(), 10).await["b"], 10);
    assert_eq!(a.accepted.load(Ordering::SeqCst), accepted_by_a);
    to_a.echo("still here").await.unwrap();
    let stats = door.stats();
    assert!(stats.backends["a"].draining && stats.backends["a"].in_table);
    assert_eq!(stats.backends["a"].active, 1);
    assert_eq!(stats.backends["a"].cut, 0);
}

#[tokio::test]
async fn the_drain_timeout_cuts_what_is_still_open() {
    let (a, b) = (backend("a").await, backend("b").await);
    let door = Door::start(&table(1, &[("a", a.addr, 1, false)])).await;
    let mut open = Conn::open(door.addr()).await.unwrap();
    open.echo("hello").await.unwrap();
    let mut next = table(2, &[("a", a.addr, 1, true), ("b", b.addr, 1, false)]);
    next.drain_timeout_ms = 200;
    door.router().apply(next).await.unwrap();
    assert!(open.closed().await, "the drained connection was not cut");
    wait_until("the cut is counted", || door.stats().backends["a"].cut == 1).await;
    assert_eq!(door.stats().backends["a"].active, 0);
}

#[tokio::test]
async fn a_refusing_backend_is_counted_and_the_request_lands_elsewhere() {
    let live = backend("live").await;
    let dead = dead_addr().await;
    let door = Door::start(&table(
        1,
        &[("dead", dead, 1, false), ("live", live.addr, 1, false)],
    ))
    .await;
    assert_eq!(tally(door.addr(), 10).await["live"], 10);
    wait_until("stats show the refusals", || {
        door.stats().backends["dead"].connect_errors > 0
    })
    .await;
    let stats = door.stats();
    assert_eq!(stats.backends["dead"].total, 0);
    assert_eq!(stats.backends["live"].total, 10);
    assert_eq!(stats.unrouted, 0);

    // With nothing alive, the client's connection is closed and counted as unrouted.
    door.router()
        .apply(table(2, &[("dead", dead, 1, false)]))
        .await
        .unwrap();
    assert!(request(door.addr()).await.is_err());
    wait_until("the unrouted connection is counted", || {
        door.stats().unrouted == 1
    })
    .await;
}

#[tokio::test]
async fn the_stats_file_shows_generation_and_counters() {
    let a = backend("a").await;
    let door = Door::start(&table(5, &[("a", a.addr, 100, false)])).await;
    let initial = door.stats();
    assert_eq!(initial.generation, 5);
    assert_eq!(initial.pid, std::process::id());
    assert_eq!(initial.listen, Some(door.addr()));
    assert!(initial.accepting);
    for _ in 0..3 {
        request(door.addr()).await.unwrap();
    }
    wait_until("the counters reach the stats file", || {
        let s = door.stats();
        s.backends["a"].total == 3
            && s.backends["a"].active == 0
            && s.backends["a"].bytes_out == 3 * 7
    })
    .await;
    let s = door.stats();
    let a_stats = &s.backends["a"];
    assert_eq!(s.connections, 3);
    // "ping\n" each way; the backend also sent "a\n" first.
    assert_eq!(a_stats.bytes_in, 3 * 5);
    assert_eq!(a_stats.bytes_out, 3 * (2 + 5));
    assert_eq!((a_stats.weight, a_stats.addr), (100, Some(a.addr)));
    assert_eq!(door.router().stats().unwrap().generation, 5);
}

#[tokio::test]
async fn a_bad_route_file_keeps_the_old_table_and_says_why() {
    let a = backend("a").await;
    let door = Door::start(&table(1, &[("a", a.addr, 1, false)])).await;
    std::fs::write(&door.routes, b"{ not json").unwrap();
    door.handle.reload();
    wait_until("the refused reload is reported", || {
        door.stats().reloads == 1
    })
    .await;
    let stats = door.stats();
    assert_eq!(stats.generation, 1);
    let why = stats.last_reload_error.unwrap();
    assert!(
        why.contains("routes.json") && why.contains("not valid JSON"),
        "{why}"
    );
    assert_eq!(request(door.addr()).await.unwrap(), "a");

    // The front door refuses what it may not route to even if the agent's side allowed it:
    // the agent learns the reason at once instead of waiting for its deadline.
    let remote: SocketAddr = "10.9.9.9:80".parse().unwrap();
    let lenient = door
        .router()
        .with_backend_addrs(BackendAddrs::with_extra([remote.ip()]));
    let err = lenient
        .apply(table(2, &[("remote", remote, 1, false)]))
        .await
        .unwrap_err();
    match err {
        TrafficError::ReloadRejected { generation, reason } => {
            assert_eq!(generation, 2);
            assert!(reason.contains("not loopback"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // A later good table is taken, and clears the error.
    door.router()
        .apply(table(3, &[("a", a.addr, 1, false)]))
        .await
        .unwrap();
    assert_eq!(door.stats().last_reload_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_during_twenty_reloads() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let door = Door::start(&table(1, &[("a", a.addr, 1, false)])).await;
    let addr = door.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            // Bounded, in case the reloads never finish.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match request(addr).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    // Like a deploy: add the new set, shift weight, drain and drop the old one, and back.
    let sets: [&[(&str, SocketAddr, u32, bool)]; 5] = [
        &[("a", a.addr, 90, false), ("b", b.addr, 10, false)],
        &[("a", a.addr, 50, false), ("b", b.addr, 50, false)],
        &[("a", a.addr, 50, true), ("b", b.addr, 100, false)],
        &[("b", b.addr, 100, false), ("c", c.addr, 1, false)],
        &[("c", c.addr, 100, false), ("a", a.addr, 100, false)],
    ];
    let router = door.router();
    for generation in 2..22u64 {
        let set = sets[(generation as usize) % sets.len()];
        router.apply(table(generation, set)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "only {total} requests ran");
    let stats = door.stats();
    assert_eq!(stats.generation, 21);
    assert_eq!(stats.unrouted, 0);
    for (id, backend) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(
            backend.accepted.load(Ordering::SeqCst) > 0,
            "{id} got no connection"
        );
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_open_connections_finish() {
    let a = backend("a").await;
    let door = Door::start(&table(1, &[("a", a.addr, 1, false)])).await;
    let addr = door.addr();
    let mut open = Conn::open(addr).await.unwrap();
    door.handle.shutdown();
    wait_until("the listener is closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    open.echo("finishing").await.unwrap();
    assert!(!door.run.is_finished());
    drop(open);
    let result = tokio::time::timeout(DEADLINE, door.run).await.unwrap();
    result.unwrap().unwrap();
    let last = Stats::load(&door.stats).unwrap().unwrap();
    assert!(!last.accepting);
    assert_eq!(last.backends["a"].active, 0);
    assert_eq!(last.backends["a"].cut, 0);
}

#[tokio::test]
async fn shutdown_cuts_what_outlives_the_drain_timeout() {
    let a = backend("a").await;
    let mut t = table(1, &[("a", a.addr, 1, false)]);
    t.drain_timeout_ms = 100;
    let door = Door::start(&t).await;
    let open = Conn::open(door.addr()).await.unwrap();
    door.handle.shutdown();
    assert!(open.closed().await);
    tokio::time::timeout(DEADLINE, door.run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        Stats::load(&door.stats).unwrap().unwrap().backends["a"].cut,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// The agent's side.

#[tokio::test]
async fn the_router_refuses_stale_and_invalid_tables_and_reports_its_state() {
    let a = backend("a").await;
    let door = Door::start(&table(4, &[("a", a.addr, 1, false)])).await;
    let router = door.router();
    assert_eq!(router.name(), "front-door");
    assert_eq!(router.current().unwrap().unwrap().generation, 4);
    let err = router
        .apply(table(3, &[("a", a.addr, 1, false)]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::StaleGeneration {
            requested: 3,
            current: 4,
            ..
        }
    ));
    let err = router
        .apply(table(5, &[("a", a.addr, 0, false)]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::InvalidRoutes {
            problem: RouteProblem::NoWeight,
            ..
        }
    ));
    // Reapplying the table in force is idempotent.
    router
        .apply(table(4, &[("a", a.addr, 1, false)]))
        .await
        .unwrap();
    assert_eq!(door.stats().generation, 4);
}

#[tokio::test]
async fn without_a_running_front_door_apply_times_out_with_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let router = FrontDoor::new(
        dir.path().join("routes.json"),
        dir.path().join("stats.json"),
        ReloadVia::signal(|| None),
    )
    .with_ack_timeout(Duration::from_millis(100));
    assert!(router.current().unwrap().is_none());
    assert!(matches!(
        router.stats().unwrap_err(),
        TrafficError::NoStats { .. }
    ));
    let err = router
        .apply(table(1, &[("a", lo(18000), 1, false)]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::NotAcknowledged { generation: 1, .. }
    ));
    assert!(err.to_string().contains("not running"), "{err}");
    // The table was written all the same: a front door started now picks it up.
    assert_eq!(router.current().unwrap().unwrap().generation, 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(router.routes_path())
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
}

#[tokio::test]
async fn sighup_goes_only_to_the_process_that_was_started() {
    // Started the way instances are, so SIGHUP has its default action even when this test
    // runs under `nohup`.
    let cwd = std::env::current_dir().unwrap();
    let run_as = crate::config::RunAs::CurrentUser {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    let sleep = ["sleep".to_owned(), "30".to_owned()];
    let mut child = tokio::process::Command::from(
        crate::supervisor::command(&cwd, &sleep, &Default::default(), &run_as).unwrap(),
    )
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let pid = child.id().unwrap();
    let start_time = super::router::start_time_of(pid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let make = |start_time| {
        FrontDoor::new(
            dir.path().join("routes.json"),
            dir.path().join("stats.json"),
            ReloadVia::signal(move || Some(ProcessId { pid, start_time })),
        )
        .with_ack_timeout(Duration::from_millis(200))
    };
    // A recorded start time that does not match: the pid was reused, never signal it.
    // (Waiting for the stats file comes first, so fake one naming the pid.)
    let stats = Stats {
        pid,
        generation: 0,
        ..Stats::default()
    };
    stats.store(&dir.path().join("stats.json")).unwrap();
    let err = make(start_time + 1)
        .apply(table(1, &[("a", lo(18000), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::NotAcknowledged { .. }),
        "{err:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "a stranger was signalled"
    );
    // The right start time: SIGHUP is delivered (and kills `sleep`, which has no handler).
    let err = make(start_time)
        .apply(table(2, &[("a", lo(18000), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::NotAcknowledged { .. }),
        "{err:?}"
    );
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(1)
    );
}

// ---------------------------------------------------------------------------------------------
// nginx.

fn nginx(dir: &Path, reload: &[&str]) -> Nginx {
    Nginx::new(
        "web",
        dir.join("web.upstream.conf"),
        reload.iter().map(|s| (*s).to_owned()).collect(),
    )
}

#[test]
fn the_nginx_upstream_lists_out_of_rotation_backends_as_down() {
    let n = nginx(Path::new("/tmp"), &["true"]);
    let text = n
        .render(&table(
            9,
            &[
                ("v2-0", lo(18000), 90, false),
                ("v2-1", "[::1]:18001".parse().unwrap(), 10, false),
                ("v1-0", lo(18002), 100, true),
                ("v1-1", lo(18003), 0, false),
            ],
        ))
        .unwrap();
    let body: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(
        body,
        [
            "upstream web {",
            "    server 127.0.0.1:18000 weight=90;  # v2-0",
            "    server [::1]:18001 weight=10;  # v2-1",
            "    server 127.0.0.1:18002 down;  # v1-0 (draining)",
            "    server 127.0.0.1:18003 down;  # v1-1 (weight 0)",
            "}",
        ]
    );
    assert!(matches!(
        n.render(&table(1, &[])).unwrap_err(),
        TrafficError::Unsupported {
            router: "nginx",
            ..
        }
    ));
    let bad = Nginx::new("web; evil", PathBuf::from("/tmp/x"), vec!["true".into()]);
    assert!(matches!(
        bad.render(&table(1, &[("a", lo(1), 1, false)]))
            .unwrap_err(),
        TrafficError::Unsupported { .. }
    ));
}

#[tokio::test]
async fn the_nginx_adapter_writes_reloads_and_restores_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ok = nginx(dir.path(), &["true"]);
    assert_eq!(ok.name(), "nginx");
    assert!(matches!(
        ok.stats().unwrap_err(),
        TrafficError::StatsUnsupported { router: "nginx" }
    ));
    let first = table(1, &[("a", lo(18000), 1, false)]);
    assert_eq!(ok.apply(first.clone()).await.unwrap().generation, 1);
    assert_eq!(ok.current().unwrap(), Some(first));
    let before = std::fs::read(&ok.upstream_file).unwrap();

    let failing = nginx(
        dir.path(),
        &["sh", "-c", "echo 'emerg: bad upstream' >&2; exit 1"],
    );
    let err = failing
        .apply(table(2, &[("b", lo(18001), 1, false)]))
        .await
        .unwrap_err();
    assert!(matches!(err, TrafficError::CommandFailed { .. }));
    assert!(
        err.to_string()
            .contains("exited with code 1: emerg: bad upstream"),
        "{err}"
    );
    assert_eq!(std::fs::read(&ok.upstream_file).unwrap(), before);

    let mut checked = nginx(dir.path(), &["true"]);
    checked.check_command = Some(vec!["false".into()]);
    assert!(
        checked
            .apply(table(2, &[("b", lo(18001), 1, false)]))
            .await
            .is_err()
    );
    assert_eq!(std::fs::read(&ok.upstream_file).unwrap(), before);

    let mut slow = nginx(dir.path(), &["sleep", "5"]);
    slow.command_timeout = Duration::from_millis(100);
    assert!(matches!(
        slow.apply(table(2, &[("b", lo(18001), 1, false)]))
            .await
            .unwrap_err(),
        TrafficError::CommandTimeout { .. }
    ));
    assert!(matches!(
        ok.apply(table(0, &[("b", lo(18001), 1, false)]))
            .await
            .unwrap_err(),
        TrafficError::StaleGeneration { .. }
    ));
}

#[tokio::test]
async fn an_nginx_reload_that_starts_no_worker_is_not_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    // A "master" that starts no worker when told to reload.
    let mut master = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = master.id().unwrap();
    let pid_file = dir.path().join("nginx.pid");
    fs::write(&pid_file, format!("{pid}\n")).unwrap();
    let mut router = nginx(dir.path(), &["true"]);
    let first = table(1, &[("a", lo(18000), 1, false)]);
    router.apply(first).await.unwrap();
    let applied = fs::read_to_string(&router.upstream_file).unwrap();

    router.pid_file = Some(pid_file.clone());
    router.command_timeout = Duration::from_millis(200);
    let err = router
        .apply(table(2, &[("b", lo(18001), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::NginxNotReloaded { pid: p, .. } if p == i32::try_from(pid).unwrap()),
        "{err:?}"
    );
    assert!(err.to_string().contains("not in effect"), "{err}");
    assert_eq!(
        fs::read_to_string(&router.upstream_file).unwrap(),
        applied,
        "the upstream file nginx runs is put back"
    );

    router.pid_file = Some(dir.path().join("missing.pid"));
    let err = router
        .apply(table(3, &[("b", lo(18001), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing.pid"),
        "the error names the pid file: {err}"
    );
    master.kill().await.unwrap();
}

fn nginx_binary() -> Option<PathBuf> {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v nginx"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = path.trim();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// A minimal nginx config in `dir` that includes the upstream file and proxies HTTP to it
/// (the `http` context: the `stream` module is optional in Debian's packages).
fn nginx_conf(dir: &Path, upstream_file: &Path, listen: u16) -> PathBuf {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    let text = format!(
        "daemon on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {upstream};\n\
         server {{ listen 127.0.0.1:{listen}; location / {{ proxy_pass http://web; }} }}\n}}\n",
        upstream = upstream_file.display(),
    );
    std::fs::write(&conf, text).unwrap();
    conf
}

/// An HTTP backend that answers every request with its name.
async fn http_backend(name: &'static str) -> TestBackend {
    let listener = TcpListener::bind(lo(0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    match stream.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = stream.get_mut().write_all(reply.as_bytes()).await;
            });
        }
    });
    TestBackend {
        addr,
        accepted,
        task,
    }
}

/// GET / through `addr`; the body (the backend's name) when the status is 200.
async fn http_get(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    if !reply.starts_with("HTTP/1.1 200") {
        return None;
    }
    reply.split("\r\n\r\n").nth(1).map(str::to_owned)
}

#[tokio::test]
async fn nginx_accepts_the_upstream_file_and_follows_reloads() {
    let Some(bin) = nginx_binary() else {
        eprintln!("SKIPPED: nginx is not installed (the CI installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let listen = dead_addr().await.port();
    let upstream_file = dir.path().join("web.upstream.conf");
    let conf = nginx_conf(dir.path(), &upstream_file, listen);
    let bin_s = bin.display().to_string();
    let conf_s = conf.display().to_string();
    let prefix = dir.path().display().to_string();
    let mut router = Nginx::new(
        "web",
        upstream_file.clone(),
        vec![
            bin_s.clone(),
            "-p".into(),
            prefix.clone(),
            "-c".into(),
            conf_s.clone(),
            "-s".into(),
            "reload".into(),
        ],
    );
    router.check_command = Some(vec![
        bin_s.clone(),
        "-q".into(),
        "-t".into(),
        "-p".into(),
        prefix.clone(),
        "-c".into(),
        conf_s.clone(),
    ]);
    // Before nginx runs, only the check matters: write and check without reloading.
    let mut check_only = router.clone();
    check_only.reload_command = vec!["true".into()];
    check_only
        .apply(table(1, &[("a", a.addr, 1, false), ("b", b.addr, 1, true)]))
        .await
        .unwrap();
    let started = std::process::Command::new(&bin)
        .args(["-p", &prefix, "-c", &conf_s])
        .status()
        .unwrap();
    if !started.success() {
        // e.g. a non-root run where nginx cannot open its default paths.
        eprintln!("SKIPPED the live part: nginx did not start ({started}); the -t check passed");
        return;
    }
    let front = lo(listen);
    let stop = scopeguard(bin_s.clone(), prefix.clone(), conf_s.clone());
    wait_until_async(|| async { http_get(front).await.is_some() }).await;
    for _ in 0..4 {
        assert_eq!(http_get(front).await.as_deref(), Some("a"));
    }
    // With the pid file, the apply returns only once nginx runs new workers.
    router.pid_file = Some(dir.path().join("nginx.pid"));
    let master = super::nginx::master_pid(&dir.path().join("nginx.pid")).unwrap();
    let before = super::nginx::children_of(master);
    assert!(!before.is_empty(), "nginx runs workers");
    router
        .apply(table(2, &[("a", a.addr, 1, true), ("b", b.addr, 1, false)]))
        .await
        .unwrap();
    assert!(
        super::nginx::children_of(master)
            .difference(&before)
            .next()
            .is_some(),
        "the apply returned before nginx started new workers"
    );
    // Old workers finish gracefully; new connections reach the new workers soon after.
    // nginx's switch is not instant: the old worker accepts until it has processed its QUIT.
    wait_until_async(|| async {
        for _ in 0..10 {
            if http_get(front).await.as_deref() != Some("b") {
                return false;
            }
        }
        true
    })
    .await;
    drop(stop);
}

async fn wait_until_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the test's nginx when dropped.
struct NginxGuard(String, String, String);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.0)
            .args(["-p", &self.1, "-c", &self.2, "-s", "stop"])
            .status();
    }
}

fn scopeguard(bin: String, prefix: String, conf: String) -> NginxGuard {
    NginxGuard(bin, prefix, conf)
}
