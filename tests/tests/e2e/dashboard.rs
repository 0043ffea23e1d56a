//! The deploy dashboard in a real headless browser: an agent with the metrics listener and
//! `web` behind the front door in HTTP mode, under steady load, runs a canary; while it runs,
//! Chromium loads `/dashboard` and the DOM its scripts built shows the app, the canary cohort,
//! the job's events on the time axis, numeric error rates and p95s, and the audit tail with
//! the job, and holds none of the job's environment values. The service's dashboard, during a
//! fleet rollout over three agents, shows the rollout ring by ring with the hosts' steps, the
//! bake time left, each host's live signals from its agent, the inventory and the service's
//! audit tail. Screenshots are kept under
//! `$GANTRY_CI_ARTIFACTS`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use gantry_proto::v1::{self, OnFailure};
use gantry_tests::browser::{Browser, artifacts_dir};
use gantry_tests::fleet::{plan, release, ring_of_labels, sign_plan};
use gantry_tests::load::LoadOptions;
use gantry_tests::service::{Fleet, Service};
use gantry_tests::{Load, Options, make_artifact, wait_until};
use prost::Message;

use crate::zero_downtime::{Rig, assert_outcome};

const SECRET: &str = "dash-s3cr3t-4b7e19";
const PLAIN: &str = "dash-plain-env-90c2aa";

/// `method path` against `addr`: the status code, the head (lowercased) and the body.
fn exchange(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_lowercase(), body.to_owned())
}

fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (code, _, body) = exchange(addr, "GET", path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The text right after `marker` in `dom`, up to the next tag.
fn text_after<'a>(dom: &'a str, marker: &str) -> Vec<&'a str> {
    dom.match_indices(marker)
        .map(|(i, _)| {
            let rest = &dom[i + marker.len()..];
            &rest[..rest.find('<').unwrap_or(rest.len())]
        })
        .collect()
}

/// Whether `text` is a number followed by `unit` (after an optional `≤ `).
fn is_number_with(text: &str, unit: &str) -> bool {
    let t = text.trim().trim_start_matches("≤").trim();
    t.strip_suffix(unit)
        .is_some_and(|n| n.trim().parse::<f64>().is_ok())
}

