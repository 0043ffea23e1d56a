//! `gantry quickstart` and the agent's local operator commands.

use std::path::Path;
use std::time::Duration;

use gantry_tests::{TestEnv, bins, process};

use crate::{create_job, sign_job_file};

#[test]
fn quickstart_sets_up_a_local_agent_with_a_verifiable_audit_log() {
    let env = TestEnv::new().unwrap();
    let dir = env.root.join("qs");
    let mut cmd = env.command(&bins::path(bins::GANTRY).unwrap());
    cmd.arg("quickstart").arg("--dir").arg(&dir);
    let out = process::run(cmd, Duration::from_secs(600)).unwrap();
    out.assert_code(0);
    for p in [
        "agent.toml",
        "pki",
        "keys/deployer.key",
        "keys/deployer.pub",
        "keys/agent.key",
        "keys/agent.pub",
        "keys/release-manager.key",
        "keys/on-call.key",
        "data/audit",
    ] {
        assert!(
            dir.join(p).exists(),
            "quickstart did not create {p}\n{}",
            out.all()
        );
    }
    // It ends with the sample app's flag: pushed, released to everyone, then killed; its page
    // shows each in turn.
    let shown: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("banner: ") && !l.contains("reason ERROR"))
        .collect();
    assert_eq!(
        shown,
        [
            "banner: Welcome (variant classic, reason STATIC)",
            "banner: Welcome to the new sample (variant new, reason TARGETING_MATCH)",
            "banner: Welcome (variant classic, reason DISABLED)",
        ],
        "{}",
        out.all()
    );
    assert!(
        out.stdout
            .contains("flags of sample on quickstart-agent: version 3 in force (changed banner), signed by on-call"),
        "{}",
        out.all()
    );
    let config = std::fs::read_to_string(dir.join("agent.toml")).unwrap();
    assert!(config.contains("[apps.sample.flags]"), "{config}");
    let audit = dir.join("data/audit").to_string_lossy().into_owned();
    let pubkey = dir.join("keys/agent.pub").to_string_lossy().into_owned();
    env.agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &pubkey])
        .unwrap()
        .assert_code(0);
}

#[test]
fn a_quickstart_whose_first_deploy_fails_says_why_and_leaves_no_process_behind() {
    let env = TestEnv::new().unwrap();
    let dir = env.root.join("qs-broken");
    // A release that runs but never answers its health check.
    let app = env.root.join("never-healthy");
    std::fs::write(&app, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = env.command(&bins::path(bins::GANTRY).unwrap());
    cmd.arg("quickstart")
        .arg("--dir")
        .arg(&dir)
        .arg("--sample-app")
        .arg(&app);
    let out = process::run(cmd, Duration::from_secs(600)).unwrap();
    out.assert_code(1);
    assert!(
        out.stderr.contains("deploy 1.0.0 (hot) did not succeed"),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains("agent.log"), "{}", out.all());
    // The agent, the app's instances and its front door are all gone.
    let left = process::processes_under(&dir);
    assert!(
        left.is_empty(),
        "processes left behind: {left:?}\n{}",
        out.all()
    );
    for pid in process::recorded_instance_pids(&dir.join("data")) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "recorded pid {pid} still runs"
        );
    }
}

