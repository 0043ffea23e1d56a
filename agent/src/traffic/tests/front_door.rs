//! The front door in front of real backends: weights, reloads, drains, stats, shutdown.

use super::*;

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
    let (dead, _held) = refusing_addr();
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
async fn a_refused_connection_is_held_until_a_backend_listens() {
    let (dead, socket) = refusing_addr();
    let mut first = table(1, &[("next", dead, 1, false)]);
    first.hold_timeout_ms = 5000;
    let door = Door::start(&first).await;
    let addr = door.addr();
    let client = tokio::spawn(async move { request(addr).await });
    wait_until("the refused connection is held", || door.stats().held == 1).await;
    // The backend starts listening on the same address: the held client reaches it.
    drop(socket);
    let live = backend_on(TcpListener::bind(dead).await.unwrap(), "next");
    assert_eq!(client.await.unwrap().unwrap(), "next");
    wait_until("the connection is counted", || {
        door.stats().backends["next"].total == 1
    })
    .await;
    assert_eq!(door.stats().unrouted, 0);
    drop(live);
}

#[tokio::test]
async fn a_holding_table_holds_new_connections_until_the_next_table_routes_them() {
    let (old, new) = (backend("old").await, backend("new").await);
    let door = Door::start(&table(1, &[("old", old.addr, 1, false)])).await;
    let mut holding = table(2, &[]);
    holding.hold_timeout_ms = 5000;
    holding.holding = true;
    door.router().apply(holding).await.unwrap();
    let accepted_by_old = old.accepted.load(Ordering::SeqCst);
    let addr = door.addr();
    let client = tokio::spawn(async move { request(addr).await });
    wait_until("the new connection is held", || door.stats().held == 1).await;
    let mut next = table(3, &[("new", new.addr, 1, false)]);
    next.hold_timeout_ms = 5000;
    door.router().apply(next).await.unwrap();
    assert_eq!(client.await.unwrap().unwrap(), "new");
    assert_eq!(old.accepted.load(Ordering::SeqCst), accepted_by_old);
    assert_eq!(door.stats().unrouted, 0);

    // Without holding, an empty table closes new connections at once, hold timeout or not.
    let mut empty = table(4, &[]);
    empty.hold_timeout_ms = 5000;
    door.router().apply(empty).await.unwrap();
    let started = Instant::now();
    assert!(request(door.addr()).await.is_err());
    wait_until("the unrouted connection is counted", || {
        door.stats().unrouted == 1
    })
    .await;
    assert_eq!(door.stats().held, 1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
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