#[test]
fn the_agent_dashboard_in_a_headless_browser_shows_a_running_canary() {
    let rig = Rig::with_v1(
        Options {
            http: true,
            metrics: true,
            ..Options::front_door(4)
        },
        2,
    );
    let Some(browser) = Browser::find_or_skip("the agent dashboard test", &rig.env.root) else {
        return;
    };
    let addr = rig.env.metrics.unwrap();

    // Read-only, with the headers, before anything else.
    let (code, head, body) = exchange(addr, "GET", "/dashboard");
    assert_eq!(code, 200, "{body}");
    for header in [
        "cache-control: no-store",
        "content-security-policy: default-src 'self'",
        "x-content-type-options: nosniff",
        "content-type: text/html",
    ] {
        assert!(head.contains(header), "no {header:?} in\n{head}");
    }
    assert!(body.contains("/dashboard/app.js"), "{body}");
    assert_eq!(exchange(addr, "POST", "/dashboard/api/apps").0, 405);
    assert_eq!(exchange(addr, "DELETE", "/dashboard").0, 405);
    assert_eq!(exchange(addr, "GET", "/dashboard/nothing-here").0, 404);
    assert_eq!(
        exchange(addr, "GET", "/metrics").0,
        200,
        "/metrics still answers"
    );

    let load = Load::start(LoadOptions {
        rate: 150,
        max_duration: Duration::from_secs(120),
        max_requests: 40_000,
        ..LoadOptions::new(rig.listen())
    });
    load.wait_for_more(30, Duration::from_secs(10)).unwrap();

    // A canary at 50% that holds (too few samples for a verdict: it pauses for data).
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    let secret = format!("DB_PASSWORD={SECRET}");
    let plain = format!("MODE={PLAIN}");
    let flags = [
        "--strategy",
        "canary",
        "--step",
        "50:60s",
        "--step",
        "100:0s",
        "--analysis-interval",
        "500ms",
        "--drain-timeout",
        "2s",
        "--secret-env",
        &secret,
        "--env",
        &plain,
    ];
    let args = rig.deploy_args("2.0.0", &v2, 2, &flags, "20s");
    let ctl = rig.ctl.clone();
    let deploy = std::thread::spawn(move || ctl.run(&crate::strs(&args)).unwrap());

    // The canary serves and its samples reached the history.
    let mut job = String::new();
    let mut last = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(60),
        "the dashboard's series hold canary responses",
        || {
            let apps = get_json(addr, "/dashboard/api/apps");
            job = apps["apps"][0]["active_job"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            last = get_json(addr, "/dashboard/api/series?app=web");
            let answered = |cohort: &str| {
                last["cohorts"][cohort].as_array().is_some_and(|s| {
                    s.iter()
                        .filter(|x| x["responses"].as_u64() > Some(0))
                        .count()
                        >= 3
                })
            };
            !job.is_empty() && answered("canary") && answered("stable")
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{last}\n{}", rig.diag()));
    assert!(!deploy.is_finished(), "the canary still runs");
    let events = get_json(addr, "/dashboard/api/events?app=web");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["job_id"] == job.as_str() && e["kind"] == "accepted"),
        "{events}"
    );

    let url = format!("http://{addr}/dashboard");
    let dom = browser
        .dump_dom(&url, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dom.contains("data-ready=\"true\""),
        "the page rendered:\n{dom}"
    );
    assert!(dom.contains("<h2>web</h2>"), "the app's name:\n{dom}");
    assert!(
        dom.contains("data-cohort=\"canary\"") && dom.contains("data-cohort=\"stable\""),
        "both cohorts:\n{dom}"
    );
    assert!(
        dom.contains(&format!("data-kind=\"accepted\" data-job=\"{job}\"")),
        "an event marker for job {job}:\n{dom}"
    );
    assert!(dom.contains(&format!("job {job} accepted")), "{dom}");
    let rates = text_after(&dom, "class=\"num\" data-metric=\"error_rate\">");
    assert!(
        rates.len() >= 2 && rates.iter().all(|r| is_number_with(r, "%")),
        "numeric error rates per cohort: {rates:?}\n{dom}"
    );
    let p95s = text_after(&dom, "class=\"num\" data-metric=\"p95\">");
    assert!(
        p95s.len() >= 2 && p95s.iter().all(|p| is_number_with(p, "ms")),
        "numeric p95s per cohort: {p95s:?}\n{dom}"
    );
    let audit = dom
        .split("id=\"audit-rows\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no audit tail:\n{dom}"));
    assert!(
        audit.contains(&job),
        "the audit tail holds the job:\n{audit}"
    );
    assert!(audit.contains("job.accepted"), "{audit}");
    for value in [SECRET, PLAIN] {
        assert!(!dom.contains(value), "{value} in the page:\n{dom}");
    }
    // Nor anywhere in what the page reads.
    for path in [
        "/dashboard/api/audit?limit=500",
        "/dashboard/api/events?app=web",
        "/dashboard/api/apps",
    ] {
        let (_, _, body) = exchange(addr, "GET", path);
        for value in [SECRET, PLAIN] {
            assert!(!body.contains(value), "{value} in {path}: {body}");
        }
    }

    let shot = artifacts_dir(&rig.env.root)
        .unwrap()
        .join("dashboard-agent-canary.png");
    browser
        .screenshot(&url, Duration::from_secs(5), &shot)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("dashboard screenshot: {}", shot.display());

    rig.action("abort", &["--json"]).assert_code(0);
    let out = deploy.join().unwrap();
    assert_outcome(&rig, &out, 1, "rolled_back");
    load.wait_for_more(30, Duration::from_secs(10)).unwrap();
    let report = load.stop();
    assert_eq!(
        report.failed,
        0,
        "the stable cohort lost no request\n{}",
        report.summary()
    );
    rig.wait_serving("1.0.0");
    // The job's end is an event too, once the dashboard has read it.
    wait_until(
        Duration::from_secs(10),
        "the job's end among the events",
        || {
            get_json(addr, "/dashboard/api/events?app=web")["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["job_id"] == job.as_str() && e["kind"] == "end")
        },
    )
    .unwrap();

    // A release with notes: the page shows them under the app, as text (markup in them is
    // not run).
    let notes = rig.env.root.join("NOTES.md");
    std::fs::write(
        &notes,
        "## New Features\n- greets you\n<script>document.title='pwned'</script>\n",
    )
    .unwrap();
    let v3 = make_artifact(&rig.env, "3.0.0", "").unwrap();
    rig.deploy(
        "3.0.0",
        &v3,
        2,
        &["--strategy", "rolling", "--notes", &notes.to_string_lossy()],
        "20s",
    )
    .assert_code(0);
    let mut dom = String::new();
    wait_until(Duration::from_secs(20), "the notes on the page", || {
        dom = browser
            .dump_dom(&url, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        dom.contains("Release notes of 3.0.0")
    })
    .unwrap_or_else(|e| panic!("{e}:\n{dom}"));
    assert!(
        dom.contains("class=\"notes-text\">## New Features\n- greets you\n&lt;script&gt;"),
        "the notes as text:\n{dom}"
    );
    assert!(!dom.contains("<title>pwned"), "{dom}");
}

/// Three agents: ring 0 `web-1`, ring 1 `web-2` and `web-3`.
fn three() -> Fleet {
    Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "1")]),
        ("web-3", &[("ring", "1")]),
    ])
    .unwrap()
}

