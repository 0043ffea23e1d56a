//! The front door in HTTP mode: requests, status classes and latency per backend and cohort,
//! over keep-alive, pipelined and chunked traffic, across a reload.

use super::*;
use crate::config::FrontDoorMode;

/// An HTTP/1.1 keep-alive backend: `/500` answers 500, `/slow` answers after 250 ms,
/// `/chunked` answers with a chunked body, anything else 200.
async fn status_backend() -> TestBackend {
    spawn_backend(|stream: TcpStream| async move {
        let mut stream = BufReader::new(stream);
        loop {
            let mut path = String::new();
            loop {
                let mut line = String::new();
                match stream.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) if path.is_empty() => {
                        path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    }
                    Ok(_) => {}
                }
            }
            let reply = match path.as_str() {
                "/500" => "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops".to_owned(),
                "/chunked" => {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                        .to_owned()
                }
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow".to_owned()
                }
                _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned(),
            };
            if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Sends `paths` pipelined on one connection and reads until `answers` status lines came.
async fn pipelined(addr: SocketAddr, paths: &[&str], answers: usize) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut requests = String::new();
    for p in paths {
        requests.push_str(&format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() < answers {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn requests_statuses_and_latency_are_counted_per_backend_and_cohort() {
    let (a, b) = (status_backend().await, status_backend().await);
    let door = Door::start_in(&table(1, &[("a", a.addr, 1, false)]), FrontDoorMode::Http).await;
    let answers = pipelined(door.addr(), &["/", "/500", "/chunked", "/slow", "/"], 5).await;
    assert!(
        answers.contains("oops") && answers.contains("slow"),
        "{answers}"
    );

    // Half the new connections to a canary, whose thresholds the table names.
    let mut t = table(2, &[("a", a.addr, 1, false), ("b", b.addr, 1, false)]);
    t.backends[1].cohort = Some("canary".to_owned());
    t.latency_edges_ms = vec![150];
    door.router().apply(t).await.unwrap();
    for _ in 0..4 {
        pipelined(door.addr(), &["/500", "/"], 2).await;
    }

    wait_until("the counters reach the stats file", || {
        let s = door.stats();
        s.cohorts
            .get("canary")
            .is_some_and(|c| c.responses.finals() == 4)
            && s.backends["a"]
                .http
                .as_ref()
                .is_some_and(|h| h.latency.count == 9)
    })
    .await;
    let stats = door.stats();
    assert_eq!(stats.mode, "http");
    let a_http = stats.backends["a"].http.clone().unwrap();
    assert_eq!(a_http.requests, 9);
    assert_eq!(a_http.responses.server_error, 3);
    assert_eq!(a_http.responses.success, 6);
    assert!(
        a_http.latency.at_most(200) < a_http.latency.count,
        "the slow one is over 200 ms"
    );
    assert_eq!(stats.backends["b"].cohort.as_deref(), Some("canary"));
    let canary = &stats.cohorts["canary"];
    assert_eq!((canary.requests, canary.responses.server_error), (4, 2));
    assert!(canary.latency.has_edge(150), "{:?}", canary.latency.le_ms);
    let stable = &stats.cohorts["stable"];
    assert_eq!((stable.requests, stable.responses.server_error), (9, 3));
    assert_eq!(stable.unanswered + stable.parse_errors, 0);
}

#[tokio::test]
async fn tcp_mode_counts_no_http() {
    let a = status_backend().await;
    let door = Door::start(&table(1, &[("a", a.addr, 1, false)])).await;
    pipelined(door.addr(), &["/500"], 1).await;
    let stats = door.stats();
    assert_eq!(stats.mode, "tcp");
    assert!(stats.cohorts.is_empty());
    assert!(stats.backends["a"].http.is_none());
}
