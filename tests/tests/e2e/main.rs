//! End-to-end tests: the real `gantry-agent` and `gantry` binaries on loopback, with PKI made
//! per test, deploying the real sample app. Run `cargo build --workspace --bins` first.
//!
//! * `cli`: quickstart and the agent's local commands.
//! * `controller`: the `gantry` CLI's errors, `--json` errors, `--detach`, `history`,
//!   `status --watch`, completions and man pages.
//! * `deploy`: hot deploys, automatic rollback of broken releases, `gantry rollback`.
//! * `admission`: every rejection, each with exit code 3, its cause and an audit entry.
//! * `audit`: `gantry-agent audit verify` finds each kind of tampering and names the seq.
//! * `gates`: `gate evaluate` on real reports; environments refusing pre-releases and jobs
//!   without passed, ci-signed evidence.
//! * `faults`: kill -9 of the agent, hostile and mismatched artifacts.
//! * `artifact_resume`: an upload cut by kill -9 of the agent or of `gantry` resumes at the
//!   byte the agent holds.
//! * `flags`: feature flags pushed, killed, refused and served over OFREP.
//! * `fleet_service`: the controller service over six agents in rings: order and bakes from
//!   the agents' logs, a failing ring rolled back, kill -9 of the service resumed, replicas.
//! * `fleet_signals`: `rollout status` shows each host's golden signals, read live from its
//!   agent, and why a host has none when its agent is gone.
//! * `handshake`: client certificates the listener refuses before any RPC, each logged.
//! * `attacks`: one test per attack on the trust model (replay, downgrade, witness, quorum …).
//! * `security`: file permissions, a full audit disk, a deployed child's privileges.
//! * `monitoring`: the front door in HTTP mode under load; canaries rolled back by error rate
//!   and p95 latency with the verdict's numbers audited, promoted when healthy, paused without
//!   traffic.
//! * `compare_stable`: `--compare stable`, the canary judged against the stable cohort: an
//!   error-prone canary rolled back, one as slow as stable promoted.
//! * `zero_downtime`: rolling, blue-green and canary under load through the front door and
//!   nginx; promote, abort, rollback; kill -9 of the agent; broken releases rolled back.

#![allow(
    clippy::unwrap_used,
    reason = "test code: an unwrap that fails is a failed test, and its message says why"
)]

mod admission;
mod artifact_resume;
mod attacks;
mod audit;
mod cli;
mod compare_stable;
mod controller;
mod dashboard;
mod deploy;
mod dialout;
mod dialout_bench;
mod dialout_hostile;
mod faults;
mod flags;
mod fleet;
mod fleet_flags;
mod fleet_service;
mod fleet_signals;
mod gates;
mod handshake;
mod monitoring;
mod prometheus_gate;
mod promotion;
mod security;
mod status_signals;
mod strategy_analysis;
mod zero_downtime;

use std::fs;
use std::path::Path;
use std::time::Duration;

use gantry_tests::{Controller, KeyPair, Output, TestEnv, banner, wait_until};

/// `gantry deploy --key <key> --app web --version <version> --artifact <artifact>`, then
/// `flags`, then `--json -- bin/gantry-sample-app`.
fn deploy_args(key: &KeyPair, version: &str, artifact: &Path, flags: &[&str]) -> Vec<String> {
    let key = key.key.to_string_lossy();
    let artifact = artifact.to_string_lossy();
    let head = [
        "deploy",
        "--key",
        &key,
        "--app",
        "web",
        "--version",
        version,
        "--artifact",
        &artifact,
    ];
    head.iter()
        .chain(flags)
        .chain(&["--json", "--", "bin/gantry-sample-app"])
        .map(ToString::to_string)
        .collect()
}

/// `args` borrowed as the `&str`s [`Controller::run`] takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `gantry job create --out <out> --agent-id <the env's> --app web --version <version>
/// --artifact <artifact>`, then `rest`; it must succeed.
fn create_job(env: &TestEnv, out: &Path, version: &str, artifact: &Path, rest: &[&str]) {
    let out = out.to_string_lossy();
    let artifact = artifact.to_string_lossy();
    let mut args = vec![
        "job",
        "create",
        "--out",
        &out,
        "--agent-id",
        &env.agent_id,
        "--app",
        "web",
        "--version",
        version,
        "--artifact",
        &artifact,
    ];
    args.extend(rest);
    env.gantry(&args).unwrap().assert_code(0);
}

