//! Security faults: unsafe key files, the audit dir on a full filesystem and the low-water mark,
//! and what a deployed child process holds (uid, gid, groups, capabilities, environment, fds);
//! `privsep`: the same under a non-root agent with capabilities, and the agent's files.
//! `limits`: the rlimits a deployed instance starts with.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use gantry_tests::diskfull::{Tmpfs, fill};
use gantry_tests::process::recorded_instance_pids;
use gantry_tests::{Agent, Controller, TestEnv, audit_events, make_artifact, wait_until};

use crate::{deploy, deploy_args, releases, strs};

mod limits;
mod privsep;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Rewrites `agent.toml` with another `audit.min_free_bytes`.
fn set_min_free_bytes(env: &TestEnv, bytes: u64) {
    let mut raw = env.raw_config();
    raw.audit.min_free_bytes = bytes;
    env.write_raw_config(&raw).unwrap();
    let text = fs::read_to_string(&env.config).unwrap();
    assert!(
        text.contains(&format!("min_free_bytes = {bytes}")),
        "{text}"
    );
}

fn verify_audit(env: &TestEnv) -> gantry_tests::Output {
    let audit = env.data_dir.join("audit").to_string_lossy().into_owned();
    let pubkey = env.keys.agent.public.to_string_lossy().into_owned();
    env.agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &pubkey])
        .unwrap()
}

/// Submits a job signed by the attacker's key: rejected, and its `job.rejected` entry takes
/// space in the audit log.
fn rejected_attempt(ctl: &Controller, env: &TestEnv, artifact: &Path) -> gantry_tests::Output {
    let args = deploy_args(
        &env.keys.attacker,
        "1.0.0",
        artifact,
        &[
            "--strategy",
            "hot",
            "--instances",
            "1",
            "--health",
            "http:/health",
        ],
    );
    ctl.run(&strs(&args)).unwrap()
}

#[test]
fn audit_dir_on_a_full_tmpfs_refuses_jobs_then_recovers_when_space_returns() {
    if !is_root() {
        eprintln!("SKIPPED audit_dir_on_a_full_tmpfs: mounting a tmpfs needs root");
        return;
    }
    let env = TestEnv::new().unwrap();
    // The write itself must fail here, not the low-water mark (tested below).
    set_min_free_bytes(&env, 0);
    fs::create_dir(&env.data_dir).unwrap();
    fs::set_permissions(&env.data_dir, fs::Permissions::from_mode(0o711)).unwrap();
    let audit_dir = env.data_dir.join("audit");
    fs::create_dir(&audit_dir).unwrap();
    let _mounted = match Tmpfs::mount(&audit_dir, "256k", 0o700) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED audit_dir_on_a_full_tmpfs: cannot mount a tmpfs: {e}");
            return;
        }
    };
    // Declared after the mount: dropped (killed) before it is unmounted.
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();

    let filler = audit_dir.join("filler");
    fill(&filler);
    // The last page of the log file may still take a line or two: rejected jobs use it up
    // until a write fails.
    let mut attempts = 0;
    loop {
        let out = rejected_attempt(&ctl, &env, &v1);
        if out.stderr.contains("audit log unavailable") {
            // The agent failed on its side: not a refusal (exit 3) but exit 2.
            out.assert_code(2);
            assert!(out.stderr.contains("on its side"), "{}", out.all());
            break;
        }
        out.assert_code(3);
        attempts += 1;
        assert!(
            attempts < 50,
            "the audit log never filled up: {}",
            out.all()
        );
    }

    let out = deploy(&ctl, &env, "1.0.0", &v1, 1, "20s");
    out.assert_code(2);
    assert!(
        out.stderr.contains("audit log unavailable")
            && out.stderr.contains("No space left")
            && out.stderr.contains("on its side (it did not refuse it)"),
        "{}",
        out.all()
    );
    assert!(
        releases(&env).is_empty(),
        "nothing may run: {:?}",
        releases(&env)
    );
    assert!(recorded_instance_pids(&env.data_dir).is_empty());

    // Space returns: the agent retries by itself and accepts jobs again.
    fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the audit log is writable again",
        || {
            ctl.run(&["status", "--json"])
                .is_ok_and(|s| s.code == 0 && !s.stdout.contains("audit log unavailable"))
        },
    )
    .unwrap();
    let out = deploy(&ctl, &env, "1.0.0", &v1, 1, "20s");
    out.assert_code(0);
    assert_eq!(releases(&env), vec!["1.0.0".to_owned()]);

    agent.terminate().unwrap();
    let resumed = audit_events(&env, "audit.resumed").unwrap();
    assert!(!resumed.is_empty(), "the outage is on record");
    assert!(
        resumed.iter().all(|e| e["cause"]
            .as_str()
            .is_some_and(|c| c.contains("No space left"))),
        "{resumed:?}"
    );
    verify_audit(&env).assert_code(0);
}

