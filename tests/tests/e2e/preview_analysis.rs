//! Analysis of the blue-green preview on the front door's HTTP signals: under steady load, a
//! new release that answers 500s to part of its preview share is switched back by the
//! preview cohort's error rate, with the verdict in a `preview.failed` entry, and the stable
//! release loses no request.

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
