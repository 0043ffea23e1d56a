//! Resumable uploads through the real binaries: an upload that breaks off (the agent killed
//! with SIGKILL, or the `gantry` process killed) leaves the agent holding part of the
//! artifact, and running the same deploy again resumes at that byte instead of byte 0.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use gantry_tests::{Agent, Controller, Options, TestEnv, audit_events, make_large_artifact};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{assert_serves, deploy_args, strs};

/// Incompressible bytes in the release, so that the upload takes long enough to interrupt.
const PADDING: usize = 48 << 20;

fn env() -> TestEnv {
    TestEnv::with_options(Options {
        max_artifact_bytes: 128 << 20,
        ..Options::default()
    })
    .unwrap()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &fs::read(path).unwrap(),
    ))
}

/// The deploy of `version` from `artifact`, hot, one instance, the usual health check.
fn deploy_command(env: &TestEnv, version: &str, artifact: &Path) -> Vec<String> {
    deploy_args(
        &env.keys.deployer,
        version,
        artifact,
        &[
            "--strategy",
            "hot",
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
            "--health-deadline",
            "20s",
        ],
    )
}

/// Starts `gantry ARGS` in the background, its output thrown away (it is killed).
fn spawn(ctl: &Controller, args: &[String]) -> Child {
    background(ctl.command(&strs(args)).unwrap())
}

fn background(mut cmd: std::process::Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().unwrap()
}

/// Waits (polling tightly: the upload is fast) until the agent's partial file of `digest`
/// holds some bytes, then freezes the uploading `gantry` with SIGSTOP so that it cannot finish.
/// Returns the bytes held then, which are fewer than `size`.
fn stop_mid_upload(env: &TestEnv, child: &mut Child, digest: &str, size: u64) -> u64 {
    let partial = partial_path(env, digest);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = fs::metadata(&partial).map_or(0, |m| m.len());
        if held > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "gantry ended before the agent held any byte"
        );
        assert!(
            Instant::now() < deadline,
            "the agent held no byte of the upload within 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    // Let what was already on its way land, then read what the agent holds.
    let mut held = 0;
    gantry_tests::wait_until(
        Duration::from_secs(10),
        "the partial file stops growing",
        || {
            let now = fs::metadata(&partial).map_or(0, |m| m.len());
            let settled = now == held;
            held = now;
            std::thread::sleep(Duration::from_millis(100));
            settled
        },
    )
    .unwrap();
    assert!(
        held > 0 && held < size,
        "the agent should hold part of the {size} bytes, holds {held}"
    );
    held
}

fn partial_path(env: &TestEnv, digest: &str) -> PathBuf {
    env.data_dir.join("artifacts/partial").join(digest)
}

