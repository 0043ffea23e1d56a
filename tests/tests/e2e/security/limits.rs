//! J9, instances get limits: a deployed instance starts with its app's `[apps.NAME.limits]` as
//! hard and soft rlimits, `gantry-agent policy` shows them, and a child that starts more
//! processes than `max_processes` allows gets `EAGAIN`.

use std::fs;

use gantry_policy::config::raw::RawAppLimits;
use gantry_tests::probe::http_get;
use gantry_tests::{Agent, Controller, TestEnv, make_artifact};

use super::is_root;
use crate::{deploy_args, strs};

const OPEN_FILES: u64 = 1000;
const PROCESSES: u64 = 24;
const MEMORY: u64 = 4 << 30;

/// The (soft, hard) cells of the line of `/proc/PID/limits` for `name`.
fn proc_limit(pid: u64, name: &str) -> (String, String) {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    let mut cells = line[name.len()..].split_whitespace();
    (
        cells.next().unwrap().to_owned(),
        cells.next().unwrap().to_owned(),
    )
}

#[test]
fn j9_a_deployed_instance_runs_with_its_apps_limits_and_cannot_spawn_past_max_processes() {
    let env = TestEnv::new().unwrap();
    let mut raw = env.raw_config();
    raw.apps.get_mut("web").unwrap().limits = Some(RawAppLimits {
        max_open_files: Some(OPEN_FILES),
        max_processes: Some(PROCESSES),
        max_memory: Some(MEMORY),
    });
    env.write_raw_config(&raw).unwrap();

    let config = env.config.to_string_lossy().into_owned();
    let policy = env.agent_cmd(&["policy", "--config", &config]).unwrap();
    policy.assert_code(0);
    assert!(
        policy.stdout.contains(&format!(
            "{OPEN_FILES} open files per process, {PROCESSES} processes of its user, {MEMORY} bytes of address space per process"
        )),
        "{}",
        policy.all()
    );

    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let artifact = make_artifact(&env, "1.0.0", "").unwrap();
    // Twice the limit: the spawns must fail before the count is reached.
    let probe = format!("SAMPLE_PROBE=spawn={}", PROCESSES * 2);
    let args = deploy_args(
        &env.keys.deployer,
        "1.0.0",
        &artifact,
        &[
            "--instances",
            "1",
            "--health",
            "http:/health",
            "--env",
            &probe,
        ],
    );
    ctl.run(&strs(&args)).unwrap().assert_code(0);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(env.data_dir.join("apps/web/state.json")).unwrap())
            .unwrap();
    let instance = &state["instances"][0];
    let pid = instance["pid"].as_u64().unwrap();
    let port = u16::try_from(instance["port"].as_u64().unwrap()).unwrap();

    let both = |v: u64| (v.to_string(), v.to_string());
    assert_eq!(proc_limit(pid, "Max open files"), both(OPEN_FILES));
    assert_eq!(proc_limit(pid, "Max processes"), both(PROCESSES));
    assert_eq!(proc_limit(pid, "Max address space"), both(MEMORY));

    let (code, body) = http_get(port, "/probe").unwrap();
    assert_eq!(code, 200, "{body}");
    let result = body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("spawn {} ", PROCESSES * 2)))
        .unwrap_or_else(|| panic!("no spawn probe in {body:?}"))
        .to_owned();
    if !is_root() {
        // The app runs as the tests' own user, whose other processes count too.
        eprintln!("the spawn probe said {result:?} (the app runs as the tests' user)");
        return;
    }
    // As root the tests run the app as nobody: its processes, this one included, stop short
    // of the limit.
    let started: u64 = result
        .strip_prefix("EAGAIN after ")
        .unwrap_or_else(|| panic!("{result:?}: the spawns did not stop at max_processes"))
        .parse()
        .unwrap();
    assert!(started < PROCESSES, "{result}");
}
