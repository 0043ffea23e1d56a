//! Live monitoring through the front door in HTTP mode (`mode = "http"`): under steady load,
//! a canary answering 2% HTTP 500 is rolled back by the error-rate check, one adding 300 ms
//! by the p95 check, a healthy one is promoted; the stable release loses no request, and the
//! verdict's numbers are in the audit entry and the job's result. A canary that gets no
//! traffic pauses with a clear reason instead of passing or aborting. `/metrics` passes
//! `promtool check metrics`; a hot deploy through the front door loses no request (it holds
//! new connections while no instance listens).

use std::time::Duration;

use gantry_tests::load::LoadOptions;
use gantry_tests::{Load, LoadReport, Options, audit_events, make_artifact, wait_until};

use crate::zero_downtime::{Rig, assert_outcome, assert_step, job_id, steps};

/// Whether `text` contains every one of `words` (case-insensitive).
fn mentions_all(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().all(|w| text.contains(&w.to_lowercase()))
}

/// v1.0.0 on 2 instances behind the front door in HTTP mode.
pub(crate) fn http_rig() -> Rig {
    Rig::with_v1(
        Options {
            http: true,
            ..Options::front_door(4)
        },
        2,
    )
}

/// Canary flags: one step at `weight` for `hold`, then 100%; analysis every 500 ms.
pub(crate) fn canary(weight: &str, hold: &str) -> Vec<String> {
    [
        "--strategy",
        "canary",
        "--step",
        &format!("{weight}:{hold}"),
        "--step",
        "100:0s",
        "--analysis-interval",
        "500ms",
        "--drain-timeout",
        "2s",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// 150 requests a second, most over new connections, for up to a minute.
pub(crate) fn steady_load(rig: &Rig) -> Load {
    let load = Load::start(LoadOptions {
        rate: 150,
        max_duration: Duration::from_secs(60),
        max_requests: 20_000,
        ..LoadOptions::new(rig.listen())
    });
    load.wait_for_more(30, Duration::from_secs(10)).unwrap();
    load
}

/// Stops the load after some more answers and checks that no request failed except the
/// canary's own error answers (`canary_errors_allowed`).
#[track_caller]
pub(crate) fn stop_load(rig: &Rig, load: Load, canary_errors_allowed: bool) -> LoadReport {
    load.wait_for_more(50, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", rig.diag()));
    let report = load.stop();
    eprintln!("{}", report.summary());
    assert!(report.ok > 0, "{}", report.summary());
    assert_eq!(
        report.failed_except("2.0.0"),
        0,
        "requests failed that the canary's error answers do not explain\n{}\n{}",
        report.summary(),
        rig.diag()
    );
    if !canary_errors_allowed {
        assert_eq!(report.failed, 0, "{}", report.summary());
    }
    report
}

/// The `analysis.failed` entry of `job`, whose verdict names `metric`.
#[track_caller]
fn breach(rig: &Rig, job: &str, metric: &str) -> serde_json::Value {
    let steps = audit_events(&rig.env, "job.step").unwrap();
    let entry = steps
        .iter()
        .find(|e| e["job_id"] == job && e["step"] == "analysis.failed")
        .unwrap_or_else(|| panic!("no analysis.failed step for {job}: {steps:#?}"))
        .clone();
    let verdict = &entry["verdict"];
    assert_eq!(verdict["metric"], metric, "{entry}");
    assert_eq!(verdict["outcome"], "fail", "{entry}");
    assert!(verdict["samples"].as_u64().unwrap() > 0, "{entry}");
    assert!(verdict["bad"].as_u64().unwrap() > 3, "{entry}");
    assert!(verdict["window_ms"].as_u64().unwrap() > 0, "{entry}");
    if let Some(secs) = switch_back_secs(&steps, job, &entry) {
        eprintln!("{metric} breach to traffic back on the stable release: {secs:.3} s");
    }
    entry
}

/// Seconds from the breach entry to the `traffic.switched` entry that gave the stable
/// release all traffic back (printed for the record, not asserted: timings are benchmarks).
fn switch_back_secs(
    steps: &[serde_json::Value],
    job: &str,
    breach: &serde_json::Value,
) -> Option<f64> {
    let secs_of = |e: &serde_json::Value| -> Option<f64> {
        let ts = e["ts"].as_str()?;
        let time = ts.split('T').nth(1)?.trim_end_matches('Z');
        let mut parts = time.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let switched = steps.iter().find(|e| {
        e["job_id"] == job
            && e["step"] == "traffic.switched"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("canary weight 0"))
    })?;
    Some(secs_of(switched)? - secs_of(breach)?)
}

/// Deploys v2.0.0 in `mode` as a canary at 50% under load; expects it rolled back by
/// `metric`. Returns the job's final reason.
fn canary_rolled_back_by(mode: &str, metric: &str) -> String {
    let rig = http_rig();
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", mode).unwrap();
    let out = rig.deploy("2.0.0", &v2, 2, &crate::strs(&canary("50", "30s")), "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    let job = job_id(&out);
    let entry = breach(&rig, &job, metric);
    stop_load(&rig, load, true);
    rig.wait_serving("1.0.0");
    assert_eq!(rig.app_status()["version"], "1.0.0");
    let reason = out
        .finished()
        .and_then(|f| f["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        reason.contains(entry["detail"].as_str().unwrap()),
        "the job's result carries the verdict: {reason:?} vs {entry}"
    );
    reason
}

#[test]
fn a_canary_answering_2_percent_500s_is_rolled_back_by_the_error_rate() {
    let reason = canary_rolled_back_by("errors=2", "error_rate");
    assert!(
        mentions_all(&reason, &["error rate", "responses 5xx", "limit 0.1%"]),
        "{reason}"
    );
}

#[test]
fn a_canary_adding_300ms_is_rolled_back_by_the_p95_latency() {
    let reason = canary_rolled_back_by("latency=300", "p95_latency");
    assert!(
        mentions_all(
            &reason,
            &["p95 latency", "slower than 200 ms", "limit 200 ms"]
        ),
        "{reason}"
    );
}

#[test]
fn a_healthy_canary_is_promoted_once_its_signals_have_enough_samples() {
    let rig = http_rig();
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    let mut flags = canary("50", "3s");
    flags.extend(["--min-samples".to_owned(), "150".to_owned()]);
    let out = rig.deploy("2.0.0", &v2, 2, &crate::strs(&flags), "20s");
    assert_outcome(&rig, &out, 0, "succeeded");
    stop_load(&rig, load, false);
    let job = job_id(&out);
    let passed: Vec<String> = audit_events(&rig.env, "job.step")
        .unwrap()
        .iter()
        .filter(|e| e["job_id"] == job.as_str() && e["step"] == "analysis.passed")
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect();
    assert!(
        passed
            .iter()
            .any(|d| mentions_all(d, &["error rate 0.00%", "p95 latency at most"])),
        "the passed analysis says what it measured: {passed:?}"
    );
    rig.wait_serving("2.0.0");
}

#[test]
fn a_canary_without_traffic_pauses_with_a_clear_reason() {
    let rig = http_rig();
    let deploy = rig.deploy_v2_in_background(2, &crate::strs(&canary("50", "1s")));
    let mut rollout = String::new();
    wait_until(
        Duration::from_secs(30),
        "status says the canary waits for data",
        || {
            rollout = rig.app_status()["rollout"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            rollout.contains("not enough data") || deploy.is_finished()
        },
    )
    .unwrap_or_else(|e| panic!("{e}; rollout {rollout:?}\n{}", rig.diag()));
    assert!(
        !deploy.is_finished(),
        "the canary neither passes nor aborts without traffic: {}",
        deploy.join().unwrap().all()
    );
    assert!(
        mentions_all(
            &rollout,
            &[
                "error rate has 0 of the 3000 responses it needs",
                "p95 latency has 0 of the 60",
                "received no requests",
                "gantry promote"
            ]
        ),
        "{rollout}"
    );
    // Still paused a while later: no data is no verdict.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!deploy.is_finished());
    rig.action("abort", &["--json"]).assert_code(0);
    let out = deploy.join().unwrap();
    assert_outcome(&rig, &out, 1, "rolled_back");
    assert_step(&steps(&out), "rollout.paused");
    rig.wait_serving("1.0.0");
}

/// `GET /metrics` from `addr`: the status line's code, the content type and the body.
fn scrape(addr: std::net::SocketAddr, accept: &str) -> (String, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (code, content_type, body.to_owned())
}

#[test]
fn metrics_are_served_in_base_units_and_pass_promtool() {
    let rig = Rig::with_v1(
        Options {
            http: true,
            metrics: true,
            ..Options::front_door(4)
        },
        2,
    );
    // A rejection, so that the rejection counter has a series.
    let v1 = make_artifact(&rig.env, "1.0.1", "").unwrap();
    let args = crate::deploy_args(&rig.env.keys.viewer, "1.0.1", &v1, &[]);
    rig.ctl.run(&crate::strs(&args)).unwrap().assert_code(3);
    let load = steady_load(&rig);
    load.wait_for_more(100, Duration::from_secs(10)).unwrap();
    stop_load(&rig, load, false);

    let addr = rig.env.metrics.unwrap();
    let mut text = String::new();
    wait_until(
        Duration::from_secs(10),
        "the front door's stable cohort in /metrics",
        || {
            let (code, content_type, body) = scrape(addr, "*/*");
            assert_eq!(code, "200", "{body}");
            assert!(
                content_type.starts_with("text/plain; version=0.0.4"),
                "{content_type}"
            );
            text = body;
            text.contains("gantry_frontdoor_requests_total{app=\"web\",cohort=\"stable\"}")
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
    for name in [
        "gantry_build_info{version=",
        "gantry_jobs_total{outcome=\"succeeded\"}",
        "gantry_admission_rejections_total{reason=",
        "gantry_audit_appends_total ",
        "gantry_audit_fsync_duration_seconds_bucket{le=",
        "gantry_frontdoor_responses_total{app=\"web\",cohort=\"stable\",class=\"2xx\"}",
        "gantry_frontdoor_response_duration_seconds_bucket{le=\"0.2\",app=\"web\",cohort=\"stable\"}",
        "gantry_frontdoor_connections_total{app=\"web\"}",
        "gantry_instance_restarts_total{app=\"web\",instance=\"0\",version=\"1.0.0\"} 0",
        "gantry_instance_resident_memory_bytes{app=\"web\",instance=\"0\",version=\"1.0.0\"}",
        "gantry_instance_cpu_ratio{app=\"web\"",
    ] {
        assert!(text.contains(name), "no {name} in /metrics:\n{text}");
    }
    let (_, content_type, om) = scrape(addr, "application/openmetrics-text; version=1.0.0");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    let Ok(promtool) = which("promtool") else {
        eprintln!(
            "SKIPPED the promtool check: promtool is not installed (Debian's prometheus package has it; CI installs it)"
        );
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn a_hot_deploy_through_the_front_door_loses_no_request() {
    let rig = Rig::with_v1(Options::front_door(4), 2);
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    let out = rig.deploy("2.0.0", &v2, 2, &["--strategy", "hot"], "20s");
    assert_outcome(&rig, &out, 0, "succeeded");
    // The old instances are out of the table (new connections held) before they stop: a
    // connection their listener queued but never accepted would be reset.
    let steps: Vec<(String, String)> = out
        .json_lines()
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("step"), text("message"))
        })
        .collect();
    let held = steps
        .iter()
        .position(|(step, detail)| {
            step == "traffic.switched" && detail.starts_with("hold new connections")
        })
        .unwrap_or_else(|| panic!("no hold before the stop: {steps:#?}"));
    let stopping = steps
        .iter()
        .position(|(step, _)| step == "instances.stopping")
        .unwrap_or_else(|| panic!("no instances.stopping step: {steps:#?}"));
    assert!(held < stopping, "{steps:#?}");
    load.wait_for_version("2.0.0", Duration::from_secs(10))
        .unwrap();
    let report = stop_load(&rig, load, false);
    assert!(report.versions.contains_key("1.0.0") && report.versions.contains_key("2.0.0"));
    let stats: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rig.env.data_dir.join("apps/web/traffic/run/stats.json")).unwrap(),
    )
    .unwrap();
    eprintln!(
        "front door: {} connection(s) held while no instance listened, {} unrouted",
        stats["held"], stats["unrouted"]
    );
    assert_eq!(stats["unrouted"], 0, "{stats}");
    rig.wait_serving("2.0.0");
}

#[test]
fn a_hot_deploy_failing_3s_after_it_became_healthy_is_rolled_back_by_the_watch() {
    let rig = Rig::with_v1(Options::front_door(4), 2);
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", "unhealthy-after=3").unwrap();
    let out = rig.deploy(
        "2.0.0",
        &v2,
        2,
        &["--strategy", "hot", "--watch", "8s"],
        "20s",
    );
    assert_outcome(&rig, &out, 1, "rolled_back");
    let steps = steps(&out);
    assert_step(&steps, "health.passed");
    assert_step(&steps, "watch.started");
    assert_step(&steps, "watch.failed");
    let job = job_id(&out);
    let failed = audit_events(&rig.env, "job.step")
        .unwrap()
        .into_iter()
        .find(|e| e["job_id"] == job.as_str() && e["step"] == "watch.failed")
        .unwrap();
    assert!(
        mentions_all(
            failed["detail"].as_str().unwrap(),
            &["into the watch", "unhealthy"]
        ),
        "{failed}"
    );
    stop_load(&rig, load, false);
    rig.wait_serving("1.0.0");
    assert_eq!(rig.app_status()["version"], "1.0.0");
}
