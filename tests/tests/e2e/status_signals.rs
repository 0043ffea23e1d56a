//! The golden signals in `gantry status`: during a canary under steady load, `status --json`
//! and the text show, per cohort, the requests, 5xx, error rate and p95 latency the front door
//! counted over the last minute, and each cohort's instances' CPU and memory.

use std::time::Duration;

use gantry_tests::wait_until;

use crate::monitoring::{http_rig, steady_load, stop_load};
use crate::zero_downtime::assert_outcome;

#[test]
fn status_shows_each_cohorts_signals_during_a_canary() {
    let rig = http_rig();
    let load = steady_load(&rig);
    let deploy = rig.deploy_v2_in_background(
        2,
        &[
            "--strategy",
            "canary",
            "--step",
            "50:promote",
            "--step",
            "100:0s",
            "--no-data",
            "pass",
            "--drain-timeout",
            "2s",
        ],
    );
    let mut last = serde_json::Value::Null;
    let cohort = |app: &serde_json::Value, name: &str| {
        app["signals"]
            .as_array()
            .and_then(|s| s.iter().find(|c| c["cohort"] == name).cloned())
    };
    let seen = wait_until(
        Duration::from_secs(30),
        "status shows traffic, CPU and memory for the stable and the canary cohort",
        || {
            last = rig.app_status();
            ["stable", "canary"].iter().all(|name| {
                cohort(&last, name).is_some_and(|c| {
                    c["requests"].as_u64().unwrap_or(0) > 20
                        && c["instances"].as_u64().unwrap_or(0) >= 1
                        && c["memory_bytes"].as_u64().unwrap_or(0) > 0
                        && c["p95_latency_ms"].as_u64().is_some()
                })
            })
        },
    );
    seen.unwrap_or_else(|e| panic!("{e}\n{last:#}"));
    for name in ["stable", "canary"] {
        let c = cohort(&last, name).unwrap();
        assert_eq!(c["errors"], 0, "{c}");
        assert_eq!(c["error_rate"], 0.0, "{c}");
        assert!(c["window_ms"].as_u64().unwrap() > 0, "{c}");
        assert!(c["responses"].as_u64().unwrap() > 0, "{c}");
    }
    let text = rig.ctl.run(&["status"]).unwrap();
    text.assert_code(0);
    assert!(
        text.stdout.contains("  signals\n") && text.stdout.contains("ERROR RATE"),
        "{}",
        text.stdout
    );
    let row = text
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("canary "))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(row.contains("0.00%") && row.contains("<= "), "{row}");
    rig.action("promote", &[]).assert_code(0);
    let out = deploy.join().unwrap();
    assert_outcome(&rig, &out, 0, "succeeded");
    stop_load(&rig, load, false);
}