#[test]
fn quickstart_fleet_runs_a_plan_ring_by_ring_and_leaves_nothing_running() {
    let env = TestEnv::new().unwrap();
    let dir = env.root.join("qs-fleet");
    let mut cmd = env.command(&bins::path(bins::GANTRY).unwrap());
    cmd.arg("quickstart").arg("--fleet").arg("--dir").arg(&dir);
    let out = process::run(cmd, Duration::from_secs(600)).unwrap();
    out.assert_code(0);
    let text = out.stdout.as_str();
    // Ring by ring: each ring's hosts succeed, then it bakes, before the next ring's succeed.
    // (A host's `running` may fall between two of quickstart's polls; `succeeded` never does,
    // and the bakes last seconds.)
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", out.all()))
    };
    assert!(at("ring 0 canary: web-1 deploy succeeded") < at("ring 0 baking"));
    assert!(at("ring 0 baking") < at("ring 1 early: web-2 deploy succeeded"));
    assert!(at("ring 1 early: web-2 deploy succeeded") < at("ring 1 baking"));
    assert!(at("ring 1 baking") < at("ring 2 everyone: web-3 deploy succeeded"));
    assert!(at("ring 1 baking") < at("ring 2 everyone: web-4 deploy succeeded"));
    assert!(
        text.contains("rollout quickstart-fleet-1.0.0: sample 1.0.0 — succeeded"),
        "{}",
        out.all()
    );
    for id in ["web-1", "web-2", "web-3", "web-4"] {
        assert!(
            text.contains(&format!("{id}: GET http://127.0.0.1:")),
            "{}",
            out.all()
        );
        assert!(
            text.contains(&format!("{id}: ok, ")),
            "fleet audit verify did not pass {id}:\n{}",
            out.all()
        );
        assert!(
            text.contains(&format!("{id}: config sha256:")),
            "{}",
            out.all()
        );
    }
    assert!(
        text.contains("fleet audit: 4 of 4 agents verify"),
        "{}",
        out.all()
    );
    assert_eq!(
        text.matches("vouched for by its audit log").count(),
        4,
        "{}",
        out.all()
    );
    assert!(
        text.contains("-> 200 sample 1.0.0"),
        "the app did not answer 1.0.0:\n{}",
        out.all()
    );
    // Every agent's own log shows the plan's deploy and the clean-up stop, and verifies.
    for id in ["web-1", "web-2", "web-3", "web-4"] {
        let agent = dir.join("agents").join(id);
        let audit = agent.join("data/audit").to_string_lossy().into_owned();
        let pubkey = agent.join("keys/agent.pub").to_string_lossy().into_owned();
        env.agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &pubkey])
            .unwrap()
            .assert_code(0);
        let state = std::fs::read_to_string(agent.join("data/apps/sample/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(
            state["instances"].as_array().map(Vec::len),
            Some(0),
            "{id} still runs instances after quickstart: {state:#}"
        );
    }
    assert!(
        text.contains("stopped the controller service"),
        "{}",
        out.all()
    );
}

#[test]
fn check_config_accepts_the_generated_config() {
    let env = TestEnv::new().unwrap();
    let config = env.config.to_string_lossy().into_owned();
    env.agent_cmd(&["check-config", "--config", &config])
        .unwrap()
        .assert_code(0);
}

#[test]
fn check_config_names_the_bad_entry() {
    let env = TestEnv::new().unwrap();
    let mut raw = env.raw_config();
    let web = raw.apps.get_mut("web").unwrap();
    web.ports = format!("9-{}", web.ports);
    env.write_raw_config(&raw).unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["check-config", "--config", &config])
        .unwrap();
    assert_ne!(
        out.code,
        0,
        "a broken port range passed check-config\n{}",
        out.all()
    );
    assert!(
        out.all().contains("ports"),
        "the error does not name apps.web.ports:\n{}",
        out.all()
    );
}

#[test]
fn check_config_reports_every_parse_error_and_names_a_duplicate_key() {
    let env = TestEnv::new().unwrap();
    let good = std::fs::read_to_string(&env.config).unwrap();
    // Three mistakes in the top-level table: a key given twice, a stray `=`, an unknown key.
    let text = format!("listen = \"127.0.0.1:1\"\nsurplus = = 1\nlisen = 2\n{good}");
    std::fs::write(&env.config, text).unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["check-config", "--config", &config])
        .unwrap();
    out.assert_code(2);
    let all = out.all();
    assert!(all.contains("has 3 problems"), "{all}");
    assert!(all.contains("line 2, column 11: extra `=`"), "{all}");
    assert!(
        all.contains("line 3, column 1: unknown field `lisen`"),
        "{all}"
    );
    assert!(
        all.contains("duplicate key `listen`: it is set earlier in the same table"),
        "{all}"
    );
}

#[test]
fn policy_lists_who_may_do_what() {
    let env = TestEnv::new().unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["policy", "--config", &config, "--json"])
        .unwrap();
    out.assert_code(0);
    let policy: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "policy --json is not one JSON document: {e}\n{}",
            out.stdout
        )
    });
    let text = policy.to_string();
    for word in ["deployer", "viewer", "web", &env.app_user] {
        assert!(
            text.contains(word),
            "policy --json does not mention {word}: {text}"
        );
    }
}

