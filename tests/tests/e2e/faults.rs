//! Faults: the agent killed with SIGKILL under load and mid-deploy, and artifacts that lie
//! about their digest or try to escape the release directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use gantry_tests::artifact::outside_dir;
use gantry_tests::grpc::{upload_raw, upload_raw_as};
use gantry_tests::{
    Agent, Controller, Hostile, TestEnv, audit_events, audit_lines, banner, make_artifact,
    make_hostile_artifact, rfc3339, unix_now, wait_until,
};

use crate::{create_job, deploy, deploy_args, mentions, releases, sign_job_file, strs};

fn verify_audit(env: &TestEnv) -> gantry_tests::Output {
    let audit = env.data_dir.join("audit").to_string_lossy().into_owned();
    let pubkey = env.keys.agent.public.to_string_lossy().into_owned();
    env.agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &pubkey])
        .unwrap()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &fs::read(path).unwrap(),
    ))
}

/// Every file named `name` under `dir`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name() == name {
            found.push(path.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_named(&path, name));
        }
    }
    found
}

#[test]
fn sigkill_during_a_burst_of_appends_loses_no_acknowledged_entry() {
    const WRITERS: usize = 10;
    let env = TestEnv::new().unwrap();
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    // Jobs refused (not yet valid) after being decoded: every answer is a durable append.
    let later = rfc3339(unix_now() + 3600);
    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    let jobs: Vec<(String, String)> = (0..WRITERS)
        .map(|i| {
            let id = format!("burst-{i}");
            let file = env
                .root
                .join(format!("{id}.job"))
                .to_string_lossy()
                .into_owned();
            let create = [
                "job",
                "create",
                "--out",
                &file,
                "--agent-id",
                &env.agent_id,
                "--app",
                "web",
                "--action",
                "stop",
                "--not-before",
                &later,
                "--job-id",
                &id,
            ];
            env.gantry(&create).unwrap().assert_code(0);
            env.gantry(&["job", "sign", "--key", &key, &file])
                .unwrap()
                .assert_code(0);
            (id, file)
        })
        .collect();

    // Each writer resubmits its job until the agent is gone, counting the answered ones.
    let answered = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = jobs
        .into_iter()
        .map(|(id, file)| {
            let (ctl, answered, killed) = (ctl.clone(), Arc::clone(&answered), Arc::clone(&killed));
            thread::spawn(move || {
                let (mut acknowledged, mut other_3) = (0, Vec::new());
                while !killed.load(Ordering::SeqCst) && acknowledged < 500 {
                    let out = ctl.run(&["job", "submit", &file]).unwrap();
                    // Acknowledged: the agent's own answer, naming why it refused the job.
                    if out.code == 3 && mentions(&out.stderr, &["not valid before"]) {
                        acknowledged += 1;
                        answered.fetch_add(1, Ordering::SeqCst);
                    } else if out.code == 3 {
                        other_3.push(out.stderr);
                    }
                }
                (id, acknowledged, other_3)
            })
        })
        .collect();
    wait_until(
        Duration::from_secs(120),
        "40 submissions are answered",
        || answered.load(Ordering::SeqCst) >= 40,
    )
    .unwrap();
    agent.kill_9().unwrap();
    killed.store(true, Ordering::SeqCst);
    let results: Vec<(String, usize, Vec<String>)> =
        writers.into_iter().map(|h| h.join().unwrap()).collect();
    for (_, _, other) in &results {
        for stderr in other {
            eprintln!("exit 3 without the agent's answer (connection lost?): {stderr}");
        }
    }
    let acknowledged: Vec<(String, usize)> =
        results.into_iter().map(|(id, n, _)| (id, n)).collect();
    let total: usize = acknowledged.iter().map(|(_, n)| n).sum();
    eprintln!("{total} submissions acknowledged before SIGKILL");

    let mut agent = Agent::start(&env).unwrap();
    agent.terminate().unwrap();
    verify_audit(&env).assert_code(0);

    // Past 50 a second the agent counts rejections in `job.rejected.summary` entries instead of
    // recording each; a counted rejection is answered only once its summary is durable.
    let rejected = audit_events(&env, "job.rejected").unwrap();
    let summarized: u64 = audit_events(&env, "job.rejected.summary")
        .unwrap()
        .iter()
        .filter_map(|e| e["count"].as_u64())
        .sum();
    let summarized = usize::try_from(summarized).unwrap();
    let recorded = rejected.len() + summarized;
    assert!(
        recorded >= total,
        "{total} rejections acknowledged, {recorded} recorded"
    );
    for (id, n) in &acknowledged {
        let full = rejected
            .iter()
            .filter(|e| e["job_id"] == id.as_str())
            .count();
        assert!(
            full + summarized >= *n,
            "{n} rejections of {id} acknowledged, {full} recorded (+{summarized} counted)"
        );
    }
    let torn = fs::read_dir(env.data_dir.join("audit"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("torn-"));
    if torn {
        assert!(
            !audit_events(&env, "audit.recovered").unwrap().is_empty(),
            "a torn tail was set aside without an audit.recovered entry"
        );
    }
}

#[test]
fn sigkill_mid_deploy_is_recorded_as_interrupted_and_the_app_keeps_serving() {
    let env = TestEnv::new().unwrap();
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &v1, 1, "20s").assert_code(0);
    // v2 takes its time to bind, so the agent is mid-deploy when it dies.
    let v2 = make_artifact(&env, "2.0.0", "slow-start=5").unwrap();
    let background = {
        let ctl = ctl.clone();
        let args = deploy_args(
            &env.keys.deployer,
            "2.0.0",
            &v2,
            &["--health", "http:/health", "--health-deadline", "30s"],
        );
        thread::spawn(move || ctl.run(&strs(&args)).unwrap())
    };
    wait_until(Duration::from_secs(60), "the v2 job is accepted", || {
        audit_events(&env, "job.accepted").is_ok_and(|a| a.len() >= 2)
    })
    .unwrap();
    agent.kill_9().unwrap();
    let v2_job = audit_events(&env, "job.accepted").unwrap()[1]["job_id"].clone();

    let mut agent = Agent::start(&env).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the v2 job is recorded as interrupted",
        || {
            audit_events(&env, "job.interrupted")
                .is_ok_and(|i| i.iter().any(|e| e["job_id"] == v2_job))
        },
    )
    .unwrap();
    wait_until(Duration::from_secs(60), "web answers again", || {
        banner(env.port(0)).is_some_and(|b| b.starts_with("web "))
    })
    .unwrap();
    agent.terminate().unwrap();
    verify_audit(&env).assert_code(0);
    // The controller that watched the interrupted deploy lost its agent: not a success.
    let interrupted_deploy = background.join().unwrap();
    assert_ne!(interrupted_deploy.code, 0, "{}", interrupted_deploy.all());
}