#[test]
fn the_service_dashboard_shows_a_fleet_rollout_ring_by_ring() {
    let fleet = three();
    let dir = fleet.env().root.join("ctl-1");
    let config = fleet.write_config(&dir, "ctl-1", None, "10s").unwrap();
    // [dashboard] before [tls]: a table after [[agents]] would be read as part of the last agent.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("[tls]", "[dashboard]\nlisten = \"127.0.0.1:0\"\n\n[tls]", 1),
    )
    .unwrap();
    let svc = Service::start(&fleet, &config).unwrap();
    let addr = svc
        .dashboard_addr()
        .unwrap_or_else(|| panic!("no dashboard line\n{}", svc.log_tail()));
    assert!(addr.ip().is_loopback());
    let Some(browser) = Browser::find_or_skip("the service dashboard test", &fleet.env().root)
    else {
        return;
    };

    let (code, head, _) = exchange(addr, "GET", "/dashboard");
    assert_eq!(code, 200);
    for header in [
        "cache-control: no-store",
        "content-security-policy: default-src 'self'",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(header), "no {header:?} in\n{head}");
    }
    assert_eq!(exchange(addr, "POST", "/dashboard/api/rollouts").0, 405);
    assert_eq!(exchange(addr, "GET", "/dashboard/api/plans").0, 404);

    let ring = |name: &str, n: &str, bake_ms: u64| v1::Ring {
        bake_ms,
        on_failure: OnFailure::Halt.into(),
        max_parallel: "2".into(),
        host_deadline_ms: 60_000,
        ..ring_of_labels(name, &[("ring", n)])
    };
    let env = fleet.env();
    let artifact = make_artifact(env, "2.0.0", "").unwrap();
    let p = plan(
        "dash-2.0.0",
        "production",
        release("2.0.0", &artifact, 1).unwrap(),
        vec![ring("first", "0", 20_000), ring("rest", "1", 0)],
    );
    let signed = sign_plan(&p, &[&env.keys.deployer]).unwrap();
    let plan_path = env.root.join("dash.plan");
    std::fs::write(&plan_path, signed.encode_to_vec()).unwrap();
    svc.gantry(&[
        "rollout",
        "start",
        &plan_path.to_string_lossy(),
        "--artifact",
        &artifact.to_string_lossy(),
    ])
    .unwrap()
    .assert_code(0);

    // Ring 0 done and baking: the page shows the bake time left and the hosts' steps.
    let mut last = serde_json::Value::Null;
    wait_until(Duration::from_secs(60), "ring 0 baking", || {
        last = get_json(addr, "/dashboard/api/rollouts");
        let r = &last["rollouts"][0];
        r["rollout_id"] == "dash-2.0.0"
            && r["bake_left_ms"].as_i64().is_some_and(|b| b > 5_000)
            && r["rings"][0]["hosts"][0]["step"] == "succeeded"
            && r["rings"][0]["hosts"][0]["signals"][0]["instances"] == 1
    })
    .unwrap_or_else(|e| panic!("{e}\n{last:#}\n{}", svc.log_tail()));
    let r = &last["rollouts"][0];
    assert_eq!(r["app"], "web");
    assert_eq!(r["version"], "2.0.0");
    assert_eq!(r["state"], "running");
    assert_eq!(r["rings"][0]["hosts"][0]["agent_id"], "web-1");
    assert_eq!(r["rings"][0]["hosts"][0]["reachable"], true);
    // The host's live signals, from its agent: the release's one instance, in `stable`.
    assert_eq!(
        r["rings"][0]["hosts"][0]["signals"][0]["cohort"], "stable",
        "{r:#}"
    );
    assert_eq!(
        r["rings"][0]["hosts"][0]["signals_error"],
        serde_json::Value::Null
    );

    // A flag set handed to the service for web-1 (whose config serves no flags): the
    // dashboard shows its delivery as the service recorded it.
    let set = fleet.env().root.join("dash-flags.json");
    std::fs::write(
        &set,
        r#"{"flags":{"dark-mode":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}"#,
    )
    .unwrap();
    let out = svc
        .gantry(&[
            "flags",
            "push",
            "--server",
            &svc.addr.to_string(),
            "--key",
            &fleet.env().keys.deployer.key.to_string_lossy(),
            "--app",
            "web",
            "--for-agent",
            "web-1",
            &set.to_string_lossy(),
        ])
        .unwrap();
    assert!(
        out.stdout
            .contains("flags of web across the fleet: version 1"),
        "{}",
        out.all()
    );
    let flags = get_json(addr, "/dashboard/api/flags");
    let state = flags["flags"][0]["deliveries"][0]["state"].clone();
    assert_eq!(
        flags["flags"][0]["deliveries"][0]["agent_id"], "web-1",
        "{flags:#}"
    );

    let url = format!("http://{addr}/dashboard");
    let dom = browser
        .dump_dom(&url, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        dom.contains("data-ready=\"true\""),
        "the page rendered:\n{dom}"
    );
    assert!(
        dom.contains("data-flag-agent=\"web-1\"")
            && dom.contains(&format!("class=\"flag-{}\"", state.as_str().unwrap_or("?"))),
        "the flag set's delivery on the page ({flags}):\n{dom}"
    );
    assert!(dom.contains("<h2>dash-2.0.0</h2>"), "{dom}");
    assert!(dom.contains("data-state=\"running\""), "{dom}");
    assert!(
        dom.contains("ring 1: first") && dom.contains("ring 2: rest"),
        "{dom}"
    );
    assert!(dom.contains("data-host=\"web-1\""), "{dom}");
    let signals = text_after(&dom, "data-field=\"signals\">");
    assert!(
        signals.iter().any(|t| t.starts_with("stable: 1 inst, ")),
        "web-1's signals on the page: {signals:?}\n{dom}"
    );
    assert!(dom.contains("bake time left: "), "{dom}");
    for agent in ["web-1", "web-2", "web-3"] {
        assert!(
            dom.contains(&format!("data-agent=\"{agent}\"")),
            "{agent} in the inventory:\n{dom}"
        );
    }
    let audit = dom
        .split("id=\"audit-rows\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no audit tail:\n{dom}"));
    for event in ["rollout.started", "host.dispatched", "ring.baking"] {
        assert!(audit.contains(event), "{event} in the audit tail:\n{audit}");
    }
    let shot = artifacts_dir(&fleet.env().root)
        .unwrap()
        .join("dashboard-service-rollout.png");
    browser
        .screenshot(&url, Duration::from_secs(5), &shot)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("service dashboard screenshot: {}", shot.display());

    // The rollout goes on to the end, and the dashboard follows.
    wait_until(Duration::from_secs(90), "the rollout to succeed", || {
        last = get_json(addr, "/dashboard/api/rollouts");
        last["rollouts"][0]["state"] == "succeeded"
    })
    .unwrap_or_else(|e| panic!("{e}\n{last:#}\n{}", svc.log_tail()));
    let hosts = last["rollouts"][0]["rings"][1]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{last:#}");
    assert!(hosts.iter().all(|h| h["step"] == "succeeded"), "{last:#}");
    assert_eq!(last["rollouts"][0]["bake_left_ms"], 0);
}