#[test]
fn job_show_prints_what_job_create_wrote() {
    let env = TestEnv::new().unwrap();
    let artifact = gantry_tests::make_artifact(&env, "1.2.3", "").unwrap();
    let job = env.root.join("job.bin").to_string_lossy().into_owned();
    create_job(
        &env,
        Path::new(&job),
        "1.2.3",
        &artifact,
        &["--job-id", "show-me-1", "--", "bin/gantry-sample-app"],
    );
    // Unsigned, the agent's policy would refuse it: `--policy` says what is missing, exit 3.
    let policy = env.config.to_string_lossy().into_owned();
    let out = env
        .gantry(&["job", "show", "--policy", &policy, &job])
        .unwrap();
    out.assert_code(3);
    assert!(out.stdout.contains("MISSING"), "{}", out.all());
    assert!(
        out.stderr.contains("requirement(s) of the policy in")
            && out.stderr.contains("the agent would reject job file"),
        "{}",
        out.all()
    );
    sign_job_file(&env, Path::new(&job), &env.keys.deployer);
    let out = env.gantry(&["job", "show", &job]).unwrap();
    out.assert_code(0);
    for word in ["show-me-1", "web", "1.2.3", &env.agent_id] {
        assert!(
            out.stdout.contains(word),
            "job show does not print {word}:\n{}",
            out.stdout
        );
    }
    let out = env
        .gantry(&["job", "show", "--policy", &policy, &job])
        .unwrap();
    out.assert_code(0);
    assert!(
        out.stdout.contains("the agent's policy admits this job"),
        "{}",
        out.all()
    );
}

/// Starts the sample app on a free port with `envs`; returns the child and its port.
fn sample_app(env: &TestEnv, envs: &[(&str, &str)]) -> (std::process::Child, u16) {
    let port = *gantry_tests::probe::free_port_range(1).unwrap().start();
    let mut cmd = env.command(&bins::path(bins::SAMPLE_APP).unwrap());
    cmd.env("PORT", port.to_string())
        .env("GANTRY_APP", "web")
        .env("GANTRY_VERSION", "3.1.4")
        .env("GANTRY_INSTANCE", "2")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null());
    (cmd.spawn().unwrap(), port)
}

fn sigterm(child: &mut std::process::Child) -> Option<i32> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    process::wait_deadline(child, Duration::from_secs(10))
        .unwrap()
        .and_then(|s| s.code())
}

#[test]
fn sample_app_serves_banner_version_and_health_and_stops_on_sigterm() {
    let env = TestEnv::new().unwrap();
    let (mut child, port) = sample_app(&env, &[]);
    gantry_tests::wait_until(Duration::from_secs(10), "the sample app answers", || {
        gantry_tests::banner(port).is_some()
    })
    .unwrap();
    assert_eq!(
        gantry_tests::banner(port).unwrap(),
        "web 3.1.4 instance 2\n"
    );
    assert_eq!(
        gantry_tests::http_get(port, "/version").unwrap(),
        (200, "3.1.4\n".to_owned())
    );
    assert_eq!(gantry_tests::http_get(port, "/health").unwrap().0, 200);
    assert_eq!(sigterm(&mut child), Some(0));
}

#[test]
fn sample_app_failure_modes() {
    let env = TestEnv::new().unwrap();
    let (mut child, _) = sample_app(&env, &[("SAMPLE_MODE", "crash-at-start")]);
    let status = process::wait_deadline(&mut child, Duration::from_secs(10)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(3));

    let (mut child, port) = sample_app(&env, &[("SAMPLE_MODE", "never-healthy")]);
    gantry_tests::wait_until(Duration::from_secs(10), "the sample app answers", || {
        gantry_tests::banner(port).is_some()
    })
    .unwrap();
    assert_eq!(gantry_tests::http_get(port, "/health").unwrap().0, 503);
    assert_eq!(sigterm(&mut child), Some(0));

    let (mut child, port) = sample_app(&env, &[("SAMPLE_MODE", "crash-under-load=3")]);
    gantry_tests::wait_until(Duration::from_secs(10), "the sample app answers", || {
        gantry_tests::http_get(port, "/health").is_ok()
    })
    .unwrap();
    let _ = gantry_tests::http_get(port, "/");
    let _ = gantry_tests::http_get(port, "/");
    let status = process::wait_deadline(&mut child, Duration::from_secs(10)).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(4));
}