#[test]
fn artifact_that_does_not_match_the_signed_digest_is_refused() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let signed_for = make_artifact(&env, "1.0.0", "").unwrap();
    let other = make_artifact(&env, "1.0.0", "never-healthy").unwrap();
    let job = env.root.join("digest.job").to_string_lossy().into_owned();
    create_job(
        &env,
        Path::new(&job),
        "1.0.0",
        &signed_for,
        &["--health", "http:/health", "--", "bin/gantry-sample-app"],
    );
    sign_job_file(&env, Path::new(&job), &env.keys.deployer);

    // The CLI compares the file with the job before it uploads anything ...
    let out = ctl
        .run(&[
            "job",
            "submit",
            "--artifact",
            &other.to_string_lossy(),
            &job,
        ])
        .unwrap();
    assert_ne!(
        out.code,
        0,
        "a job ran with an artifact of another digest\n{}",
        out.all()
    );

    // ... so claim the signed digest for other bytes on the wire: the agent must refuse.
    let digest = sha256_hex(&signed_for);
    let size = fs::metadata(&signed_for).unwrap().len();
    let bytes = fs::read(&other).unwrap();
    let other_size = u64::try_from(bytes.len()).unwrap();
    for claimed_size in [size, other_size] {
        let refused = upload_raw(&env, &agent, &digest, claimed_size, &bytes).unwrap();
        assert!(
            refused.is_err(),
            "upload of other bytes as {digest} accepted: {refused:?}"
        );
    }
    let store = env.data_dir.join("artifacts/sha256");
    assert!(
        !store.join(&digest).exists(),
        "{digest} is in the store but was never uploaded"
    );
    assert_eq!(
        find_files(&store),
        Vec::<PathBuf>::new(),
        "refused uploads left files behind"
    );

    // Without the artifact in the store the signed job cannot run.
    let out = ctl.run(&["job", "submit", &job]).unwrap();
    assert_ne!(
        out.code,
        0,
        "the job ran without its artifact\n{}",
        out.all()
    );
    assert_eq!(
        releases(&env),
        Vec::<String>::new(),
        "something was unpacked"
    );
    assert!(audit_events(&env, "job.succeeded").unwrap().is_empty());
    assert_eq!(banner(env.port(0)), None, "an instance answers");
}