#[test]
fn h9_an_audit_log_removed_under_the_running_agent_fails_closed_and_says_which_file() {
    let env = TestEnv::new().unwrap();
    let _agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &_agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let log = fs::read_dir(env.data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("the agent has an audit log file");
    fs::remove_file(&log).unwrap();

    let out = deploy(&ctl, &env, "1.0.0", &v1, 1, "20s");
    out.assert_code(2);
    let removed = format!("{} was removed while the agent was running", log.display());
    assert!(
        out.stderr.contains("audit log unavailable") && out.stderr.contains(&removed),
        "{}",
        out.all()
    );
    assert!(releases(&env).is_empty(), "nothing may run unaudited");
    // It stays so (no retry can make the lost lines reappear), and status says why.
    let status = ctl.run(&["status", "--json"]).unwrap();
    assert!(status.stdout.contains(&removed), "{}", status.all());
    assert!(!log.exists(), "the agent does not quietly start a new file");
}

#[test]
fn below_the_low_water_mark_jobs_are_refused_before_the_disk_is_full() {
    let env = TestEnv::new().unwrap();
    // More than any test machine has free.
    set_min_free_bytes(&env, 1 << 60);
    let _agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &_agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let out = deploy(&ctl, &env, "1.0.0", &v1, 1, "20s");
    out.assert_code(2);
    assert!(
        out.stderr.contains("on its side (it did not refuse it)")
            && out.stderr.contains("audit log unavailable: only ")
            && out.stderr.contains("bytes free")
            && out.stderr.contains("minimum"),
        "{}",
        out.all()
    );
    assert!(releases(&env).is_empty());
}

#[test]
fn key_file_with_mode_0644_stops_the_agent_and_check_config_says_why() {
    let env = TestEnv::new().unwrap();
    let key = &env.pki.agent_key;
    fs::set_permissions(key, fs::Permissions::from_mode(0o644)).unwrap();
    let shown = key.display().to_string();

    let config = env.config.to_string_lossy().into_owned();
    let check = env
        .agent_cmd(&["check-config", "--config", &config])
        .unwrap();
    check.assert_code(2);
    assert!(
        check.stderr.contains(&format!("private key {shown}"))
            && check.stderr.contains("mode 0644")
            && check.stderr.contains(&format!("chmod 600 {shown}")),
        "{}",
        check.all()
    );

    let err = Agent::start(&env).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&shown) && text.contains("mode 0644") && text.contains("chmod 600"),
        "{text}"
    );
    assert!(
        !env.data_dir.join("audit").exists(),
        "refused before anything was written"
    );
}

#[test]
fn a_symlinked_config_is_refused() {
    let env = TestEnv::new().unwrap();
    let link = env.root.join("link.toml");
    std::os::unix::fs::symlink(&env.config, &link).unwrap();
    let link_arg = link.to_string_lossy().into_owned();
    let check = env
        .agent_cmd(&["check-config", "--config", &link_arg])
        .unwrap();
    check.assert_code(2);
    assert!(
        check
            .stderr
            .contains(&format!("config file {link_arg} is a symlink")),
        "{}",
        check.all()
    );
}

/// `Field:\tvalue` of `/proc/<pid>/status`.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_owned()
}

