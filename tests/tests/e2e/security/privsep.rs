//! J5, apps cannot touch the agent: the agent runs as an unprivileged system user holding only
//! CAP_SETUID, CAP_SETGID and CAP_KILL (the systemd unit's identity model, made here with
//! `setpriv`), its app runs as `nobody`, and the deployed child is refused every key file and
//! every file and directory of the agent's.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gantry_tests::probe::http_get;
use gantry_tests::process::recorded_instance_pids;
use gantry_tests::{Agent, Controller, TestEnv, make_artifact, wait_until};
use nix::unistd::{Gid, Uid, User};

use super::{is_root, status_field};
use crate::{deploy, deploy_args, strs};

/// The system user the agent runs as in this test (`gantry` in production).
const AGENT_USER: &str = "gantry-e2e";
/// CAP_KILL, CAP_SETGID and CAP_SETUID, as `/proc/<pid>/status` shows them.
const UNIT_CAPS: &str = "00000000000000e0";

/// The agent's user, created (`useradd --system`) when absent.
fn agent_user() -> User {
    if let Some(u) = User::from_name(AGENT_USER).unwrap() {
        return u;
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(AGENT_USER)
        .output()
        .unwrap();
    // Another test binary may have created it meanwhile.
    User::from_name(AGENT_USER)
        .unwrap()
        .unwrap_or_else(|| panic!("useradd {AGENT_USER}: {out:?}"))
}

/// A wrapper that runs a program as `AGENT_USER` with only the unit's capabilities in its
/// bounding, inheritable and ambient sets, and the unit's `UMask=0077`.
fn as_agent_user() -> Vec<&'static str> {
    vec![
        "sh",
        "-c",
        "umask 077 && exec \"$0\" \"$@\"",
        "setpriv",
        "--reuid",
        AGENT_USER,
        "--regid",
        AGENT_USER,
        "--init-groups",
        "--inh-caps",
        "+setuid,+setgid,+kill",
        "--ambient-caps",
        "+setuid,+setgid,+kill",
        "--bounding-set",
        "-all,+setuid,+setgid,+kill",
    ]
}

/// Whether the test can run here; says why not when it cannot.
fn can_run(test: &str) -> bool {
    if !is_root() {
        eprintln!(
            "SKIPPED {test}: needs root to create the agent's user and start it with capabilities"
        );
        return false;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED {test}: setpriv (util-linux) is not installed");
        return false;
    }
    true
}

/// Makes `env` the agent user's, as the unit's install steps do: its config, keys, PKI and
/// data dir, and a copy of the agent's binary in the test's own 0755 dir (a clone under a
/// 0700 dir is out of every other user's reach). Returns the user and the binary.
fn hand_over(env: &TestEnv) -> (User, PathBuf) {
    let gantry = agent_user();
    let bin = env.root.join("bin");
    fs::create_dir(&bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let program = bin.join("gantry-agent");
    fs::copy(
        gantry_tests::bins::path(gantry_tests::bins::GANTRY_AGENT).unwrap(),
        &program,
    )
    .unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(&env.data_dir).unwrap();
    fs::set_permissions(&env.data_dir, fs::Permissions::from_mode(0o711)).unwrap();
    for p in [
        &env.config,
        &env.pki.dir,
        &env.root.join("keys"),
        &env.data_dir,
    ] {
        chown_tree(p, gantry.uid, gantry.gid);
    }
    (gantry, program)
}

/// Asserts that `pid` runs as `user` with no capability in any set and no new privileges.
fn assert_unprivileged(pid: u32, user: &User) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let n = user.uid.as_raw();
    assert_eq!(status_field(&status, "Uid"), format!("{n}\t{n}\t{n}\t{n}"));
    for cap in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(
            status_field(&status, cap),
            "0000000000000000",
            "{cap} of {pid}"
        );
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) {
    nix::unistd::chown(path, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

/// Every file and directory under `dir` (not following links), sorted.
fn tree(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    dirs.push(dir.to_owned());
    for e in fs::read_dir(dir).unwrap().flatten() {
        let meta = fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            tree(&e.path(), files, dirs);
        } else if meta.is_file() {
            files.push(e.path());
        }
    }
}

/// The first instance of `web` as `state.json` records it: pid and port.
fn instance(env: &TestEnv) -> (u32, u16) {
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(env.data_dir.join("apps/web/state.json")).unwrap())
            .unwrap();
    let i = &state["instances"][0];
    (
        u32::try_from(i["pid"].as_u64().unwrap()).unwrap(),
        u16::try_from(i["port"].as_u64().unwrap()).unwrap(),
    )
}