/// Every regular file under `dir`.
fn find_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => found.extend(find_files(&e.path())),
            Ok(_) => found.push(e.path()),
            Err(_) => {}
        }
    }
    found
}

#[test]
fn hostile_archives_are_refused_before_anything_is_unpacked() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    for (kind, version, entry) in [
        (Hostile::Traversal, "1.0.1", "../evil"),
        (Hostile::SymlinkEscape, "1.0.2", "escape"),
        (Hostile::AbsolutePath, "1.0.3", "outside/evil"),
    ] {
        let artifact = make_hostile_artifact(&env, kind).unwrap();
        let out = deploy(&ctl, &env, version, &artifact, 1, "5s");
        out.assert_code(1);
        let finished = out.finished().unwrap();
        assert_eq!(finished["outcome"], "failed", "{kind:?}: {finished}");
        let reason = finished["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(entry),
            "{kind:?}: reason does not name {entry:?}: {reason}"
        );
        assert_eq!(
            releases(&env),
            Vec::<String>::new(),
            "{kind:?}: something was unpacked"
        );
        assert_eq!(
            find_named(&env.root, "evil"),
            Vec::<PathBuf>::new(),
            "{kind:?} wrote evil"
        );
        assert_eq!(
            fs::read_dir(outside_dir(&env)).unwrap().count(),
            0,
            "{kind:?} wrote outside the release"
        );
    }
    assert_eq!(banner(env.port(0)), None, "an instance answers");
    let lines = audit_lines(&env).unwrap();
    assert!(
        lines.iter().all(|e| e["event"] != "job.succeeded"),
        "{lines:#?}"
    );
}

#[test]
fn a_release_over_max_unpacked_bytes_is_refused_naming_the_limit() {
    // The sample app's archive is a few MB and unpacks to more than 1 MiB.
    let env = TestEnv::new().unwrap();
    let mut raw = env.raw_config();
    raw.limits.max_unpacked_bytes = 1 << 20;
    env.write_raw_config(&raw).unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let artifact = make_artifact(&env, "1.0.0", "").unwrap();
    let out = deploy(&ctl, &env, "1.0.0", &artifact, 1, "5s");
    out.assert_code(1);
    let finished = out.finished().unwrap();
    assert_eq!(finished["outcome"], "failed", "{finished}");
    let reason = finished["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("unpacks to more than 1048576 bytes"),
        "the reason does not give the configured limit: {reason}"
    );
    assert_eq!(
        releases(&env),
        Vec::<String>::new(),
        "something was unpacked"
    );
    let policy = env
        .agent_cmd(&["policy", "--config", &env.config.to_string_lossy()])
        .unwrap();
    policy.assert_code(0);
    assert!(
        policy.stdout.contains("max unpacked release size") && policy.stdout.contains("1048576"),
        "{}",
        policy.stdout
    );
}