/// The messages the agent sent to a notify socket until `until` is one of them, or the
/// deadline passed.
fn notifications_until(
    sock: &std::os::unix::net::UnixDatagram,
    until: &str,
    deadline: Duration,
) -> Vec<String> {
    let end = std::time::Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == until);
                got.push(msg);
                if done {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    got
}

/// Issue: systemd readiness. Under `Type=notify` the agent says `READY=1` only once the audit
/// log is open and the listener bound, pings the watchdog at half `WATCHDOG_USEC`, and says
/// `STOPPING=1` when SIGTERM starts the drain.
#[test]
fn the_agent_tells_systemd_when_it_is_ready_alive_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let env = TestEnv::new().unwrap();
    let path = env.root.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = env.command(&bins::path(bins::GANTRY_AGENT).unwrap());
    cmd.args(["run", "--config"])
        .arg(&env.config)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let ready = notifications_until(&sock, "READY=1", Duration::from_secs(30));
    let last = ready.last().cloned().unwrap_or_default();
    assert!(last.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(last.contains("STATUS=listening on 127.0.0.1:"), "{ready:?}");
    // Ready means bound and recorded: the address file and agent.started exist already.
    assert!(env.data_dir.join("run/listen.addr").is_file());
    assert_eq!(
        gantry_tests::audit_events(&env, "agent.started")
            .unwrap()
            .len(),
        1
    );
    let pings = notifications_until(&sock, "WATCHDOG=1", Duration::from_secs(10));
    assert!(pings.iter().any(|m| m == "WATCHDOG=1\n"), "{pings:?}");
    let pings = notifications_until(&sock, "WATCHDOG=1", Duration::from_secs(10));
    assert!(pings.iter().any(|m| m == "WATCHDOG=1\n"), "{pings:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = notifications_until(&sock, "STOPPING=1", Duration::from_secs(30));
    let last = stopping.last().cloned().unwrap_or_default();
    assert!(last.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(last.contains("STATUS=SIGTERM"), "{stopping:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Issue (found as a new user): two quickstarts at once on one host collided on the sample
/// app's instance ports. Each now claims its range for as long as it runs.
#[test]
fn two_quickstarts_at_once_use_different_ports_and_both_succeed() {
    let env = TestEnv::new().unwrap();
    let runs: Vec<_> = ["qs-a", "qs-b"]
        .into_iter()
        .map(|name| {
            let dir = env.root.join(name);
            let mut cmd = env.command(&bins::path(bins::GANTRY).unwrap());
            cmd.arg("quickstart").arg("--dir").arg(&dir);
            (
                dir,
                std::thread::spawn(move || process::run(cmd, Duration::from_secs(600))),
            )
        })
        .collect();
    let mut ranges = Vec::new();
    for (dir, run) in runs {
        let out = run.join().unwrap().unwrap();
        out.assert_code(0);
        let config = std::fs::read_to_string(dir.join("agent.toml")).unwrap();
        let ports = config
            .lines()
            .find(|l| l.trim_start().starts_with("ports"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no ports in {config}"));
        ranges.push(ports);
    }
    assert_ne!(ranges[0], ranges[1], "both quickstarts took the same ports");
}

#[test]
fn info_reports_the_environment_and_labels_of_the_agents_own_config() {
    let env = TestEnv::new().unwrap();
    let mut raw = env.raw_config();
    raw.environment = Some("staging".to_owned());
    raw.labels.insert("ring".to_owned(), "1".to_owned());
    raw.labels.insert("region".to_owned(), "eu-west".to_owned());
    env.write_raw_config(&raw).unwrap();
    let agent = gantry_tests::Agent::start(&env).unwrap();
    let info = gantry_tests::grpc::info(&env, &agent).unwrap();
    assert_eq!(info.agent_id, env.agent_id);
    assert_eq!(info.environment, "staging");
    assert_eq!(info.labels.get("ring").map(String::as_str), Some("1"));
    assert_eq!(
        info.labels.get("region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(info.labels.len(), 2);
}