#[test]
fn a_deployed_child_runs_as_nobody_without_capabilities_extra_env_or_fds() {
    if !is_root() {
        eprintln!("SKIPPED a_deployed_child_runs_as_nobody: the agent switches users only as root");
        return;
    }
    let env = TestEnv::new().unwrap();
    assert_eq!(env.app_user, "nobody");
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &v1, 1, "20s").assert_code(0);
    let pids = recorded_instance_pids(&env.data_dir);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let pid = pids[0];
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();

    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    assert_eq!(
        status_field(&status, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(&status, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    let groups: BTreeSet<u32> = status_field(&status, "Groups")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    let name = std::ffi::CString::new("nobody").unwrap();
    let own: BTreeSet<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    let supplementary: BTreeSet<u32> = own.iter().copied().filter(|g| *g != gid).collect();
    assert!(
        groups == own || groups == supplementary,
        "groups {groups:?}, nobody's own {own:?}: none of root's may remain"
    );
    for cap in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(status_field(&status, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");

    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let keys: BTreeSet<String> = environ
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split('=').next().unwrap_or_default().to_owned()
        })
        .collect();
    for must in [
        "PATH",
        "HOME",
        "PORT",
        "GANTRY_APP",
        "GANTRY_VERSION",
        "GANTRY_INSTANCE",
    ] {
        assert!(keys.contains(must), "{must} missing from {keys:?}");
    }
    let extra: Vec<&String> = keys
        .iter()
        .filter(|k| !matches!(k.as_str(), "PATH" | "HOME" | "PORT") && !k.starts_with("GANTRY_"))
        .collect();
    assert!(extra.is_empty(), "inherited variables: {extra:?}");

    // 0 is /dev/null, 1 and 2 the instance log; anything else is a socket the app opened itself
    // (its listener), never a file, pipe or directory inherited from the agent.
    let mut fds = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let n: u32 = e.file_name().to_string_lossy().parse().unwrap();
        let target = fs::read_link(e.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        fds.push((n, target));
    }
    fds.sort();
    let std_fds: Vec<u32> = fds.iter().map(|(n, _)| *n).filter(|n| *n <= 2).collect();
    assert_eq!(std_fds, vec![0, 1, 2], "{fds:?}");
    assert_eq!(fds[0].1, "/dev/null");
    assert!(
        fds[1].1.ends_with(".log") && fds[1].1 == fds[2].1,
        "{fds:?}"
    );
    let inherited: Vec<&(u32, String)> = fds
        .iter()
        .filter(|(n, t)| *n > 2 && !t.starts_with("socket:") && !t.starts_with("anon_inode:"))
        .collect();
    assert!(
        inherited.is_empty(),
        "descriptors beyond stdio: {inherited:?}"
    );
}

/// Issue: the README's commands failed in a clone under a 0700 directory, because the front
/// door (run as the app's user) could not execute `target/debug/gantry-agent` there. The agent
/// now runs the front door from a copy in the app's `traffic/` directory when the user cannot
/// reach its own executable.
#[test]
fn front_door_starts_when_the_agent_binary_is_in_a_private_directory() {
    if !is_root() {
        eprintln!("skipped: needs root (the app must run as another user than the agent)");
        return;
    }
    let env = TestEnv::with_options(gantry_tests::Options::front_door(2)).unwrap();
    let private = env.root.join("private");
    fs::create_dir(&private).unwrap();
    let program = private.join("gantry-agent");
    fs::copy(
        gantry_tests::bins::path(gantry_tests::bins::GANTRY_AGENT).unwrap(),
        &program,
    )
    .unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let agent = Agent::start_program(&env, &program).unwrap();
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
    let copy = env.data_dir.join("apps/web/traffic/gantry-agent");
    let meta = fs::metadata(&copy).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(fs::read(&copy).unwrap(), fs::read(&program).unwrap());
    // Logged as what it is, not as an app instance with the agent's version.
    let log = agent.log_text();
    assert!(log.contains("front door started app=web"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("instance started") && l.contains("version=0.1.0")),
        "{log}"
    );

    // A front door that cannot start fails the next job at once with the cause, not with a
    // route-table timeout: stop it, close the app's directory to its user, deploy again.
    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    ctl.run(&["stop", "--key", &key, "--app", "web"])
        .unwrap()
        .assert_code(0);
    let app_dir = env.data_dir.join("apps/web");
    fs::set_permissions(&app_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let v2 = make_artifact(&env, "2.0.0", "").unwrap();
    let args = deploy_args(
        &env.keys.deployer,
        "2.0.0",
        &v2,
        &["--strategy", "rolling", "--instances", "2"],
    );
    let out = ctl.run(&strs(&args)).unwrap();
    fs::set_permissions(&app_dir, fs::Permissions::from_mode(0o755)).unwrap();
    out.assert_code(1);
    let text = out.all();
    assert!(
        text.contains(&format!(
            "the front door runs as {} and could not be started",
            env.app_user
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("cannot search {} (mode 0700", app_dir.display())),
        "{text}"
    );
    assert!(!text.contains("route table"), "{text}");
}

/// The agent refuses to start when an app's user cannot reach its directory under the data
/// dir, naming the directory, the user and the fix; `check-config` says the same.
#[test]
fn an_app_dir_out_of_its_users_reach_is_refused_at_start_naming_the_directory() {
    if !is_root() {
        eprintln!("skipped: needs root (the app must run as another user than the agent)");
        return;
    }
    let env = TestEnv::new().unwrap();
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o700)).unwrap();
    let uid = nix::unistd::User::from_name(&env.app_user)
        .unwrap()
        .unwrap()
        .uid;
    let want = format!(
        "app web: {} (uid {uid}) cannot search {} (mode 0700",
        env.app_user,
        env.root.display()
    );
    let config = env.config.to_string_lossy().into_owned();
    let check = env
        .agent_cmd(&["check-config", "--config", &config])
        .unwrap();
    check.assert_code(2);
    assert!(check.stderr.contains(&want), "{}", check.all());
    assert!(
        check
            .stderr
            .contains(&format!("run `chmod o+x {}`", env.root.display())),
        "{}",
        check.all()
    );
    let err = Agent::start(&env).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&want), "{msg}");
    // Refused before it wrote anything: no audit log was opened.
    assert!(!env.data_dir.join("audit").exists(), "{msg}");
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o711)).unwrap();
}