#[test]
fn leftover_temp_files_from_a_crash_are_removed_at_start() {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    let env = TestEnv::new().unwrap();
    // What a kill -9 mid-upload and mid-unpack leaves, laid out (and moded) as the agent lays
    // out its data directory, so that its start-up permission checks accept it.
    let objects = env.data_dir.join("artifacts").join("sha256");
    let unpack = env.releases_dir().join(".unpack-1.0.0-leftover");
    for (dir, mode) in [
        (&env.data_dir, 0o711),
        (&env.data_dir.join("artifacts"), 0o700),
        (&objects, 0o700),
        (&env.data_dir.join("apps"), 0o755),
        (&env.data_dir.join("apps").join("web"), 0o755),
        (&env.releases_dir(), 0o755),
        (&unpack, 0o700),
    ] {
        fs::DirBuilder::new().mode(mode).create(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    let upload = objects.join(".upload-leftover");
    fs::write(&upload, vec![7u8; 64 * 1024]).unwrap();
    fs::write(unpack.join("file"), b"half an unpacked release").unwrap();
    // A state write that died before its rename (case D8).
    let state_tmp = env.data_dir.join("apps/web/.state.json.tmp-4242");
    fs::write(&state_tmp, b"{\"current\":").unwrap();

    let agent = Agent::start(&env).unwrap();
    assert!(
        fs::symlink_metadata(&upload).is_err(),
        "the partial upload is still there"
    );
    assert!(
        fs::symlink_metadata(&unpack).is_err(),
        "the partial unpack is still there"
    );
    assert!(
        fs::symlink_metadata(&state_tmp).is_err(),
        "the half-written state temp file is still there"
    );
    assert_eq!(releases(&env), Vec::<String>::new());
    assert!(objects.is_dir() && env.releases_dir().is_dir());
    wait_until(
        Duration::from_secs(10),
        "the agent logs both removals",
        || {
            let log = agent.log_text();
            log.lines().any(|l| {
                l.contains("removed 1 leftover temporary file(s)") && l.contains(".upload-leftover")
            }) && log.lines().any(|l| {
                l.contains("removed 1 leftover temporary file(s)")
                    && l.contains(".unpack-1.0.0-leftover")
            }) && log.lines().any(|l| {
                l.contains("interrupted state write of app web")
                    && l.contains(".state.json.tmp-4242")
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log_tail()));
}

/// Issue (security review H7): one agent per data dir. A second agent on the same config exits
/// before it writes anything, naming the data dir and the pid that holds it; the first one
/// goes on undisturbed.
#[test]
fn a_second_agent_on_the_same_data_dir_exits_before_it_writes() {
    let env = TestEnv::new().unwrap();
    let first = Agent::start(&env).unwrap();
    let pid = first.pid().unwrap();
    let before = gantry_tests::audit_lines(&env).unwrap().len();
    // Run by hand: a failed `Agent::start` would clean up every process of the test.
    let config = env.config.to_string_lossy().into_owned();
    let second = env.agent_cmd(&["run", "--config", &config]).unwrap();
    second.assert_code(2);
    let msg = second.stderr;
    assert!(
        msg.contains(&format!(
            "another agent (pid {pid}) is running on the data directory {}",
            env.data_dir.display()
        )),
        "{msg}"
    );
    assert_eq!(
        gantry_tests::audit_lines(&env).unwrap().len(),
        before,
        "{msg}"
    );
    assert_eq!(
        gantry_tests::audit_events(&env, "agent.started")
            .unwrap()
            .len(),
        1
    );
    // The first agent still answers.
    let ctl = Controller::new(&env, &first);
    ctl.run(&["status"]).unwrap().assert_code(0);
}

/// Issue: `gantry stop` did not survive an agent restart; the restarted agent brought the
/// stopped instances and the front door back. A stopped app now stays stopped, across a
/// SIGTERM restart and a kill -9, until a deploy starts it again.
#[test]
fn a_stopped_app_stays_stopped_across_agent_restarts_until_the_next_deploy() {
    let env = TestEnv::with_options(gantry_tests::Options::front_door(2)).unwrap();
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let rolling = [
        "--strategy",
        "rolling",
        "--instances",
        "2",
        "--health",
        "http:/health",
        "--health-interval",
        "200ms",
    ];
    ctl.run(&strs(&deploy_args(
        &env.keys.deployer,
        "1.0.0",
        &v1,
        &rolling,
    )))
    .unwrap()
    .assert_code(0);
    let listen = env.listen.unwrap();
    gantry_tests::load::fetch_version(listen, Duration::from_secs(5)).unwrap();
    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    ctl.run(&["stop", "--key", &key, "--app", "web"])
        .unwrap()
        .assert_code(0);
    let nothing_serves = || {
        gantry_tests::load::fetch_version(listen, Duration::from_millis(500)).is_err()
            && (0..4).all(|i| banner(env.port(i)).is_none())
    };
    assert!(nothing_serves(), "the stop left something serving");
    // The agent's own answer: no rollout text left from the finished deploy, and no
    // backends for a front door that is stopped.
    let status = gantry_tests::grpc::status_raw(&env, &agent).unwrap();
    let web = status.apps.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.rollout, "", "{web:?}");
    assert!(web.backends.is_empty(), "{web:?}");

    agent.terminate().unwrap();
    let mut agent = Agent::start(&env).unwrap();
    assert!(
        nothing_serves(),
        "a SIGTERM restart brought the stopped app back"
    );
    agent.kill_9().unwrap();
    let agent = Agent::start(&env).unwrap();
    assert!(
        nothing_serves(),
        "a restart after kill -9 brought the stopped app back"
    );
    assert!(
        audit_events(&env, "instance.restarted").unwrap().is_empty(),
        "instances were restarted"
    );

    // The next deploy starts it again, front door included.
    let ctl = Controller::new(&env, &agent);
    let v2 = make_artifact(&env, "2.0.0", "").unwrap();
    ctl.run(&strs(&deploy_args(
        &env.keys.deployer,
        "2.0.0",
        &v2,
        &rolling,
    )))
    .unwrap()
    .assert_code(0);
    assert_eq!(
        gantry_tests::load::fetch_version(listen, Duration::from_secs(5)).unwrap(),
        "2.0.0"
    );
}

/// Case J9: the artifact store has a quota and is collected. An upload past
/// `limits.max_store_bytes` is refused naming use and quota, and leaves nothing; after a
/// deploy, artifacts no kept release uses (older than `limits.unused_artifact_ttl`) are
/// removed and recorded.
#[test]
fn j9_the_artifact_store_keeps_to_its_quota_and_drops_what_no_release_uses() {
    let env = TestEnv::new().unwrap();
    let configure = |quota: u64| {
        let mut raw = env.raw_config();
        raw.limits.releases_kept = 1;
        raw.limits.unused_artifact_ttl = "0s".to_owned();
        raw.limits.max_artifact_bytes = 6 << 20;
        raw.limits.max_store_bytes = quota;
        env.write_raw_config(&raw).unwrap();
    };
    configure(10 << 20);
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let store = env.data_dir.join("artifacts/sha256");
    let stored = || fs::read_dir(&store).unwrap().count();
    let artifacts: Vec<PathBuf> = ["1.0.0", "2.0.0", "3.0.0"]
        .iter()
        .map(|v| make_artifact(&env, v, "").unwrap())
        .collect();
    let digests: Vec<String> = artifacts.iter().map(|a| sha256_hex(a)).collect();
    for (version, artifact) in ["1.0.0", "2.0.0"].iter().zip(&artifacts) {
        deploy(&ctl, &env, version, artifact, 1, "20s").assert_code(0);
    }
    // Two artifacts of ~4 MB are stored, both in use (current and previous); a third would
    // pass the 10 MiB quota.
    let out = deploy(&ctl, &env, "3.0.0", &artifacts[2], 1, "20s");
    out.assert_code(3);
    assert!(
        out.stderr.contains("would take the store past its quota")
            && out.stderr.contains("limits.max_store_bytes")
            && out.stderr.contains("of 10485760 bytes are in use"),
        "{}",
        out.all()
    );
    assert_eq!(stored(), 2, "nothing is left of the refused upload");

    agent.terminate().unwrap();
    configure(20 << 20);
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    deploy(&ctl, &env, "3.0.0", &artifacts[2], 1, "20s").assert_code(0);
    // v1 is neither current nor previous now: pruned, and its artifact collected.
    assert!(
        !store.join(&digests[0]).exists(),
        "v1's artifact is still stored"
    );
    assert!(store.join(&digests[1]).exists() && store.join(&digests[2]).exists());
    assert_eq!(stored(), 2);
    let collected = audit_events(&env, "artifacts.collected").unwrap();
    assert!(
        collected.iter().any(|e| e["sha256"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == digests[0].as_str()))),
        "{collected:?}"
    );
}

/// Case J9, a controller certificate alone cannot fill the store: a second controller
/// certificate uploads distinct artifacts (no job, no signing key) until the agent refuses it
/// with `RESOURCE_EXHAUSTED` naming its budget and the numbers, recorded as `artifact.refused`
/// with its fingerprint; the real controller's signed job is still admitted and deployed.
#[test]
fn j9_one_certificate_cannot_fill_the_store_and_another_controller_still_deploys() {
    const BLOB: usize = 1 << 20;
    const BUDGET: u64 = 8 << 20;
    let env = TestEnv::new().unwrap();
    let mut raw = env.raw_config();
    raw.tls.client_names.push("bulk-uploader".to_owned());
    raw.limits.max_artifact_bytes = 6 << 20;
    raw.limits.max_unused_bytes_per_client = BUDGET;
    raw.limits.max_store_bytes = 64 << 20;
    env.write_raw_config(&raw).unwrap();
    let (cert, key) = env.add_controller_cert("bulk-uploader").unwrap();
    let fingerprint = gantry_tests::certs::fingerprint(&cert).unwrap();
    let agent = Agent::start(&env).unwrap();

    let mut stored = 0u64;
    let refused = loop {
        let blob: Vec<u8> = (0..BLOB)
            .map(|i| (i as u64 ^ stored.wrapping_mul(0x9e37)) as u8)
            .collect();
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &blob));
        let answer =
            upload_raw_as(&env, &agent, (&cert, &key), &digest, BLOB as u64, &blob).unwrap();
        match answer {
            Ok(receipt) => {
                assert!(!receipt.already_present);
                stored += 1;
            }
            Err(status) => break status,
        }
        assert!(
            stored <= 8,
            "the budget of 8 MiB never stopped 1 MiB uploads"
        );
    };
    assert_eq!(stored, 8, "{refused:?}");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let msg = refused.message();
    assert!(
        msg.contains(&format!("client certificate {fingerprint}"))
            && msg.contains(&format!("they hold {} of {BUDGET} bytes", 8 * BLOB))
            && msg.contains("limits.max_unused_bytes_per_client"),
        "{msg}"
    );
    let entries = audit_events(&env, "artifact.refused").unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["reason"], "client_budget");
    assert_eq!(entries[0]["peer_fingerprint"], fingerprint.as_str());
    assert_eq!(entries[0]["size"], BLOB as u64);

    // The real controller's certificate has its own budget: its job is admitted and deployed.
    let ctl = Controller::new(&env, &agent);
    let artifact = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &artifact, 1, "20s").assert_code(0);
    let accepted = audit_events(&env, "job.succeeded").unwrap();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
}