fn kill_9(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs the deploy again and checks that it resumed at `at_least` or later (what the agent
/// held), sent fewer bytes than the whole, and that the release serves.
fn rerun_resumes(
    env: &TestEnv,
    ctl: &Controller,
    args: &[String],
    digest: &str,
    size: u64,
    at_least: u64,
) {
    let out = ctl.run(&strs(args)).unwrap();
    out.assert_code(0);
    let said = out
        .all()
        .lines()
        .find_map(|l| {
            let rest = l.split("resuming the upload at ").nth(1)?;
            let (at, of) = rest.split_once(" of ")?;
            Some((
                at.parse::<u64>().ok()?,
                of.trim_end_matches(" bytes").parse::<u64>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("gantry did not say it resumes:\n{}", out.all()));
    assert!(
        said.0 >= at_least && said.0 < size,
        "{said:?}\n{}",
        out.all()
    );
    assert_eq!(said.1, size);
    let stored = audit_events(env, "artifact.stored").unwrap();
    let entry = stored
        .iter()
        .find(|e| e["sha256"] == digest)
        .unwrap_or_else(|| panic!("no artifact.stored for {digest}: {stored:?}"));
    assert_eq!(entry["size"], size);
    assert_eq!(
        entry["resumed_from"], said.0,
        "the agent's record says where the upload resumed: {entry}"
    );
    assert!(
        !partial_path(env, digest).exists(),
        "the partial became the artifact"
    );
    assert_eq!(
        sha256_hex(&env.data_dir.join("artifacts/sha256").join(digest)),
        digest
    );
    assert_serves(env, "1.0.0", 1);
}

#[test]
fn an_upload_cut_by_a_sigkill_of_the_agent_resumes_after_its_restart() {
    let env = env();
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let artifact = make_large_artifact(&env, "1.0.0", PADDING).unwrap();
    let digest = sha256_hex(&artifact);
    let size = fs::metadata(&artifact).unwrap().len();
    let args = deploy_command(&env, "1.0.0", &artifact);

    let mut child = spawn(&ctl, &args);
    let held = stop_mid_upload(&env, &mut child, &digest, size);
    agent.kill_9().unwrap();
    kill_9(child);
    // The bytes written before the kill are still there after it.
    assert!(fs::metadata(partial_path(&env, &digest)).unwrap().len() >= held);

    let agent = Agent::start(&env).unwrap();
    // The restarted agent offers to resume where its partial file ends; a size smaller than
    // what it holds cannot be that artifact, so it offers nothing for that.
    let on_disk = fs::metadata(partial_path(&env, &digest)).unwrap().len();
    let presence = gantry_tests::grpc::has_artifact(&env, &agent, &digest, size).unwrap();
    assert!(!presence.present);
    assert_eq!(presence.held, on_disk);
    let smaller = gantry_tests::grpc::has_artifact(&env, &agent, &digest, on_disk - 1).unwrap();
    assert_eq!((smaller.present, smaller.held), (false, 0));
    let ctl = Controller::new(&env, &agent);
    rerun_resumes(&env, &ctl, &args, &digest, size, held);
}

#[test]
fn an_upload_cut_by_a_sigkill_of_gantry_resumes_when_it_runs_again() {
    let env = env();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let artifact = make_large_artifact(&env, "1.0.0", PADDING).unwrap();
    let digest = sha256_hex(&artifact);
    let size = fs::metadata(&artifact).unwrap().len();
    let args = deploy_command(&env, "1.0.0", &artifact);

    let mut child = spawn(&ctl, &args);
    let held = stop_mid_upload(&env, &mut child, &digest, size);
    kill_9(child);
    rerun_resumes(&env, &ctl, &args, &digest, size, held);
    drop(agent);
}

#[test]
fn an_upload_through_the_service_to_a_dial_out_agent_resumes_after_the_agent_is_killed() {
    use gantry_tests::service::Fleet;
    let mut fleet = Fleet::start_dialling(
        &[("web-1", &[("ring", "0")])],
        &["web-1"],
        &Options {
            max_artifact_bytes: 128 << 20,
            ..Options::default()
        },
    )
    .unwrap();
    let svc = crate::fleet_service::start_service(&fleet, "ctl-1", None, "10s");
    crate::dialout::wait_connected(
        &svc,
        &fleet.members[0].agent,
        "web-1",
        Duration::from_secs(45),
    );
    let env = &fleet.members[0].env;
    let artifact = make_large_artifact(env, "1.0.0", PADDING).unwrap();
    let digest = sha256_hex(&artifact);
    let size = fs::metadata(&artifact).unwrap().len();
    // The deploy goes to the agent through the service, on the agent's one outbound link.
    let mut args = deploy_command(env, "1.0.0", &artifact);
    let server = svc.addr.to_string();
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    for (i, a) in ["--agent", "web-1", "--server", &server].iter().enumerate() {
        args.insert(at + i, (*a).to_owned());
    }

    let mut child = background(svc.command(&strs(&args)).unwrap());
    let held = stop_mid_upload(env, &mut child, &digest, size);
    fleet.members[0].agent.kill_9().unwrap();
    kill_9(child);
    let m = &mut fleet.members[0];
    m.agent.restart(&m.env, &[]).unwrap();
    crate::dialout::wait_connected(&svc, &m.agent, "web-1", Duration::from_secs(45));

    let out = svc.gantry(&strs(&args)).unwrap();
    out.assert_code(0);
    let at = out
        .all()
        .lines()
        .find_map(|l| {
            l.split("resuming the upload at ")
                .nth(1)?
                .split_once(" of ")?
                .0
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("gantry did not say it resumes:\n{}", out.all()));
    assert!(
        at >= held && at < size,
        "resumed at {at}, held {held} of {size}"
    );
    let stored = audit_events(&m.env, "artifact.stored").unwrap();
    let entry = stored
        .iter()
        .find(|e| e["sha256"] == digest)
        .unwrap_or_else(|| panic!("no artifact.stored for {digest}: {stored:?}"));
    assert_eq!(entry["resumed_from"], at, "{entry}");
    assert_eq!(
        sha256_hex(&m.env.data_dir.join("artifacts/sha256").join(&digest)),
        digest
    );
    assert_serves(&m.env, "1.0.0", 1);
}
