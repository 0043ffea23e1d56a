//! External metrics as gates, against a real Prometheus (Debian's `/usr/bin/prometheus`)
//! that scrapes the agent's `/metrics` every second: a canary whose Prometheus check holds is
//! promoted (and watched with it); one whose check on the canary cohort's own 5xx share
//! fails is rolled back, with the query as sent and its value in the `analysis.failed` entry
//! and the job's result. Skipped, saying so, only when Prometheus is not installed outside CI.

use std::time::Duration;

use gantry_tests::load::LoadOptions;
use gantry_tests::prometheus::{self, Prometheus};
use gantry_tests::{Load, Options, audit_events, make_artifact};

use crate::zero_downtime::{Rig, assert_outcome, assert_step, job_id, steps};

/// v1.0.0 on 2 instances behind the front door (`http` mode or TCP), `/metrics` on, and a
/// Prometheus scraping it; `None` (said on stderr) when Prometheus is not installed.
fn rig(http: bool) -> Option<(Rig, Prometheus)> {
    let program = match prometheus::binary() {
        Ok(p) => p,
        Err(skip) => {
            eprintln!("{skip}");
            return None;
        }
    };
    let rig = Rig::with_v1(
        Options {
            http,
            metrics: true,
            ..Options::front_door(4)
        },
        2,
    );
    let prom = Prometheus::start(&rig.env, &program, rig.env.metrics.unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    Some((rig, prom))
}

/// Canary flags with the Prometheus gate: one step at 50% for `hold`, then 100%.
fn canary(prom: &Prometheus, hold: &str, check: &str, extra: &[&str]) -> Vec<String> {
    let url = prom.url();
    let step = format!("50:{hold}");
    let mut flags: Vec<&str> = vec![
        "--strategy",
        "canary",
        "--step",
        &step,
        "--step",
        "100:0s",
        "--analysis-interval",
        "500ms",
        "--drain-timeout",
        "2s",
        "--prometheus",
        &url,
        "--prom-check",
        check,
    ];
    flags.extend(extra);
    flags.iter().map(ToString::to_string).collect()
}

/// The `job.step` entries of `job` named `step`.
pub(crate) fn entries(rig: &Rig, job: &str, step: &str) -> Vec<serde_json::Value> {
    audit_events(&rig.env, "job.step")
        .unwrap()
        .into_iter()
        .filter(|e| e["job_id"] == job && e["step"] == step)
        .collect()
}

#[test]
fn a_canary_whose_prometheus_check_holds_is_promoted() {
    let Some((rig, prom)) = rig(false) else {
        return;
    };
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    let check = r#"restarts:max(max_over_time(gantry_instance_restarts_total{app="{{app}}"}[{{window}}])):< 1"#;
    let flags = canary(&prom, "3s", check, &["--watch", "3s"]);
    let out = rig.deploy("2.0.0", &v2, 2, &crate::strs(&flags), "20s");
    assert_outcome(&rig, &out, 0, "succeeded");
    let job = job_id(&out);
    let passed = entries(&rig, &job, "analysis.passed");
    assert_eq!(passed.len(), 2, "one per step: {passed:#?}");
    for entry in &passed {
        let verdict = &entry["prometheus"][0];
        assert_eq!(verdict["name"], "restarts", "{entry}");
        assert_eq!(verdict["outcome"], "pass", "{entry}");
        assert_eq!(verdict["value"], 0.0, "{entry}");
        assert_eq!(verdict["condition"], "< 1", "{entry}");
        let query = verdict["query"].as_str().unwrap();
        assert!(
            query.starts_with(r#"max(max_over_time(gantry_instance_restarts_total{app="web"}["#)
                && query.ends_with("s]))"),
            "the template is filled in: {query}"
        );
        assert!(
            entry["detail"]
                .as_str()
                .unwrap()
                .contains("prometheus check restarts: max(max_over_time("),
            "{entry}"
        );
    }
    let steps = steps(&out);
    assert_step(&steps, "watch.started");
    assert_step(&steps, "watch.passed");
    let started = entries(&rig, &job, "watch.started");
    assert!(
        started[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the Prometheus checks"),
        "{started:?}"
    );
    rig.wait_serving("2.0.0");
}

#[test]
fn a_canary_whose_5xx_share_in_prometheus_fails_its_check_is_rolled_back() {
    let Some((rig, prom)) = rig(true) else {
        return;
    };
    let load = Load::start(LoadOptions {
        rate: 150,
        max_duration: Duration::from_secs(60),
        max_requests: 20_000,
        ..LoadOptions::new(rig.listen())
    });
    load.wait_for_more(30, Duration::from_secs(10)).unwrap();
    // 20% of the canary's answers are 500s: under the front door's own limit here (0.5), so
    // it is the Prometheus check that decides.
    let v2 = make_artifact(&rig.env, "2.0.0", "errors=20").unwrap();
    let check = concat!(
        r#"errors:sum(rate(gantry_frontdoor_responses_total{app="{{app}}",cohort="{{cohort}}",class="5xx"}[{{window}}]))"#,
        r#" / sum(rate(gantry_frontdoor_requests_total{app="{{app}}",cohort="{{cohort}}"}[{{window}}])):< 0.05"#
    );
    let flags = canary(&prom, "30s", check, &["--max-error-rate", "0.5"]);
    let out = rig.deploy("2.0.0", &v2, 2, &crate::strs(&flags), "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    assert_step(&steps(&out), "analysis.failed");
    let job = job_id(&out);
    let failed = entries(&rig, &job, "analysis.failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let entry = &failed[0];
    let verdict = &entry["verdict"];
    assert_eq!(verdict["metric"], "prometheus", "{entry}");
    assert_eq!(verdict["name"], "errors", "{entry}");
    assert_eq!(verdict["outcome"], "fail", "{entry}");
    assert_eq!(verdict["condition"], "< 0.05", "{entry}");
    let value = verdict["value"].as_f64().unwrap();
    assert!(
        (0.05..0.6).contains(&value),
        "the canary's 5xx share: {entry}"
    );
    let query = verdict["query"].as_str().unwrap();
    assert!(
        query.contains(r#"{app="web",cohort="canary",class="5xx"}["#) && !query.contains("{{"),
        "{query}"
    );
    let reason = out
        .finished()
        .and_then(|f| f["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        reason.contains(entry["detail"].as_str().unwrap()) && reason.contains(query),
        "the job's result carries the query and its value: {reason:?} vs {entry}"
    );
    load.wait_for_more(50, Duration::from_secs(10)).unwrap();
    let report = load.stop();
    eprintln!("{}", report.summary());
    assert_eq!(
        report.failed_except("2.0.0"),
        0,
        "the stable release lost no request\n{}",
        report.summary()
    );
    rig.wait_serving("1.0.0");
}
