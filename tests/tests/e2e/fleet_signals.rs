//! `gantry rollout status` shows each host's golden signals, read live from its agent when
//! asked: two agents with front doors in HTTP mode take a release through the service; the
//! requests sent to each show in its host's signals (JSON and text), and a host whose agent is
//! gone says why it has none instead of failing the whole status.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use gantry_proto::v1::OnFailure;
use gantry_tests::service::Fleet;
use gantry_tests::{Options, wait_until};

use crate::fleet_service::{plan_file, ring, start_rollout, start_service, status, wait_final};

/// `GET /` on a new connection; the status code.
fn get(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split_whitespace().nth(1).unwrap_or("").to_owned()
}

/// The `stable` cohort of host `agent` in a `rollout status --json`.
fn stable_of(status: &serde_json::Value, agent: &str) -> Option<serde_json::Value> {
    status["rings"]
        .as_array()?
        .iter()
        .filter_map(|r| r["hosts"].as_array())
        .flatten()
        .find(|h| h["agent_id"] == agent)?["signals"]
        .as_array()?
        .iter()
        .find(|c| c["cohort"] == "stable")
        .cloned()
}

#[test]
fn rollout_status_shows_each_hosts_signals_from_its_agent() {
    let options = Options {
        http: true,
        ..Options::front_door(2)
    };
    let mut fleet = Fleet::start_dialling(
        &[("web-1", &[("ring", "0")]), ("web-2", &[("ring", "1")])],
        &[],
        &options,
    )
    .unwrap();
    let svc = start_service(&fleet, "ctl-1", None, "10s");
    let rings = vec![
        ring("canary", "0", 0, OnFailure::Halt, "1"),
        ring("everyone", "1", 0, OnFailure::Halt, "1"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-3.0.0", "3.0.0", rings);
    start_rollout(&svc, &plan, &artifact);
    let end = wait_final(&svc, "rel-3.0.0", Duration::from_secs(120));
    assert_eq!(end["state"], "succeeded", "{end:#}");

    let (one, two) = (
        fleet.member("web-1").env.listen.unwrap(),
        fleet.member("web-2").env.listen.unwrap(),
    );
    let mut last = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(30),
        "rollout status shows the requests each host's front door counted and its memory",
        || {
            // Traffic all along: the agent's signals cover its last minute of samples.
            for _ in 0..3 {
                assert_eq!(get(one), "200");
            }
            assert_eq!(get(two), "200");
            last = status(&svc, "rel-3.0.0");
            // Memory is 0 until the agent's first sample of its instances.
            let seen = |agent, n| {
                stable_of(&last, agent).is_some_and(|c| {
                    c["requests"].as_u64().unwrap_or(0) >= n
                        && c["memory_bytes"].as_u64().unwrap_or(0) > 0
                })
            };
            seen("web-1", 30) && seen("web-2", 10)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{last:#}"));
    for agent in ["web-1", "web-2"] {
        let c = stable_of(&last, agent).unwrap();
        assert_eq!(c["errors"], 0, "{c}");
        assert_eq!(c["error_rate"], 0.0, "{c}");
        assert_eq!(c["instances"], 1, "{c}");
        assert!(c["p95_latency_ms"].as_u64().is_some(), "{c}");
    }
    let text = svc.gantry(&["rollout", "status", "rel-3.0.0"]).unwrap();
    text.assert_code(0);
    assert!(
        text.stdout.contains("    web-1 ")
            && text.stdout.contains("      signals\n")
            && text.stdout.contains("ERROR RATE"),
        "{}",
        text.stdout
    );

    // web-2's agent is gone: its host says so, web-1's signals still show.
    fleet.members[1].agent.kill_9().unwrap();
    let mut after = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(30),
        "web-2's host says why it has no signals",
        || {
            after = status(&svc, "rel-3.0.0");
            after["rings"][1]["hosts"][0]["signals_error"].is_string()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{after:#}"));
    assert!(stable_of(&after, "web-1").is_some(), "{after:#}");
    assert_eq!(after["state"], "succeeded");
    let text = svc.gantry(&["rollout", "status", "rel-3.0.0"]).unwrap();
    text.assert_code(0);
    assert!(
        text.stdout.contains("      signals unavailable: "),
        "{}",
        text.stdout
    );
}