/// `GET /probe` of the instance: path → result, per operation.
fn probe_answers(port: u16) -> BTreeMap<(String, String), String> {
    let (code, body) = http_get(port, "/probe").unwrap();
    assert_eq!(code, 200, "{body}");
    body.lines()
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let (op, path, result) = (it.next(), it.next(), it.next());
            (
                (op.unwrap().to_owned(), path.unwrap().to_owned()),
                result.unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn j5_under_a_non_root_agent_with_the_units_capabilities_a_child_runs_as_nobody_and_is_refused_the_agents_files()
 {
    if !can_run("j5_under_a_non_root_agent") {
        return;
    }
    let env = TestEnv::new().unwrap();
    assert_eq!(env.app_user, "nobody");
    let nobody = User::from_name("nobody").unwrap().unwrap();
    let (gantry, program) = hand_over(&env);

    // `policy`, run with the agent's identity, says who the app runs as and how.
    let wrapper = as_agent_user();
    let mut policy = env.command(Path::new(wrapper[0]));
    policy
        .args(&wrapper[1..])
        .arg(&program)
        .args(["policy", "--config"])
        .arg(&env.config);
    let out = gantry_tests::process::run(policy, Duration::from_secs(20)).unwrap();
    out.assert_code(0);
    let runs_as = format!(
        "runs as        user nobody (uid {}, gid {}, groups ",
        nobody.uid, nobody.gid
    );
    assert!(out.stdout.contains(&runs_as), "{}", out.all());
    assert!(
        out.stdout
            .contains("switched to by the agent's CAP_SETUID and CAP_SETGID"),
        "{}",
        out.all()
    );

    // The same user without the capabilities may run apps only as itself, and is told why.
    let mut check = env.command(Path::new("setpriv"));
    check
        .args([
            "--reuid",
            AGENT_USER,
            "--regid",
            AGENT_USER,
            "--init-groups",
        ])
        .arg(&program)
        .args(["check-config", "--config"])
        .arg(&env.config);
    let out = gantry_tests::process::run(check, Duration::from_secs(20)).unwrap();
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(
        out.all().contains(&format!(
            "apps.web.user: app web: user nobody needs the agent to run as root or to hold \
             CAP_SETUID CAP_SETGID CAP_KILL (the agent runs as {AGENT_USER}, uid {}, without \
             CAP_SETUID, CAP_SETGID, CAP_KILL)",
            gantry.uid
        )),
        "{}",
        out.all()
    );

    let mut agent = Agent::start_wrapped(&env, &as_agent_user(), &program).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid().unwrap())).unwrap();
    let uid = gantry.uid.as_raw();
    assert_eq!(
        status_field(&status, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}"),
        "the agent is not root"
    );
    assert_eq!(status_field(&status, "CapEff"), UNIT_CAPS);
    assert_eq!(status_field(&status, "CapBnd"), UNIT_CAPS);

    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &v1, 1, "20s").assert_code(0);
    let (v1_pid, _) = instance(&env);

    // Everything the agent holds, as it stands now: each key file must be unreadable, every
    // file must refuse an append and every directory a new file.
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    tree(&env.data_dir, &mut files, &mut dirs);
    for d in [&env.pki.dir, &env.root.join("keys")] {
        tree(d, &mut files, &mut dirs);
    }
    files.push(env.config.clone());
    let secret_files: Vec<PathBuf> = [
        env.pki.agent_key.clone(),
        env.keys.agent.key.clone(),
        env.data_dir.join("secrets.key"),
        env.data_dir.join("apps/web/state.json"),
    ]
    .into_iter()
    .chain(
        files
            .iter()
            .filter(|f| {
                ["audit", "jobs", "artifacts", "plans"]
                    .iter()
                    .any(|d| f.starts_with(env.data_dir.join(d)))
            })
            .cloned(),
    )
    .collect();
    for f in &secret_files {
        assert!(f.is_file(), "{} is not there to probe", f.display());
    }
    let closed_dirs: Vec<PathBuf> = ["", "audit", "jobs", "artifacts", "plans"]
        .iter()
        .map(|d| env.data_dir.join(d))
        .collect();
    // What the app needs stays reachable: its own release.
    let own_release = env.releases_dir().join("2.0.0");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut probes: Vec<(&str, String)> = Vec::new();
    probes.extend(secret_files.iter().map(|f| ("read", s(f))));
    probes.extend(files.iter().map(|f| ("append", s(f))));
    probes.extend(dirs.iter().map(|d| ("create", s(d))));
    probes.extend(closed_dirs.iter().map(|d| ("list", s(d))));
    probes.push(("read", s(&own_release.join("VERSION"))));
    probes.push(("list", s(&own_release)));
    let spec = probes
        .iter()
        .map(|(op, p)| format!("{op}={p}"))
        .collect::<Vec<_>>()
        .join(",");

    // A redeploy: the agent stops v1's instance, which runs as nobody (CAP_KILL), and starts
    // v2's, which probes.
    let v2 = make_artifact(&env, "2.0.0", "").unwrap();
    let probe_env = format!("SAMPLE_PROBE={spec}");
    let args = deploy_args(
        &env.keys.deployer,
        "2.0.0",
        &v2,
        &[
            "--strategy",
            "hot",
            "--instances",
            "1",
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
            "--env",
            &probe_env,
        ],
    );
    ctl.run(&strs(&args)).unwrap().assert_code(0);
    assert!(
        fs::read_to_string(format!("/proc/{v1_pid}/stat")).is_err(),
        "v1's instance (uid nobody) is still running after the redeploy"
    );
    let (pid, port) = instance(&env);
    let answers = probe_answers(port);
    let mut wrong = Vec::new();
    for (op, path) in &probes {
        let got = answers
            .get(&((*op).to_owned(), path.clone()))
            .map_or("(no answer)", String::as_str);
        let want = if path.starts_with(&s(&own_release)) {
            "ok"
        } else {
            "EACCES"
        };
        if got != want {
            wrong.push(format!("{op} {path}: {got}, expected {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the app reached the agent's files:\n{}",
        wrong.join("\n")
    );
    assert!(probes.len() > 30, "too few probes: {probes:?}");

    // The child: uid nobody, no capabilities in any set, no new privileges.
    assert_unprivileged(pid, &nobody);

    // A restarted agent adopts the instance and can still stop it.
    agent.terminate().unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the instance outlives the agent"
    );
    let agent = Agent::start_wrapped(&env, &as_agent_user(), &program).unwrap();
    let ctl = Controller::new(&env, &agent);
    assert_eq!(
        recorded_instance_pids(&env.data_dir),
        vec![pid],
        "{}",
        agent.log_tail()
    );
    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    ctl.run(&["stop", "--key", &key, "--app", "web"])
        .unwrap()
        .assert_code(0);
    wait_until(
        Duration::from_secs(10),
        "the adopted instance is stopped",
        || fs::read_to_string(format!("/proc/{pid}/stat")).is_err(),
    )
    .unwrap();
}

/// The front door runs as the app's user too; a non-root agent, which cannot chown, lets it
/// write its stats directory through an ACL and reads what it writes there.
#[test]
fn j5_a_front_door_under_a_non_root_agent_runs_as_the_apps_user_and_its_stats_reach_the_agent() {
    if !can_run("j5_a_front_door_under_a_non_root_agent") {
        return;
    }
    let env = TestEnv::with_options(gantry_tests::Options::front_door(2)).unwrap();
    let nobody = User::from_name("nobody").unwrap().unwrap();
    let (gantry, program) = hand_over(&env);
    let agent = Agent::start_wrapped(&env, &as_agent_user(), &program).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let args = deploy_args(
        &env.keys.deployer,
        "1.0.0",
        &v1,
        &[
            "--strategy",
            "rolling",
            "--instances",
            "2",
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
        ],
    );
    let out = ctl.run(&strs(&args)).unwrap();
    out.assert_code(0);
    let listen = env.listen.unwrap();
    let answer = gantry_tests::load::fetch_version(listen, Duration::from_secs(5)).unwrap();
    assert_eq!(answer, "1.0.0", "{}", agent.log_tail());

    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(env.data_dir.join("apps/web/state.json")).unwrap())
            .unwrap();
    let front_door = u32::try_from(state["front_door"]["pid"].as_u64().unwrap()).unwrap();
    assert_unprivileged(front_door, &nobody);

    let run = env.data_dir.join("apps/web/traffic/run");
    let meta = fs::metadata(&run).unwrap();
    assert_eq!(
        meta.uid(),
        gantry.uid.as_raw(),
        "the agent keeps the directory"
    );
    let stats = run.join("stats.json");
    wait_until(
        Duration::from_secs(10),
        "the front door writes its stats",
        || stats.is_file(),
    )
    .unwrap();
    let meta = fs::metadata(&stats).unwrap();
    assert_eq!(meta.uid(), nobody.uid.as_raw());
    assert_eq!(
        meta.mode() & 0o777,
        0o644,
        "readable by the agent under UMask=0077"
    );
    let out = ctl.run(&["status", "--json"]).unwrap();
    out.assert_code(0);
    assert!(
        !agent.log_text().contains("cannot read front door stats"),
        "{}",
        agent.log_tail()
    );
}