/// `gantry job sign --key <key> <job>`; it must succeed.
fn sign_job_file(env: &TestEnv, job: &Path, key: &KeyPair) {
    let key = key.key.to_string_lossy();
    env.gantry(&["job", "sign", "--key", &key, &job.to_string_lossy()])
        .unwrap()
        .assert_code(0);
}

/// What `<data_dir>/apps/web/releases` holds, sorted (nothing, when it does not exist).
fn releases(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.releases_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Deploys `version` of `web` from `artifact` with the hot strategy, `instances` instances, an
/// HTTP health check with `health_deadline`, and `--json` events.
fn deploy(
    ctl: &Controller,
    env: &TestEnv,
    version: &str,
    artifact: &Path,
    instances: u32,
    health_deadline: &str,
) -> Output {
    let instances = instances.to_string();
    let args = deploy_args(
        &env.keys.deployer,
        version,
        artifact,
        &[
            "--strategy",
            "hot",
            "--instances",
            &instances,
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
            "--health-deadline",
            health_deadline,
        ],
    );
    ctl.run(&strs(&args)).unwrap()
}

/// Waits until every one of the first `instances` ports of `web` answers `GET /` with
/// `web <version> instance <i>`.
#[track_caller]
fn assert_serves(env: &TestEnv, version: &str, instances: u16) {
    for i in 0..instances {
        let want = format!("web {version} instance {i}\n");
        let port = env.port(i);
        let mut last = None;
        let waited = wait_until(
            Duration::from_secs(10),
            &format!("port {port} serves {want:?}"),
            || {
                last = banner(port);
                last.as_deref() == Some(want.as_str())
            },
        );
        assert!(
            waited.is_ok(),
            "{}; last answer: {last:?}",
            waited.unwrap_err()
        );
    }
}

/// `out` exited 3 (a rejection) with a stderr that [`mentions`] one of `words`.
#[track_caller]
fn assert_exit_3_naming(out: &Output, words: &[&str]) {
    out.assert_code(3);
    assert!(
        mentions(&out.stderr, words),
        "stderr names none of {words:?}:\n{}",
        out.all()
    );
}

/// Lowercased `text` contains one of `words`.
fn mentions(text: &str, words: &[&str]) -> bool {
    let text = text.to_lowercase();
    words.iter().any(|w| text.contains(&w.to_lowercase()))
}

/// `text` names `seq {seq}` (and not, say, `seq {seq}0`).
fn names_seq(text: &str, seq: u64) -> bool {
    let needle = format!("seq {seq}");
    text.match_indices(&needle)
        .any(|(at, _)| !text[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The version `gantry status --json` reports for `app`: an object with `"name": app` and a
/// string `version`, or an `app` key holding an object with `version`, anywhere in the output.
fn status_version(out: &Output, app: &str) -> Option<String> {
    fn find(v: &serde_json::Value, app: &str) -> Option<String> {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("name").and_then(|n| n.as_str()) == Some(app)
                    && let Some(ver) = map.get("version").and_then(|v| v.as_str())
                {
                    return Some(ver.to_owned());
                }
                if let Some(ver) = map
                    .get(app)
                    .and_then(|a| a.get("version"))
                    .and_then(|v| v.as_str())
                {
                    return Some(ver.to_owned());
                }
                map.values().find_map(|v| find(v, app))
            }
            serde_json::Value::Array(items) => items.iter().find_map(|v| find(v, app)),
            _ => None,
        }
    }
    let whole = serde_json::from_str::<serde_json::Value>(out.stdout.trim()).ok();
    whole
        .into_iter()
        .chain(out.json_lines())
        .find_map(|v| find(&v, app))
}

#[test]
fn names_seq_matches_whole_numbers() {
    assert!(names_seq("audit log broken at seq 3: prev mismatch", 3));
    assert!(names_seq("seq 3", 3));
    assert!(!names_seq("seq 30: prev mismatch", 3));
    assert!(!names_seq("seq 13", 3));
}
