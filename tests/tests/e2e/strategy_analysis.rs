//! Analysis of the blue-green preview and of rolling batches on the front door's HTTP
//! signals, under steady load: a new release that answers 500s to part of its preview share
//! is switched back by the preview cohort's error rate (`preview.failed`), and a rolling
//! batch that adds 300 ms is reverted by its backend's p95 latency (`batch.failed`), each
//! with the verdict in the audit entry, and a canary holding more memory than its share of the
//! host allows is rolled back by the memory check; no request of the stable release failed.

use gantry_tests::{audit_events, make_artifact};

use crate::monitoring::{http_rig, steady_load, stop_load};
use crate::zero_downtime::{assert_outcome, assert_step, job_id, steps};

#[test]
fn a_blue_green_preview_answering_500s_is_switched_back_by_the_error_rate() {
    let rig = http_rig();
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", "errors=20").unwrap();
    let flags = [
        "--strategy",
        "blue-green",
        "--preview-weight",
        "30",
        "--preview",
        "30s",
        "--analysis-interval",
        "500ms",
        "--drain-timeout",
        "2s",
    ];
    let out = rig.deploy("2.0.0", &v2, 2, &flags, "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    let steps = steps(&out);
    assert_step(&steps, "preview.started");
    assert_step(&steps, "preview.failed");
    let job = job_id(&out);
    let failed = audit_events(&rig.env, "job.step")
        .unwrap()
        .into_iter()
        .find(|e| e["job_id"] == job.as_str() && e["step"] == "preview.failed")
        .unwrap();
    let verdict = &failed["verdict"];
    assert_eq!(verdict["metric"], "error_rate", "{failed}");
    assert_eq!(verdict["outcome"], "fail", "{failed}");
    assert!(verdict["bad"].as_u64().unwrap() > 3, "{failed}");
    assert!(verdict["samples"].as_u64().unwrap() > 0, "{failed}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("2.0.0 during the preview: error rate"),
        "{detail}"
    );
    let reason = out
        .finished()
        .and_then(|f| f["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        reason.contains(detail) && reason.contains("still serves 1.0.0"),
        "{reason}"
    );
    // Only the preview's own 500s failed.
    stop_load(&rig, load, true);
    rig.wait_serving("1.0.0");
    assert_eq!(rig.app_status()["version"], "1.0.0");
}

#[test]
fn a_rolling_batch_adding_300ms_is_rolled_back_by_the_p95_latency() {
    let rig = http_rig();
    let load = steady_load(&rig);
    let v2 = make_artifact(&rig.env, "2.0.0", "latency=300").unwrap();
    let flags = [
        "--strategy",
        "rolling",
        "--batch",
        "1",
        "--batch-analysis",
        "30s",
        "--analysis-interval",
        "500ms",
        "--drain-timeout",
        "2s",
    ];
    let out = rig.deploy("2.0.0", &v2, 2, &flags, "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    let steps = steps(&out);
    assert_step(&steps, "batch.analysis");
    assert_step(&steps, "batch.failed");
    let job = job_id(&out);
    let entries = audit_events(&rig.env, "job.step").unwrap();
    let failed = entries
        .iter()
        .find(|e| e["job_id"] == job.as_str() && e["step"] == "batch.failed")
        .unwrap();
    let verdict = &failed["verdict"];
    assert_eq!(verdict["metric"], "p95_latency", "{failed}");
    assert_eq!(verdict["outcome"], "fail", "{failed}");
    assert_eq!(verdict["threshold"], 200.0, "{failed}");
    assert!(verdict["bad"].as_u64().unwrap() > 3, "{failed}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("2.0.0 backend blue-0-2.0.0 during its batch analysis: p95 latency"),
        "{detail}"
    );
    // The first batch failed: the second was never started.
    assert!(
        !entries.iter().any(|e| e["job_id"] == job.as_str()
            && e["step"] == "batch.started"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("batch 2/2"))),
        "{entries:#?}"
    );
    let reason = out
        .finished()
        .and_then(|f| f["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        reason.contains(detail) && reason.contains("rolled back to 1.0.0"),
        "{reason}"
    );
    // Slow answers are still answers: no request failed at all.
    stop_load(&rig, load, false);
    rig.wait_serving("1.0.0");
    assert_eq!(rig.app_status()["version"], "1.0.0");
}

/// The host's memory in bytes, from `/proc/meminfo`.
fn host_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_canary_using_too_much_memory_is_rolled_back_by_the_memory_check() {
    let rig = http_rig();
    let load = steady_load(&rig);
    // A limit of about 64 MiB, asked for as a share of the host's memory; the release holds
    // 160 MiB.
    #[allow(clippy::cast_precision_loss)]
    let share = format!(
        "{:.6}%",
        (64u64 << 20) as f64 / host_memory() as f64 * 100.0
    );
    let v2 = make_artifact(&rig.env, "2.0.0", "memory=160").unwrap();
    let flags = [
        "--strategy",
        "canary",
        "--step",
        "50:30s",
        "--step",
        "100:0s",
        "--analysis-interval",
        "500ms",
        "--max-memory",
        &share,
        "--drain-timeout",
        "2s",
    ];
    let out = rig.deploy("2.0.0", &v2, 2, &flags, "20s");
    assert_outcome(&rig, &out, 1, "rolled_back");
    let job = job_id(&out);
    let aborted = audit_events(&rig.env, "job.step")
        .unwrap()
        .into_iter()
        .find(|e| e["job_id"] == job.as_str() && e["step"] == "canary.aborted")
        .unwrap();
    let detail = aborted["detail"].as_str().unwrap();
    let held: u64 = detail
        .split(" holds ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{detail}"));
    assert!(held > 150 << 20, "the canary's resident memory: {detail}");
    assert!(
        detail.contains("bytes of memory (limit ") && detail.contains("% of the host's "),
        "{detail}"
    );
    let reason = out
        .finished()
        .and_then(|f| f["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(reason.contains("bytes of memory (limit "), "{reason}");
    stop_load(&rig, load, false);
    rig.wait_serving("1.0.0");
}
