//! Dial-out mode end to end (issue 12): an agent with `[controller] dial` and no `listen`
//! binds no socket (checked from /proc), keeps one outbound mutual-TLS connection to
//! `gantry server`, and takes part in a ring rollout next to a listening agent through it. The
//! link survives the service's SIGKILL and the agent's, a stopped service is noticed within
//! 15 s, and `--exit-on-disconnect-after` stops the agent while its app keeps serving.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gantry_proto::v1::OnFailure;
use gantry_tests::agent::Agent;
use gantry_tests::service::{Fleet, Service};
use gantry_tests::{Options, audit_events, banner, make_artifact, wait_until};
use nix::sys::signal::Signal;

use super::fleet_service::{plan_entries, plan_file, ring, start_service, wait_final};

/// The inodes of the sockets `pid` holds open (from `/proc/PID/fd`).
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = std::fs::read_link(fd.unwrap().path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    inodes
}

/// The `local address` of every TCP socket in LISTEN state (`0A`) that `pid` owns, from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_sockets(pid: u32) -> Vec<String> {
    let owned = socket_inodes(pid);
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && owned.contains(cols[9]) {
                listening.push(format!("{table}: {}", cols[1]));
            }
        }
    }
    listening
}

/// The agent's entry in `fleet ls --json` (or what the command said).
fn ls_entry(svc: &Service, id: &str) -> Result<serde_json::Value, String> {
    let out = svc
        .gantry(&["fleet", "ls", "--json"])
        .map_err(|e| e.to_string())?;
    out.json_lines()
        .into_iter()
        .find(|a| a["agent_id"] == id)
        .ok_or_else(|| out.all())
}

/// Waits until `fleet ls` shows `id` connected, with the labels its `Info` reports; returns
/// its entry.
pub(crate) fn wait_connected(
    svc: &Service,
    agent: &Agent,
    id: &str,
    within: Duration,
) -> serde_json::Value {
    let mut last = Err(String::new());
    wait_until(within, &format!("{id} to be shown connected"), || {
        last = ls_entry(svc, id);
        last.as_ref().is_ok_and(|a| {
            a["connected"] == true && a["labels"].as_object().is_some_and(|l| !l.is_empty())
        })
    })
    .unwrap_or_else(|e| panic!("{e}: {last:#?}\n{}\n{}", svc.log_tail(), agent.log_tail()));
    last.unwrap()
}

fn count(fleet: &Fleet, id: &str, event: &str) -> usize {
    audit_events(&fleet.member(id).env, event).unwrap().len()
}

