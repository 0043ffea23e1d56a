//! `--compare stable`: the canary judged against the stable cohort in the same window. Under
//! steady load through the front door in HTTP mode, a canary answering 2% HTTP 500 beside a
//! clean stable release is rolled back by the two-proportion test; a canary exactly as slow as
//! its stable release (both 300 ms, above the 200 ms p95 default) fails the thresholds but is
//! promoted by the comparison. The verdicts' numbers (test, statistic, p-value, alpha, both
//! cohorts) are in the audit entries.

use std::time::Duration;

use gantry_tests::load::LoadOptions;
use gantry_tests::{Load, make_artifact};

use crate::monitoring::{canary, http_rig, steady_load, stop_load};
use crate::prometheus_gate::entries;
use crate::zero_downtime::{Rig, assert_outcome, job_id};

/// `canary(weight, hold)` with `--compare stable --min-samples min`.
fn versus_stable(weight: &str, hold: &str, min: &str) -> Vec<String> {
    let mut flags = canary(weight, hold);
    flags.extend(["--compare", "stable", "--min-samples", min].map(str::to_owned));
    flags
}

#[test]
fn a_canary_with_2_percent_500s_beside_a_clean_stable_is_rolled_back_by_the_comparison() {
    let rig = http_rig();
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", "errors=2").unwrap();
    let flags = versus_stable("50", "30s", "300");
    let out = rig.deploy("2.0.0", &v2, 2, &crate::strs(&flags), "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    let job = job_id(&out);
    let failed = entries(&rig, &job, "analysis.failed");
    let entry = failed
        .first()
        .unwrap_or_else(|| panic!("no analysis.failed entry\n{}", out.all()));
    let v = &entry["verdict"];
    assert_eq!(v["metric"], "error_rate", "{entry}");
    assert_eq!(v["outcome"], "fail", "{entry}");
    assert_eq!(v["compare"], "stable", "{entry}");
    assert_eq!(v["test"], "two_proportion_z", "{entry}");
    assert_eq!(v["alpha"], 0.05, "{entry}");
    assert!(v["p_value"].as_f64().unwrap() < 0.05, "{entry}");
    assert!(v["z"].as_f64().unwrap() > 1.64, "{entry}");
    assert!(v["canary"]["samples"].as_u64().unwrap() >= 300, "{entry}");
    assert!(v["stable"]["samples"].as_u64().unwrap() >= 300, "{entry}");
    // How many 5xx it takes depends on both sample counts (3 of 300 against 0 of 300 do).
    assert!(v["canary"]["bad"].as_u64().unwrap() > 0, "{entry}");
    assert_eq!(v["stable"]["bad"], 0, "{entry}");
    let detail = entry["detail"].as_str().unwrap();
    assert!(
        detail.contains("against the stable cohort's 0.00%")
            && detail.contains("two-proportion z-test z = ")
            && detail.contains("< alpha 0.05"),
        "{detail}"
    );
    let reason = out
        .finished()
        .and_then(|f| f["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(reason.contains(detail), "{reason:?} vs {detail:?}");
    stop_load(&rig, load, true);
    rig.wait_serving("1.0.0");
}

/// Enough clients for about 100 requests a second of 300 ms answers.
fn slow_load(rig: &Rig) -> Load {
    let load = Load::start(LoadOptions {
        rate: 100,
        fresh_clients: 24,
        keepalive_clients: 8,
        max_duration: Duration::from_secs(90),
        max_requests: 20_000,
        ..LoadOptions::new(rig.listen())
    });
    load.wait_for_more(30, Duration::from_secs(10)).unwrap();
    load
}

#[test]
fn a_canary_as_slow_as_stable_fails_the_thresholds_and_passes_the_comparison() {
    let rig = http_rig();
    let slow = make_artifact(&rig.env, "1.1.0", "latency=300").unwrap();
    let out = rig.deploy("1.1.0", &slow, 2, &["--strategy", "rolling"], "20s");
    assert_outcome(&rig, &out, 0, "succeeded");
    rig.wait_serving("1.1.0");
    let load = slow_load(&rig);

    // Against the fixed 200 ms p95 the same behaviour is a failure.
    let v2 = make_artifact(&rig.env, "2.0.0", "latency=300").unwrap();
    let flags = canary("50", "30s");
    let out = rig.deploy("2.0.0", &v2, 2, &crate::strs(&flags), "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    let failed = entries(&rig, &job_id(&out), "analysis.failed");
    assert_eq!(
        failed.first().map(|e| e["verdict"]["metric"].clone()),
        Some("p95_latency".into()),
        "{failed:?}"
    );

    // Against the stable cohort it is no worse: promoted.
    let v2 = make_artifact(&rig.env, "2.0.1", "latency=300").unwrap();
    let flags = versus_stable("50", "3s", "150");
    let out = rig.deploy("2.0.1", &v2, 2, &crate::strs(&flags), "20s");
    assert_outcome(&rig, &out, 0, "succeeded");
    let job = job_id(&out);
    assert!(entries(&rig, &job, "analysis.failed").is_empty());
    let passed: Vec<String> = entries(&rig, &job, "analysis.passed")
        .iter()
        .filter_map(|e| e["detail"].as_str().map(str::to_owned))
        .collect();
    assert!(
        passed.iter().any(|d| {
            d.contains("latency p95 at most 500 ms")
                && d.contains("against the stable cohort's p95 at most 500 ms")
                && d.contains("Mann-Whitney U = ")
                && d.contains(">= alpha 0.05")
                && d.contains("error rate 0.00% against the stable cohort's 0.00%")
        }),
        "the passed analysis says what it compared: {passed:?}"
    );
    stop_load(&rig, load, false);
    rig.wait_serving("2.0.1");
}
