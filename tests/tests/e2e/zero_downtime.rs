//! Zero-downtime deploys under load: rolling, blue-green and canary through the app's front
//! door (and through a real nginx), promote, abort, rollback within the scale-down delay, the
//! agent killed with SIGKILL in steady state and mid-deploy, and broken releases rolled back.
//!
//! Every test runs [`Load`] through the app's address the whole time and asserts that not one
//! request failed, and that new connections are answered by the expected version at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use gantry_tests::load::{LoadOptions, versions};
use gantry_tests::nginx::{self, Nginx};
use gantry_tests::{
    Agent, Controller, Load, LoadReport, Options, Output, TestEnv, audit_events, make_artifact,
    wait_until,
};

use crate::{deploy_args, mentions, strs};

/// Health flags of every deploy here; `deadline` is the health deadline.
fn health(deadline: &str) -> Vec<String> {
    [
        "--health",
        "http:/health",
        "--health-interval",
        "200ms",
        "--health-deadline",
        deadline,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// One test's world: the env, its agent and controller, and nginx when it is the router.
/// Fields drop in order: the agent and nginx before the env, which kills the rest.
pub(crate) struct Rig {
    nginx: Option<Nginx>,
    pub(crate) agent: Agent,
    /// Agents killed and replaced: kept until the end, because dropping an [`Agent`] kills
    /// every process of the test (the new agent, the instances and the front door too).
    retired: Vec<Agent>,
    pub(crate) ctl: Controller,
    pub(crate) env: TestEnv,
}

impl Rig {
    /// An agent whose `web` has up to `max_instances` instances behind the router of `options`,
    /// with v1.0.0 deployed on `instances` instances (rolling; nothing ran before).
    pub(crate) fn with_v1(options: Options, instances: u32) -> Rig {
        Rig::with_v1_on(options, instances, |_| ()).0
    }

    /// [`Rig::with_v1`], with `prepare` run on the environment before the agent starts (a
    /// filesystem mounted at its data dir, say); returns what it returned.
    pub(crate) fn with_v1_on<T>(
        options: Options,
        instances: u32,
        prepare: impl FnOnce(&TestEnv) -> T,
    ) -> (Rig, T) {
        let env = TestEnv::with_options(options).unwrap();
        let prepared = prepare(&env);
        let nginx = env.nginx.as_ref().map(|_| Nginx::start(&env).unwrap());
        let agent = Agent::start(&env).unwrap();
        let ctl = Controller::new(&env, &agent);
        let rig = Rig {
            nginx,
            agent,
            retired: Vec::new(),
            ctl,
            env,
        };
        let v1 = make_artifact(&rig.env, "1.0.0", "").unwrap();
        let out = rig.deploy("1.0.0", &v1, instances, &["--strategy", "rolling"], "20s");
        out.assert_code(0);
        rig.wait_serving("1.0.0");
        (rig, prepared)
    }

    fn front_door(instances: u16) -> Rig {
        Rig::with_v1(Options::front_door(4), u32::from(instances))
    }

    /// Starts a new agent on the same config (after [`Agent::kill_9`]) and points the
    /// controller at it.
    pub(crate) fn restart_agent(&mut self) {
        let agent = Agent::start(&self.env).unwrap();
        self.retired.push(std::mem::replace(&mut self.agent, agent));
        self.ctl = Controller::new(&self.env, &self.agent);
    }

    /// The app's address (front door or nginx).
    pub(crate) fn listen(&self) -> std::net::SocketAddr {
        self.env.listen.unwrap()
    }

    fn key(&self) -> String {
        self.env.keys.deployer.key.to_string_lossy().into_owned()
    }

    pub(crate) fn deploy_args(
        &self,
        version: &str,
        artifact: &Path,
        instances: u32,
        strategy: &[&str],
        deadline: &str,
    ) -> Vec<String> {
        let instances = instances.to_string();
        let health = health(deadline);
        let flags: Vec<&str> = ["--instances", instances.as_str()]
            .into_iter()
            .chain(strategy.iter().copied())
            .chain(strs(&health))
            .collect();
        deploy_args(&self.env.keys.deployer, version, artifact, &flags)
    }

    /// `gantry deploy` of `version` with the strategy flags `strategy`, waiting for the end.
    pub(crate) fn deploy(
        &self,
        version: &str,
        artifact: &Path,
        instances: u32,
        strategy: &[&str],
        deadline: &str,
    ) -> Output {
        let args = self.deploy_args(version, artifact, instances, strategy, deadline);
        self.ctl.run(&strs(&args)).unwrap()
    }

    /// [`Rig::deploy`] of a new v2.0.0 artifact on `instances` instances, health deadline 20s,
    /// in a thread.
    pub(crate) fn deploy_v2_in_background(
        &self,
        instances: u32,
        strategy: &[&str],
    ) -> JoinHandle<Output> {
        let v2 = make_artifact(&self.env, "2.0.0", "").unwrap();
        let args = self.deploy_args("2.0.0", &v2, instances, strategy, "20s");
        let ctl = self.ctl.clone();
        thread::spawn(move || ctl.run(&strs(&args)).unwrap())
    }

    /// `gantry promote|abort|rollback --app web`, plus `extra`.
    pub(crate) fn action(&self, action: &str, extra: &[&str]) -> Output {
        let key = self.key();
        let mut args = vec![action, "--key", &key, "--app", "web"];
        args.extend(extra);
        self.ctl.run(&args).unwrap()
    }

    /// Waits until 10 requests in a row over new connections are answered by `version`.
    #[track_caller]
    pub(crate) fn wait_serving(&self, version: &str) {
        let mut last = None;
        let waited = wait_until(
            Duration::from_secs(20),
            &format!("{} serves only {version}", self.listen()),
            || {
                last = Some(versions(self.listen(), 10));
                matches!(&last, Some(Ok(v)) if v.len() == 1 && v.contains_key(version))
            },
        );
        if let Err(e) = waited {
            panic!(
                "{e}; last answers: {last:?}\n{}{}",
                self.agent.log_tail(),
                self.nginx.as_ref().map(Nginx::log_tail).unwrap_or_default()
            );
        }
    }

    /// `web` in `gantry status --json`.
    pub(crate) fn app_status(&self) -> serde_json::Value {
        let out = self.ctl.run(&["status", "--json"]).unwrap();
        out.assert_code(0);
        let status: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{}", out.stdout));
        status["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == "web").cloned())
            .unwrap_or_else(|| panic!("no app web in {}", out.stdout))
    }

    /// The agent's and nginx's log tails, for failure messages.
    pub(crate) fn diag(&self) -> String {
        format!(
            "{}\n{}",
            self.agent.log_tail(),
            self.nginx.as_ref().map(Nginx::log_tail).unwrap_or_default()
        )
    }

    /// Load through the app's address.
    pub(crate) fn load(&self) -> Load {
        let load = Load::start(LoadOptions::new(self.listen()));
        load.wait_for_more(30, Duration::from_secs(10)).unwrap();
        load
    }
}

/// The `step` names of a `--json` run's `{"type":"step"}` events.
pub(crate) fn steps(out: &Output) -> Vec<String> {
    out.json_lines()
        .iter()
        .filter(|e| e["type"] == "step")
        .filter_map(|e| e["step"].as_str().map(str::to_owned))
        .collect()
}

/// The job id in a run's finished event.
pub(crate) fn job_id(out: &Output) -> String {
    out.finished()
        .and_then(|f| f["job_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no finished event with a job_id\n{}", out.all()))
}

#[track_caller]
pub(crate) fn assert_outcome(rig: &Rig, out: &Output, code: i32, outcome: &str) {
    assert!(
        out.code == code && out.outcome().as_deref() == Some(outcome),
        "expected exit {code} and outcome {outcome}, got exit {} and {:?}\n--- stdout\n{}\n--- stderr\n{}\n{}",
        out.code,
        out.outcome(),
        out.stdout,
        out.stderr,
        rig.diag()
    );
}

/// The job's `job.accepted` entry names `strategy`.
#[track_caller]
fn assert_audited_strategy(env: &TestEnv, job: &str, strategy: &str) {
    let accepted = audit_events(env, "job.accepted").unwrap();
    let entry = accepted
        .iter()
        .find(|e| e["job_id"] == job)
        .unwrap_or_else(|| panic!("no job.accepted for {job}: {accepted:?}"));
    assert_eq!(entry["strategy"], strategy, "{entry}");
}

/// Stops the load once it has run `grace` past `done` and got some more answers, and checks:
/// no failed request, and only `version` answered new connections made `grace` or later after
/// `done`. Failure messages carry the agent's (and nginx's) log.
#[track_caller]
fn finish_load(
    rig: &Rig,
    load: Load,
    done: Duration,
    grace: Duration,
    version: &str,
) -> LoadReport {
    let more = |load: &Load| {
        load.wait_for_more(50, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}\n{}", rig.diag()));
    };
    more(&load);
    while load.elapsed() < done + grace + Duration::from_millis(500) {
        more(&load);
    }
    let report = load.stop();
    eprintln!("{}", report.summary());
    assert!(
        report.failed == 0 && report.ok > 0,
        "requests failed through {}\n{}\n{}",
        rig.listen(),
        report.summary(),
        rig.diag()
    );
    let after = report.versions_since(done + grace, true);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        [version],
        "new connections after the job ended were answered by {after:?}\n{}",
        report.summary()
    );
    report
}

/// Both versions answered during the run.
#[track_caller]
fn assert_saw_both(report: &LoadReport) {
    for v in ["1.0.0", "2.0.0"] {
        assert!(
            report.versions.contains_key(v),
            "{v} never answered\n{}",
            report.summary()
        );
    }
}

const NO_GRACE: Duration = Duration::ZERO;

/// Deploys v2.0.0 on `instances` instances with the strategy flags `strategy` under load
/// through the app's address, and checks: exit 0 with outcome `succeeded`, no failed request,
/// only v2.0.0 answering new connections `grace` after the job, and both versions seen.
#[track_caller]
fn v2_under_load(
    rig: &Rig,
    instances: u32,
    strategy: &[&str],
    grace: Duration,
) -> (Output, LoadReport) {
    let load = rig.load();
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    let out = rig.deploy("2.0.0", &v2, instances, strategy, "20s");
    let done = load.elapsed();
    assert_outcome(rig, &out, 0, "succeeded");
    let report = finish_load(rig, load, done, grace, "2.0.0");
    assert_saw_both(&report);
    (out, report)
}

/// Checks a run that ended with the load at `done` was rolled back: exit 1 with outcome
/// `rolled_back`, its job audited as `job.rolled_back`, no failed request, and v1.0.0 answering
/// and reported by status. Returns `web`'s status.
#[track_caller]
fn assert_rolled_back_to_v1(
    rig: &Rig,
    out: &Output,
    load: Load,
    done: Duration,
) -> serde_json::Value {
    assert_outcome(rig, out, 1, "rolled_back");
    let job = job_id(out);
    assert!(
        audit_events(&rig.env, "job.rolled_back")
            .unwrap()
            .iter()
            .any(|e| e["job_id"] == job.as_str()),
        "no job.rolled_back for {job}"
    );
    finish_load(rig, load, done, NO_GRACE, "1.0.0");
    let app = rig.app_status();
    assert_eq!(app["version"], "1.0.0", "{app}");
    app
}

/// `steps` has a `step` step.
#[track_caller]
pub(crate) fn assert_step(steps: &[String], step: &str) {
    assert!(steps.iter().any(|s| s == step), "no {step} step: {steps:?}");
}

// ---- rolling ---------------------------------------------------------------------------

fn rolling(instances: u16, batch: &str) {
    let rig = Rig::front_door(instances);
    let (out, _) = v2_under_load(
        &rig,
        u32::from(instances),
        &[
            "--strategy",
            "rolling",
            "--batch",
            batch,
            "--min-healthy-time",
            "1s",
            "--drain-timeout",
            "5s",
        ],
        NO_GRACE,
    );
    let steps = steps(&out);
    let batches = steps.iter().filter(|s| *s == "batch.started").count();
    let per_batch = if let Some(pct) = batch.strip_suffix('%') {
        (usize::from(instances) * pct.parse::<usize>().unwrap()).div_ceil(100)
    } else {
        batch.parse().unwrap()
    };
    assert_eq!(
        batches,
        usize::from(instances).div_ceil(per_batch),
        "batch.started events: {steps:?}"
    );
    assert_step(&steps, "backend.draining");
    assert_audited_strategy(&rig.env, &job_id(&out), "rolling");
    let app = rig.app_status();
    assert_eq!(app["version"], "2.0.0", "{app}");
    assert_eq!(
        app["instances"].as_array().map(Vec::len),
        Some(usize::from(instances)),
        "{app}"
    );
}

#[test]
fn rolling_two_instances_batch_1_loses_no_request() {
    rolling(2, "1");
}

#[test]
fn rolling_four_instances_batch_50_percent_loses_no_request() {
    rolling(4, "50%");
}

// ---- blue-green ------------------------------------------------------------------------

#[test]
fn blue_green_with_a_preview_switches_without_losing_a_request() {
    let rig = Rig::front_door(2);
    let before = rig.app_status();
    let (out, _) = v2_under_load(
        &rig,
        2,
        &[
            "--strategy",
            "blue-green",
            "--preview-weight",
            "10",
            "--preview",
            "2s",
            "--scale-down-delay",
            "30s",
        ],
        NO_GRACE,
    );
    assert_step(&steps(&out), "traffic.switched");
    assert_audited_strategy(&rig.env, &job_id(&out), "blue-green");
    let after = rig.app_status();
    assert_ne!(
        after["active_slot"], before["active_slot"],
        "the active slot did not change: before {before}\nafter {after}"
    );
    assert!(
        after["active_slot"] == "blue" || after["active_slot"] == "green",
        "{after}"
    );
}

#[test]
fn rollback_within_the_scale_down_delay_switches_back_to_the_running_old_slot() {
    let rig = Rig::front_door(2);
    let load = rig.load();
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    let out = rig.deploy(
        "2.0.0",
        &v2,
        2,
        &["--strategy", "blue-green", "--scale-down-delay", "60s"],
        "20s",
    );
    assert_outcome(&rig, &out, 0, "succeeded");
    rig.wait_serving("2.0.0");
    // The old slot still runs: its instances' pids, to show the rollback reuses them.
    let v1_pids = |app: &serde_json::Value| instance_pids(app, Some("1.0.0"));
    let standby = v1_pids(&rig.app_status());
    assert_eq!(
        standby.len(),
        2,
        "the v1 slot is not kept running: {}",
        rig.app_status()
    );

    let rollback = rig.action("rollback", &["--json"]);
    let done = load.elapsed();
    rollback.assert_code(0);
    finish_load(&rig, load, done, NO_GRACE, "1.0.0");
    let app = rig.app_status();
    assert_eq!(app["version"], "1.0.0", "{app}");
    assert_eq!(
        v1_pids(&app),
        standby,
        "the rollback restarted v1 instead of switching back to its running slot: {app}"
    );
}

// ---- canary ----------------------------------------------------------------------------

#[test]
fn canary_steps_to_100_percent_without_losing_a_request() {
    let rig = Rig::front_door(2);
    let (out, _) = v2_under_load(
        &rig,
        2,
        &[
            "--strategy",
            "canary",
            "--step",
            "20:2s",
            "--step",
            "50:2s",
            "--step",
            "100:0s",
            "--analysis-interval",
            "500ms",
            "--drain-timeout",
            "2s",
        ],
        NO_GRACE,
    );
    let steps = steps(&out);
    assert!(
        steps.iter().filter(|s| *s == "canary.step").count() >= 2,
        "canary.step events: {steps:?}"
    );
    assert_audited_strategy(&rig.env, &job_id(&out), "canary");
}

/// Starts a canary paused at 50% until promoted; returns once both versions answer new
/// connections and status says it waits.
fn paused_canary(rig: &Rig, load: &Load) -> JoinHandle<Output> {
    let deploy = rig.deploy_v2_in_background(
        2,
        &[
            "--strategy",
            "canary",
            "--step",
            "50:promote",
            "--step",
            "100:0s",
            "--analysis-interval",
            "500ms",
            "--drain-timeout",
            "2s",
        ],
    );
    let mut rollout = String::new();
    wait_until(
        Duration::from_secs(30),
        "status says the canary waits for promote",
        || {
            rollout = rig.app_status()["rollout"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            mentions(&rollout, &["promote", "paused"]) || deploy.is_finished()
        },
    )
    .unwrap_or_else(|e| panic!("{e}; rollout {rollout:?}\n{}", rig.agent.log_tail()));
    assert!(
        !deploy.is_finished(),
        "the deploy ended instead of pausing: {}",
        deploy.join().unwrap().all()
    );
    let since = load.elapsed();
    load.wait_for_version("2.0.0", Duration::from_secs(10))
        .unwrap();
    load.wait_for_more(100, Duration::from_secs(10)).unwrap();
    let seen = load.snapshot().versions_since(since, true);
    assert!(
        seen.contains_key("1.0.0") && seen.contains_key("2.0.0"),
        "at 50% both versions answer new connections: {seen:?}"
    );
    deploy
}

/// Under load, a canary paused at 50% ([`paused_canary`]), then `gantry <action> --json`
/// (exit 0) and the deploy's end: its output, the load, and when the deploy ended.
fn paused_canary_then(rig: &Rig, action: &str) -> (Output, Load, Duration) {
    let load = rig.load();
    let deploy = paused_canary(rig, &load);
    rig.action(action, &["--json"]).assert_code(0);
    let out = deploy.join().unwrap();
    let done = load.elapsed();
    (out, load, done)
}

#[test]
fn canary_paused_at_50_percent_continues_on_promote() {
    let rig = Rig::front_door(2);
    let (out, load, done) = paused_canary_then(&rig, "promote");
    assert_outcome(&rig, &out, 0, "succeeded");
    assert_step(&steps(&out), "rollout.paused");
    finish_load(&rig, load, done, NO_GRACE, "2.0.0");
    assert_eq!(rig.app_status()["version"], "2.0.0");
}

#[test]
fn canary_abort_returns_all_traffic_to_the_old_version() {
    let rig = Rig::front_door(2);
    let (out, load, done) = paused_canary_then(&rig, "abort");
    let app = assert_rolled_back_to_v1(&rig, &out, load, done);
    assert!(
        app["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|i| i["version"] == "1.0.0"),
        "canary instances still run after the abort: {app}"
    );
}

/// Issue "Re-cut the agent core": a state file that cannot be written after a canary's
/// rollback is said in the job's record (`state.persist_failed`, with the file and the cause),
/// never dropped; service is restored all the same. A directory where the state write's temp
/// file goes makes the write fail, for root too.
#[test]
fn a_state_write_that_fails_after_a_canary_abort_is_on_record_and_service_is_restored() {
    let rig = Rig::front_door(2);
    let load = rig.load();
    let deploy = paused_canary(&rig, &load);
    let pid = rig.agent.pid().expect("the agent runs");
    let blocker = rig
        .env
        .data_dir
        .join(format!("apps/web/.state.json.tmp-{pid}"));
    std::fs::create_dir(&blocker).unwrap();
    rig.action("abort", &["--json"]).assert_code(0);
    let out = deploy.join().unwrap();
    let done = load.elapsed();
    assert_step(&steps(&out), "state.persist_failed");
    assert!(
        out.stdout.contains("state.json") && out.stdout.contains("Is a directory"),
        "the step names the file and the cause: {}",
        out.all()
    );
    assert_rolled_back_to_v1(&rig, &out, load, done);
    let noted = audit_events(&rig.env, "job.step").unwrap();
    assert!(
        noted
            .iter()
            .any(|e| e["step"] == "state.persist_failed" && e["job_id"] == job_id(&out).as_str()),
        "the failed state write is in the audit log: {noted:?}"
    );
    std::fs::remove_dir(&blocker).unwrap();
}

/// The ports the router sends new connections to (weight above 0), sorted.
fn serving_ports(app: &serde_json::Value) -> Vec<u64> {
    let mut ports: Vec<u64> = app["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["weight"].as_u64().is_some_and(|w| w > 0))
        .filter_map(|b| b["addr"].as_str()?.rsplit(':').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports
}

/// The ports of `version`'s instances, sorted.
fn instance_ports(app: &serde_json::Value, version: &str) -> Vec<u64> {
    let mut ports: Vec<u64> = app["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["version"] == version)
        .filter_map(|i| i["port"].as_u64())
        .collect();
    ports.sort_unstable();
    ports
}

/// Issue "Defects found by trying Gantry" (4): a full disk mid-rollout. The canary fails
/// while no route table or state can be written ("restoring the stable backends failed");
/// once space returns the agent converges the app by itself (v1 serves alone, the canary's
/// instances stop), the job has exactly one end entry, and a restart adds no second one.
#[test]
fn a_canary_failing_on_a_full_disk_converges_once_space_returns_with_one_end_entry() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED a_canary_failing_on_a_full_disk: mounting a tmpfs needs root");
        return;
    }
    let (mut rig, mounted) = Rig::with_v1_on(Options::front_door(4), 2, |env| {
        std::fs::create_dir(&env.data_dir).unwrap();
        gantry_tests::diskfull::Tmpfs::mount(&env.data_dir, "512m", 0o711)
    });
    let _mounted = match mounted {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED a_canary_failing_on_a_full_disk: cannot mount a tmpfs: {e}");
            return;
        }
    };
    let load = rig.load();
    let deploy = paused_canary(&rig, &load);
    let canary = instance_pids(&rig.app_status(), Some("2.0.0"));
    assert_eq!(canary.len(), 1, "one canary instance");

    let filler = rig.env.data_dir.join("filler");
    gantry_tests::diskfull::fill(&filler);
    // The canary crashes: its analysis (no restarts allowed) aborts it, and nothing can be
    // written to bring the stable backends back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(canary[0]).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = deploy.join().unwrap();
    out.assert_code(1);
    let job = job_id(&out);
    assert!(
        out.all().contains("restoring the stable backends failed")
            && out.all().contains("No space left on device"),
        "the failure names the full disk: {}",
        out.all()
    );

    std::fs::remove_file(&filler).unwrap();
    let mut app = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(60),
        "v1 serves alone once space returns",
        || {
            app = rig.app_status();
            instance_pids(&app, Some("2.0.0")).is_empty()
                && !serving_ports(&app).is_empty()
                && serving_ports(&app) == instance_ports(&app, "1.0.0")
                && app["rollout"].as_str().is_none_or(str::is_empty)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {app}\n{}", rig.diag()));
    assert_eq!(app["version"], "1.0.0", "{app}");
    assert_eq!(instance_pids(&app, Some("1.0.0")).len(), 2, "{app}");
    let started = audit_events(&rig.env, "recovery.started").unwrap();
    let started: Vec<&serde_json::Value> = started
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("failed write"))
        })
        .collect();
    let succeeded = audit_events(&rig.env, "recovery.succeeded").unwrap();
    assert!(
        started
            .iter()
            .any(|s| succeeded.iter().any(|e| e["job_id"] == s["job_id"])),
        "the convergence after the failed write is on record: {started:?} {succeeded:?}"
    );
    load.stop();

    let ends = |env: &TestEnv| -> Vec<String> {
        [
            "job.succeeded",
            "job.failed",
            "job.rolled_back",
            "job.interrupted",
        ]
        .into_iter()
        .flat_map(|event| audit_events(env, event).unwrap())
        .filter(|e| e["job_id"] == job.as_str())
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
    };
    assert_eq!(ends(&rig.env), ["job.failed"], "exactly one end entry");
    rig.agent.kill_9().unwrap();
    rig.restart_agent();
    rig.wait_serving("1.0.0");
    assert_eq!(
        ends(&rig.env),
        ["job.failed"],
        "a restart does not end the job a second time"
    );
}

// ---- the agent killed ------------------------------------------------------------------

fn front_door_pid(env: &TestEnv) -> Option<u64> {
    let state = std::fs::read(env.data_dir.join("apps/web/state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&state).ok()?;
    state["front_door"]["pid"].as_u64()
}

/// The sorted pids of `app`'s instances, only those of `version` when given.
fn instance_pids(app: &serde_json::Value, version: Option<&str>) -> Vec<u64> {
    let mut pids: Vec<u64> = app["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| version.is_none_or(|v| i["version"] == v))
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    pids.sort_unstable();
    pids
}

#[test]
fn agent_killed_in_steady_state_leaves_the_app_serving_and_is_adopted_on_restart() {
    let mut rig = Rig::front_door(2);
    let before = rig.app_status();
    let door = front_door_pid(&rig.env);
    assert!(door.is_some(), "state.json records no front door pid");
    let load = rig.load();
    rig.agent.kill_9().unwrap();
    let door_alive = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    // Two seconds of traffic with no agent at all; a front door dying with the agent would be
    // gone (or a zombie) by then.
    load.wait_for_more(200, Duration::from_secs(10)).unwrap();
    assert!(
        door.is_some_and(door_alive),
        "the front door (pid {door:?}) did not outlive the agent\n{}",
        rig.diag()
    );
    rig.restart_agent();
    load.wait_for_more(50, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("after the agent's restart: {e}\n{}", rig.diag()));
    let done = load.elapsed();
    finish_load(&rig, load, done, NO_GRACE, "1.0.0");

    let after = rig.app_status();
    assert_eq!(after["version"], "1.0.0", "{after}");
    assert_eq!(
        instance_pids(&after, None),
        instance_pids(&before, None),
        "instances were not adopted"
    );
    assert_eq!(
        front_door_pid(&rig.env),
        door,
        "the front door was replaced"
    );
    assert_eq!(
        after["listen"],
        rig.listen().to_string(),
        "status shows no front door: {after}"
    );
    let backends = after["backends"].as_array().cloned().unwrap_or_default();
    assert!(
        backends.len() >= 2
            && backends
                .iter()
                .any(|b| b["total_connections"].as_u64() > Some(0)),
        "status shows no backends with counters: {after}"
    );
}

#[test]
fn agent_killed_mid_rolling_deploy_loses_no_request_and_the_job_ends_interrupted() {
    let mut rig = Rig::front_door(4);
    let load = rig.load();
    let deploy = rig.deploy_v2_in_background(
        4,
        &[
            "--strategy",
            "rolling",
            "--batch",
            "1",
            "--min-healthy-time",
            "2s",
            "--drain-timeout",
            "5s",
        ],
    );
    // Mid-deploy: the first new instance answers, the others are still v1.
    load.wait_for_version("2.0.0", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.log_tail()));
    assert!(!deploy.is_finished(), "the deploy finished too soon");
    rig.agent.kill_9().unwrap();
    load.wait_for_more(100, Duration::from_secs(10)).unwrap();
    let job = audit_events(&rig.env, "job.accepted")
        .unwrap()
        .into_iter()
        .find(|e| e["version"] == "2.0.0")
        .map(|e| e["job_id"].clone())
        .expect("the v2 job was accepted");

    rig.restart_agent();
    wait_until(
        Duration::from_secs(30),
        "the v2 job is recorded as interrupted",
        || {
            audit_events(&rig.env, "job.interrupted")
                .is_ok_and(|i| i.iter().any(|e| e["job_id"] == job))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.log_tail()));
    // Whatever the agent does on restart (finish or return to the last good version), it ends
    // with one version answering, the one status reports.
    let mut last = (String::new(), BTreeMap::new());
    wait_until(
        Duration::from_secs(30),
        "one version answers, the one status reports",
        || {
            let app = rig.app_status();
            let version = app["version"].as_str().unwrap_or("").to_owned();
            let idle = app["active_job_id"].as_str().unwrap_or("").is_empty();
            let seen = versions(rig.listen(), 10).unwrap_or_default();
            let ok = idle && seen.len() == 1 && seen.contains_key(&version);
            last = (version, seen);
            ok
        },
    )
    .unwrap_or_else(|e| panic!("{e}; last: {last:?}\n{}", rig.agent.log_tail()));
    let done = load.elapsed();
    let version = last.0;
    assert!(
        version == "1.0.0" || version == "2.0.0",
        "status version {version}"
    );
    // The convergence drained with the interrupted deploy's --drain-timeout 5s, not the 30 s
    // default: its last route table says so.
    let routes = rig.env.data_dir.join("apps/web/traffic/routes.json");
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&routes).unwrap()).unwrap();
    assert_eq!(table["drain_timeout_ms"], 5000, "{table}");
    finish_load(&rig, load, done, NO_GRACE, &version);
    let interrupted = deploy.join().unwrap();
    assert_ne!(interrupted.code, 0, "{}", interrupted.all());
}

// ---- broken releases -------------------------------------------------------------------

/// Deploys a v2.0.0 that misbehaves in `mode` with `strategy` under load; the agent must roll
/// back (exit 1) with no failed request and v1.0.0 answering.
fn broken_release(strategy: &[&str], mode: &str) {
    let rig = Rig::front_door(2);
    let load = rig.load();
    let v2 = make_artifact(&rig.env, "2.0.0", mode).unwrap();
    let out = rig.deploy("2.0.0", &v2, 2, strategy, "4s");
    let done = load.elapsed();
    assert_rolled_back_to_v1(&rig, &out, load, done);
}

const ROLLING: &[&str] = &[
    "--strategy",
    "rolling",
    "--batch",
    "1",
    "--min-healthy-time",
    "3s",
    "--drain-timeout",
    "2s",
];
const BLUE_GREEN: &[&str] = &[
    "--strategy",
    "blue-green",
    "--preview-weight",
    "20",
    "--preview",
    "4s",
];
const CANARY: &[&str] = &[
    "--strategy",
    "canary",
    "--step",
    "50:5s",
    "--step",
    "100:0s",
    "--analysis-interval",
    "500ms",
    "--max-probe-failures",
    "2",
    "--max-restarts",
    "0",
    "--drain-timeout",
    "2s",
];

#[test]
fn rolling_rolls_back_a_release_crashing_at_start() {
    broken_release(ROLLING, "crash-at-start");
}

#[test]
fn rolling_rolls_back_a_never_healthy_release() {
    broken_release(ROLLING, "never-healthy");
}

#[test]
fn rolling_rolls_back_a_release_too_slow_to_start() {
    broken_release(ROLLING, "slow-start=30");
}

#[test]
fn rolling_rolls_back_a_release_unhealthy_within_min_healthy_time() {
    broken_release(ROLLING, "unhealthy-after=1");
}

#[test]
fn blue_green_rolls_back_a_release_crashing_at_start() {
    broken_release(BLUE_GREEN, "crash-at-start");
}

#[test]
fn blue_green_rolls_back_a_release_too_slow_to_start() {
    broken_release(BLUE_GREEN, "slow-start=30");
}

#[test]
fn blue_green_rolls_back_a_release_unhealthy_during_preview() {
    broken_release(BLUE_GREEN, "unhealthy-after=1");
}

#[test]
fn blue_green_rolls_back_a_release_crashing_under_preview_load() {
    broken_release(BLUE_GREEN, "crash-under-load=10");
}

#[test]
fn canary_rolls_back_a_never_healthy_release() {
    broken_release(CANARY, "never-healthy");
}

#[test]
fn canary_rolls_back_a_release_unhealthy_after_its_start() {
    broken_release(CANARY, "unhealthy-after=1");
}

#[test]
fn canary_rolls_back_a_release_crashing_under_load() {
    broken_release(CANARY, "crash-under-load=20");
}

// ---- nginx instead of the front door ---------------------------------------------------

fn nginx_missing() -> bool {
    if nginx::binary().is_none() {
        eprintln!(
            "SKIPPED: nginx is not installed (apt-get install nginx-light); the nginx router is \
             not tested"
        );
        return true;
    }
    false
}

/// nginx applies a reload a few milliseconds after the command returns; new connections made
/// this long after the job ended must reach the new version.
const NGINX_GRACE: Duration = Duration::from_secs(1);

#[test]
fn nginx_blue_green_switch_loses_no_request() {
    if nginx_missing() {
        return;
    }
    let rig = Rig::with_v1(Options::nginx(2), 2);
    v2_under_load(
        &rig,
        2,
        &["--strategy", "blue-green", "--scale-down-delay", "30s"],
        NGINX_GRACE,
    );
    let upstream = std::fs::read_to_string(&rig.env.nginx.as_ref().unwrap().upstream).unwrap();
    assert!(
        upstream.contains("gantry-route-table"),
        "the agent did not write nginx's upstream file:\n{upstream}"
    );
}

#[test]
fn nginx_rolling_deploy_loses_no_request() {
    if nginx_missing() {
        return;
    }
    let rig = Rig::with_v1(Options::nginx(2), 2);
    v2_under_load(
        &rig,
        2,
        &[
            "--strategy",
            "rolling",
            "--batch",
            "1",
            "--drain-timeout",
            "2s",
        ],
        NGINX_GRACE,
    );
}

/// Issue: SIGTERM during a rollout orphaned it: `systemctl stop` at a canary's 50% step
/// recorded `job.interrupted`, and after the restart nothing converged; the canary kept half
/// the traffic with no job. A graceful stop now leaves the same convergence as a crash, with
/// one final entry for the job, and no request fails through it all.
#[test]
fn sigterm_at_a_canary_step_converges_after_the_restart_like_a_crash() {
    let mut rig = Rig::front_door(2);
    let load = rig.load();
    let deploy = paused_canary(&rig, &load);
    let job = audit_events(&rig.env, "job.accepted")
        .unwrap()
        .into_iter()
        .find(|e| e["version"] == "2.0.0")
        .map(|e| e["job_id"].clone())
        .expect("the canary was accepted");
    rig.agent.terminate().unwrap();
    rig.restart_agent();
    wait_until(
        Duration::from_secs(30),
        "the restarted agent converged the app",
        || audit_events(&rig.env, "recovery.succeeded").is_ok_and(|r| !r.is_empty()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.log_tail()));
    rig.wait_serving("1.0.0");
    let finals: Vec<String> = [
        "job.succeeded",
        "job.failed",
        "job.rolled_back",
        "job.interrupted",
    ]
    .into_iter()
    .flat_map(|event| {
        audit_events(&rig.env, event)
            .unwrap()
            .into_iter()
            .filter(|e| e["job_id"] == job)
            .map(move |_| event.to_owned())
    })
    .collect();
    assert_eq!(
        finals,
        ["job.interrupted"],
        "one final entry for the canary job"
    );
    let done = load.elapsed();
    finish_load(&rig, load, done, NO_GRACE, "1.0.0");
    let out = deploy.join().unwrap();
    assert_ne!(out.code, 0, "{}", out.all());
}

/// Issue: `gantry restart` on an app behind its front door stopped every instance at once and
/// dropped requests. It now restarts one instance at a time out of rotation, as rolling does:
/// every instance is new and not one request fails.
#[test]
fn restart_behind_the_front_door_replaces_one_instance_at_a_time_without_losing_a_request() {
    let rig = Rig::front_door(2);
    // A release deployed with a short drain timeout, which the restart honours: the load's
    // keep-alive connections hold each instance until then.
    let v11 = make_artifact(&rig.env, "1.1.0", "").unwrap();
    let rolling = ["--strategy", "rolling", "--drain-timeout", "1s"];
    rig.deploy("1.1.0", &v11, 2, &rolling, "20s").assert_code(0);
    rig.wait_serving("1.1.0");
    let load = rig.load();
    let before = instance_pids(&rig.app_status(), Some("1.1.0"));
    assert_eq!(before.len(), 2, "{}", rig.app_status());
    let out = rig.action("restart", &["--json"]);
    out.assert_code(0);
    let done = load.elapsed();
    finish_load(&rig, load, done, NO_GRACE, "1.1.0");
    let after = instance_pids(&rig.app_status(), Some("1.1.0"));
    assert_eq!(after.len(), 2, "{}", rig.app_status());
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "not every instance was restarted: {before:?} -> {after:?}"
    );
    assert!(
        steps(&out).iter().any(|s| s == "backend.draining"),
        "restarted without taking instances out of rotation: {:?}",
        steps(&out)
    );
}