#[test]
fn a_dial_out_agent_listens_on_nothing_rolls_out_next_to_a_listening_one_and_exits_on_a_lost_link()
{
    let mut fleet = Fleet::start_dialling(
        &[("web-1", &[("ring", "0")]), ("web-2", &[("ring", "1")])],
        &["web-2"],
        &Options::front_door(1),
    )
    .unwrap();
    let dialler = &fleet.member("web-2").agent;
    assert!(dialler.dials_out, "web-2 wrote run/dial.state");
    let pid = dialler.pid().unwrap();
    assert!(
        !socket_inodes(pid).is_empty() || cfg!(not(target_os = "linux")),
        "the agent holds no socket at all? (checking /proc works)"
    );
    assert_eq!(
        listening_sockets(pid),
        Vec::<String>::new(),
        "the dial-out agent listens on nothing"
    );
    assert!(
        !fleet
            .member("web-2")
            .env
            .data_dir
            .join("run/listen.addr")
            .exists()
    );

    let svc = start_service(&fleet, "ctl-1", None, "10s");
    let entry = wait_connected(&svc, dialler, "web-2", Duration::from_secs(45));
    assert_eq!(entry["mode"], "dial", "{entry:#}");
    let listener = ls_entry(&svc, "web-1").unwrap();
    assert_eq!(listener["mode"], "listen", "{listener:#}");
    let connected = audit_events(&fleet.member("web-2").env, "controller.connected").unwrap();
    assert!(
        connected
            .iter()
            .any(|e| e["server_name"] == "gantry-server" && e["peer_fingerprint"] != ""),
        "{connected:#?}"
    );
    // Listening on nothing still, with the link up.
    assert_eq!(listening_sockets(pid), Vec::<String>::new());

    // A ring rollout: ring 0 the listening agent, ring 1 the dial-out one.
    let rings = vec![
        ring("canary", "0", 0, OnFailure::Halt, "1"),
        ring("rest", "1", 0, OnFailure::Halt, "1"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-2.0.0", "2.0.0", rings);
    crate::fleet_service::start_rollout(&svc, &plan, &artifact);
    let end = wait_final(&svc, "rel-2.0.0", Duration::from_secs(120));
    assert_eq!(end["state"], "succeeded", "{end:#}\n{}", svc.log_tail());
    for id in ["web-1", "web-2"] {
        let accepted = plan_entries(&fleet, id, "job.accepted", "rel-2.0.0");
        assert_eq!(accepted.len(), 1, "{id}: {accepted:#?}");
        let port = fleet.member(id).env.port(0);
        let body = banner(port).unwrap_or_default();
        assert!(body.contains("2.0.0"), "{id} answers {body:?}");
    }
    // The artifact went over the dialled link: the agent recorded it from the service's cert.
    let stored = audit_events(&fleet.member("web-2").env, "artifact.stored").unwrap();
    assert_eq!(stored.len(), 1, "{stored:#?}");
    // The service measured the link's round-trip time by now (an Info every 5 s).
    let mut last = Err(String::new());
    wait_until(Duration::from_secs(15), "an RTT in fleet ls", || {
        last = ls_entry(&svc, "web-2");
        last.as_ref().is_ok_and(|a| a["rtt_us"].as_u64() > Some(0))
    })
    .unwrap_or_else(|e| panic!("{e}: {last:#?}"));
    let text = svc.gantry(&["fleet", "ls"]).unwrap();
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("web-2"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("mode dial connected seen"), "{}", text.all());
    assert!(line.contains("(dialled in)"), "{}", text.all());

    proxied_operations(&fleet, &svc);

    // --exit-on-disconnect-after: the agent stops once the link is down that long; the app
    // it runs keeps answering.
    let m = fleet
        .members
        .iter_mut()
        .find(|m| m.env.agent_id == "web-2")
        .unwrap();
    m.agent.terminate().unwrap();
    m.agent
        .restart(&m.env, &["--exit-on-disconnect-after", "3s"])
        .unwrap();
    wait_connected(&svc, &m.agent, "web-2", Duration::from_secs(30));
    let mut svc = svc;
    // Taken before the kill: the agent's down time starts when it sees the link go, not earlier.
    let cut = Instant::now();
    svc.kill_9().unwrap();
    let status = m.agent.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        cut.elapsed() >= Duration::from_secs(3),
        "exited {:?} after the cut",
        cut.elapsed()
    );
    let log = m.agent.log_text();
    assert!(
        log.contains("was down for 3s (exit_on_disconnect_after); app instances keep running"),
        "{}",
        m.agent.log_tail()
    );
    // The last release (the blue-green deploy through the proxy) answers at the front door.
    let body = banner(m.env.listen.unwrap().port()).unwrap_or_default();
    assert!(body.contains("3.0.2"), "the app still answers: {body:?}");
}

#[test]
fn the_link_comes_back_after_kill_9_of_either_side_and_a_stopped_side_is_noticed_within_15_s() {
    let mut fleet = Fleet::start_dialling(
        &[("web-1", &[("ring", "0")])],
        &["web-1"],
        &Options {
            ports: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let mut svc = start_service(&fleet, "ctl-1", None, "10s");
    let first = wait_connected(
        &svc,
        &fleet.members[0].agent,
        "web-1",
        Duration::from_secs(45),
    );

    // The agent is killed and restarted: shown connected again at once, a new session
    // (never refused as a duplicate).
    fleet.members[0].agent.kill_9().unwrap();
    let m = &mut fleet.members[0];
    m.agent.restart(&m.env, &[]).unwrap();
    let again = Instant::now();
    let second = wait_connected(&svc, &m.agent, "web-1", Duration::from_secs(10));
    assert!(
        second["connected_since_ms"].as_i64() > first["connected_since_ms"].as_i64(),
        "{first:#}\n{second:#}"
    );
    assert!(
        again.elapsed() < Duration::from_secs(10),
        "{:?}",
        again.elapsed()
    );
    assert!(
        !svc.log_text().contains("dial-in refused"),
        "{}",
        svc.log_tail()
    );

    // The service is killed: the agent records the disconnect, and dials the new process on
    // the same port.
    let before = count(&fleet, "web-1", "controller.disconnected");
    svc.kill_9().unwrap();
    wait_until(
        Duration::from_secs(15),
        "the agent to see the link go",
        || count(&fleet, "web-1", "controller.disconnected") > before,
    )
    .unwrap();
    svc.restart().unwrap();
    wait_connected(
        &svc,
        &fleet.members[0].agent,
        "web-1",
        Duration::from_secs(45),
    );

    // The service stops answering (SIGSTOP) with the TCP connection still up: HTTP/2
    // keep-alive notices within 15 s.
    let before = count(&fleet, "web-1", "controller.disconnected");
    svc.signal(Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let noticed = wait_until(
        Duration::from_secs(15),
        "the agent to notice a stopped service",
        || count(&fleet, "web-1", "controller.disconnected") > before,
    );
    let took = stopped.elapsed();
    svc.signal(Signal::SIGCONT).unwrap();
    noticed.unwrap_or_else(|e| panic!("{e}\n{}", fleet.members[0].agent.log_tail()));
    assert!(took <= Duration::from_secs(15), "{took:?}");
    let log = fleet.members[0].agent.log_text();
    assert!(
        log.contains("disconnected from the controller service"),
        "{}",
        fleet.members[0].agent.log_tail()
    );
    // Woken, the service gets the agent back.
    wait_connected(
        &svc,
        &fleet.members[0].agent,
        "web-1",
        Duration::from_secs(45),
    );

    // The other side: the agent stops answering (SIGSTOP) with its TCP connection still up,
    // and the service shows it disconnected within 15 s.
    let pid =
        nix::unistd::Pid::from_raw(i32::try_from(fleet.members[0].agent.pid().unwrap()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let mut last = Err(String::new());
    let noticed = wait_until(
        Duration::from_secs(15),
        "the service to notice a stopped agent",
        || {
            last = ls_entry(&svc, "web-1");
            last.as_ref().is_ok_and(|a| a["connected"] == false)
        },
    );
    let took = stopped.elapsed();
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    noticed.unwrap_or_else(|e| panic!("{e}: {last:#?}\n{}", svc.log_tail()));
    assert!(took <= Duration::from_secs(15), "{took:?}");
    wait_connected(
        &svc,
        &fleet.members[0].agent,
        "web-1",
        Duration::from_secs(45),
    );
}

/// `gantry ARGS --agent web-2 --server <service>`: the operator's commands reach the
/// dialled-in agent through the service.
fn via(svc: &Service, args: &[&str]) -> gantry_tests::Output {
    let server = svc.addr.to_string();
    // Before a `--` (the instance command follows it), or at the end.
    let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut all: Vec<&str> = args[..at].to_vec();
    all.extend(["--agent", "web-2", "--server", &server]);
    all.extend(&args[at..]);
    svc.gantry(&all).unwrap()
}

/// Hot, rolling and blue-green deploys, status and audit tail through the service proxy, and
/// a job signed by an untrusted key refused by the agent with exit 3 and on its record.
fn proxied_operations(fleet: &Fleet, svc: &Service) {
    let env = &fleet.member("web-2").env;
    let front = env.listen.expect("web-2 has a front door").port();
    let strategies: [&[&str]; 3] = [
        &["--strategy", "hot"],
        &["--strategy", "rolling", "--drain-timeout", "1s"],
        &["--strategy", "blue-green", "--scale-down-delay", "1s"],
    ];
    for (i, strategy) in strategies.into_iter().enumerate() {
        let version = format!("3.0.{i}");
        let artifact = make_artifact(fleet.env(), &version, "").unwrap();
        let mut flags: Vec<&str> = vec!["--instances", "1"];
        flags.extend(strategy);
        flags.extend([
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
            "--health-deadline",
            "20s",
        ]);
        let args = crate::deploy_args(&fleet.env().keys.deployer, &version, &artifact, &flags);
        let out = via(svc, &crate::strs(&args));
        out.assert_code(0);
        let mut body = None;
        wait_until(
            Duration::from_secs(10),
            &format!("{version} answers"),
            || {
                body = banner(front);
                body.as_deref().is_some_and(|b| b.contains(&version))
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {body:?}\n{}", out.all()));
    }
    let status = via(svc, &["status", "--json"]);
    status.assert_code(0);
    assert!(status.stdout.contains("3.0.2"), "{}", status.all());
    let tail = via(svc, &["audit", "tail", "--lines", "50"]);
    tail.assert_code(0);
    assert!(tail.stdout.contains("job.succeeded"), "{}", tail.all());

    // A job signed by a key the agent does not trust: the agent refuses it (exit 3) and
    // records it, as over a direct connection.
    let rejected_before = audit_events(env, "job.rejected").unwrap().len();
    let artifact = make_artifact(fleet.env(), "6.6.6", "").unwrap();
    let args = crate::deploy_args(
        &fleet.env().keys.attacker,
        "6.6.6",
        &artifact,
        &["--strategy", "hot", "--instances", "1"],
    );
    let forged = via(svc, &crate::strs(&args));
    forged.assert_code(3);
    let rejected = audit_events(env, "job.rejected").unwrap();
    assert_eq!(rejected.len(), rejected_before + 1, "{rejected:#?}");
    assert!(banner(front).unwrap_or_default().contains("3.0.2"));
    // The service recorded who sent what through it.
    let forwarded = svc.gantry(&[
        "fleet",
        "audit",
        "tail",
        "--service",
        "--json",
        "--last",
        "200",
    ]);
    let forwarded = forwarded.unwrap();
    assert!(
        forwarded.stdout.contains("agent.call_forwarded") && forwarded.stdout.contains("ops-1"),
        "{}",
        forwarded.all()
    );

    // An agent the service does not know, and one not connected, are named as such.
    let server = svc.addr.to_string();
    let unknown = svc
        .gantry(&["status", "--agent", "db-1", "--server", &server])
        .unwrap();
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.all().contains("no agent db-1 dials in"),
        "{}",
        unknown.all()
    );
}