/// Security review I7/J8: every trust anchor is guarded at start. A CA certificate or trusted
/// public key that others may write (or that is a symlink), or a directory that lets others
/// replace one, stops `check-config` and `run`, each refusal naming the path.
#[test]
fn i7_j8_writable_or_linked_trust_anchors_are_refused_at_start() {
    let env = TestEnv::new().unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let check = || {
        env.agent_cmd(&["check-config", "--config", &config])
            .unwrap()
    };
    check().assert_code(0);

    fs::set_permissions(&env.pki.ca, fs::Permissions::from_mode(0o666)).unwrap();
    let out = check();
    out.assert_code(2);
    let want = format!(
        "CA certificate {} is writable by its group and others (mode 0666",
        env.pki.ca.display()
    );
    assert!(out.stderr.contains(&want), "{}", out.all());
    fs::set_permissions(&env.pki.ca, fs::Permissions::from_mode(0o644)).unwrap();

    // A trusted key replaced by a link to another file.
    let real = env.root.join("deployer-real.pub");
    fs::rename(&env.keys.deployer.public, &real).unwrap();
    std::os::unix::fs::symlink(&real, &env.keys.deployer.public).unwrap();
    let out = check();
    out.assert_code(2);
    let want = format!(
        "trusted public key {} is a symlink to {}",
        env.keys.deployer.public.display(),
        real.display()
    );
    assert!(out.stderr.contains(&want), "{}", out.all());
    fs::remove_file(&env.keys.deployer.public).unwrap();
    fs::rename(&real, &env.keys.deployer.public).unwrap();

    // The directory holding the keys, writable by its group.
    let keys_dir = env.keys.deployer.public.parent().unwrap().to_owned();
    fs::set_permissions(&keys_dir, fs::Permissions::from_mode(0o775)).unwrap();
    let out = check();
    out.assert_code(2);
    let want = format!("directory {} is writable by its group", keys_dir.display());
    assert!(out.stderr.contains(&want), "{}", out.all());
    let err = Agent::start(&env).unwrap_err();
    assert!(format!("{err:#}").contains(&want), "{err:#}");
    assert!(
        !env.data_dir.join("audit").exists(),
        "refused before anything was written"
    );
    fs::set_permissions(&keys_dir, fs::Permissions::from_mode(0o755)).unwrap();
    check().assert_code(0);
}

/// Security review G12: a deploy with `--secret-env`, succeeding and failing, leaves the value
/// nowhere the agent writes or answers: audit files, `audit tail`, the agent's log, status,
/// and the job's events.
#[test]
fn g12_a_secret_env_value_appears_nowhere_after_a_deploy_that_succeeds_or_fails() {
    const SECRET: &str = "s3cr3t-VALUE-8d1f0c";
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let v2 = make_artifact(&env, "1.1.0", "never-healthy").unwrap();
    let secret = format!("DB_PASSWORD={SECRET}");
    let mut seen = String::new();
    for (version, artifact, code) in [("1.0.0", &v1, 0), ("1.1.0", &v2, 1)] {
        let args = deploy_args(
            &env.keys.deployer,
            version,
            artifact,
            &[
                "--health",
                "http:/health",
                "--health-interval",
                "200ms",
                "--health-deadline",
                "3s",
                "--secret-env",
                &secret,
            ],
        );
        let out = ctl.run(&strs(&args)).unwrap();
        out.assert_code(code);
        seen.push_str(&out.all());
    }
    // The instance did get it: the secret reached the process, just nothing else.
    let pid = recorded_instance_pids(&env.data_dir)[0];
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains(&secret),
        "the instance did not get the secret"
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["audit", "tail", "-n", "200"],
    ] {
        let out = ctl.run(args).unwrap();
        out.assert_code(0);
        seen.push_str(&out.all());
    }
    let audit = env.data_dir.join("audit").to_string_lossy().into_owned();
    seen.push_str(
        &env.agent_cmd(&["audit", "tail", "--dir", &audit, "-n", "500", "--json"])
            .unwrap()
            .all(),
    );
    for file in gantry_tests::probe::audit_files(&env.data_dir.join("audit")).unwrap() {
        seen.push_str(&fs::read_to_string(file).unwrap());
    }
    seen.push_str(&agent.log_text());
    assert!(!seen.contains(SECRET), "the secret value leaked");
    assert!(
        seen.contains("hmac-sha256:"),
        "the audit log names the secret key only by hash"
    );
}
