use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Parser;
use gantry_proto::fleet;
use gantry_proto::keys::write_keypair;
use gantry_proto::v1::OnFailure;

use super::plan::build_plan;
use super::*;
use crate::cli::{Cli, Command, RolloutCommand, RolloutPlanArgs, RolloutSignArgs};
use crate::commands::job::SigCheck;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn artifact(dir: &Path) -> PathBuf {
    let path = dir.join("web.tar.gz");
    std::fs::write(&path, b"not really a tarball").unwrap();
    path
}

/// `gantry rollout plan` with `extra` flags, parsed as the binary parses them.
fn plan_args(dir: &Path, extra: &[&str]) -> RolloutPlanArgs {
    let out = dir.join("web.plan");
    let artifact = artifact(dir);
    let mut argv = vec![
        "gantry".to_owned(),
        "rollout".to_owned(),
        "plan".to_owned(),
        "--out".to_owned(),
        out.to_string_lossy().into_owned(),
        "--app".to_owned(),
        "web".to_owned(),
        "--version".to_owned(),
        "2.0.0".to_owned(),
        "--artifact".to_owned(),
        artifact.to_string_lossy().into_owned(),
        "--health".to_owned(),
        "http:/health".to_owned(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv.extend(["--".to_owned(), "bin/web".to_owned()]);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Rollout(RolloutCommand::Plan(a)) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_plan_has_the_release_of_job_create_and_rings_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let args = plan_args(
        dir.path(),
        &[
            "--plan-id",
            "rel-2",
            "--environment",
            "production",
            "--ring",
            "name=canary,ids=web-1",
            "--ring",
            "name=everyone,labels=ring:1;region:eu,max_parallel=25%,min_healthy=90%,bake=1h,on_failure=rollback_all,max_restarts=2,host_deadline=20m",
        ],
    );
    let plan = build_plan(&args, now()).unwrap();
    assert_eq!(plan.plan_id, "rel-2");
    assert_eq!(plan.environment, "production");
    let release = plan.release.as_ref().unwrap();
    assert_eq!(release.version, "2.0.0");
    assert_eq!(release.command, vec!["bin/web".to_owned()]);
    assert_eq!(release.artifact_size, 20);
    // A plan's default validity is a week, not a job's quarter of an hour.
    assert_eq!(plan.expires_at - plan.not_before, 7 * 86_400);
    assert_eq!(plan.rings.len(), 2);
    let canary = &plan.rings[0];
    assert_eq!(canary.name, "canary");
    assert_eq!(canary.selector.as_ref().unwrap().agent_ids, vec!["web-1"]);
    assert_eq!(
        (canary.max_parallel.as_str(), canary.min_healthy.as_str()),
        ("1", "100%")
    );
    assert_eq!(canary.on_failure, i32::from(OnFailure::Halt));
    let all = &plan.rings[1];
    assert_eq!(all.selector.as_ref().unwrap().labels.len(), 2);
    assert_eq!(
        (all.max_parallel.as_str(), all.min_healthy.as_str()),
        ("25%", "90%")
    );
    assert_eq!(all.bake_ms, 3_600_000);
    assert_eq!(all.on_failure, i32::from(OnFailure::RollbackAll));
    assert_eq!(all.gates.as_ref().unwrap().max_restarts, 2);
    assert_eq!(all.host_deadline_ms, 20 * 60_000);
}

#[test]
fn rings_come_from_a_toml_file_before_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rings.toml");
    std::fs::write(
        &file,
        "[[ring]]\nname = \"canary\"\nagent_ids = [\"web-1\"]\nbake = \"30m\"\n\n\
         [[ring]]\nname = \"rest\"\nlabels = { ring = \"1\" }\non_failure = \"rollback_ring\"\n",
    )
    .unwrap();
    let rings = file.to_string_lossy().into_owned();
    let args = plan_args(
        dir.path(),
        &["--rings", &rings, "--ring", "name=last,ids=web-9"],
    );
    let plan = build_plan(&args, now()).unwrap();
    let names: Vec<&str> = plan.rings.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["canary", "rest", "last"]);
    assert_eq!(plan.rings[0].bake_ms, 30 * 60_000);
    assert_eq!(plan.rings[1].on_failure, i32::from(OnFailure::RollbackRing));

    std::fs::write(&file, "[[ring]]\nname = \"x\"\nselector = 1\n").unwrap();
    let err = build_plan(&plan_args(dir.path(), &["--rings", &rings]), now()).unwrap_err();
    assert!(matches!(err, RolloutError::ParseRings { .. }), "{err:?}");
    assert!(err.to_string().contains("rings.toml"), "{err}");
}

#[test]
fn bad_rings_and_job_only_flags_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |extra: &[&str]| {
        let err = build_plan(&plan_args(dir.path(), extra), now()).unwrap_err();
        assert_eq!(err.exit(), crate::exit::Exit::Usage, "{err:?}");
        crate::report::chain(&err).join(": ")
    };
    assert!(refused(&[]).contains("at least one ring"));
    assert!(refused(&["--ring", "name=a"]).contains("selects no agent"));
    assert!(refused(&["--ring", "ids=a"]).contains("has no name"));
    assert!(refused(&["--ring", "name=a,ids=b,max_parallel=0"]).contains("max_parallel"));
    assert!(refused(&["--ring", "name=a,ids=b,min_healthy=120%"]).contains("1% to 100%"));
    assert!(refused(&["--ring", "name=a,ids=b,on_failure=panic"]).contains("on_failure"));
    assert!(refused(&["--ring", "name=a,ids=b,colour=red"]).contains("unknown key"));
    assert!(refused(&["--ring", "name=a,ids=b", "--job-id", "j1"]).contains("--job-id"));
    assert!(refused(&["--ring", "name=a,ids=b", "--action", "stop"]).contains("--action"));
}

fn written_plan(dir: &Path) -> PathBuf {
    let args = plan_args(
        dir,
        &["--plan-id", "rel-2", "--ring", "name=all,labels=ring:1"],
    );
    let file = PlanFile::new(build_plan(&args, now()).unwrap());
    file.write(&args.out).unwrap();
    args.out
}

#[test]
fn signing_adds_one_plan_signature_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_plan(dir.path());
    let before = PlanFile::read(&path).unwrap();
    let (alice, alice_key, _) = write_keypair(&dir.path().join("alice")).unwrap();
    let (bob, bob_key, _) = write_keypair(&dir.path().join("bob")).unwrap();
    sign(&RolloutSignArgs {
        key: alice_key.clone(),
        plan: path.clone(),
    })
    .unwrap();
    approve(
        &RolloutSignArgs {
            key: bob_key,
            plan: path.clone(),
        },
        Some("explored the demo"),
    )
    .unwrap();
    let err = sign(&RolloutSignArgs {
        key: alice_key,
        plan: path.clone(),
    })
    .unwrap_err();
    assert!(matches!(err, RolloutError::AlreadySigned { .. }), "{err:?}");
    let after = PlanFile::read(&path).unwrap();
    // The plan bytes never change; only signatures are added.
    assert_eq!(after.signed.plan, before.signed.plan);
    assert_eq!(after.signed.signatures.len(), 2);
    let s = &after.signed.signatures[0];
    fleet::verify_plan(&alice.public_key(), &after.signed.plan, &s.sig).unwrap();
    // A plan signature is not a job signature.
    assert!(
        gantry_proto::envelope::verify_job(&alice.public_key(), &after.signed.plan, &s.sig)
            .is_err()
    );
    let checks = show::check_signatures(&after.signed, &[alice.public_key()]);
    assert_eq!(checks, vec![SigCheck::Valid, SigCheck::NotChecked]);
    // Bob's comment is bound to this plan's digest by his key, and to nothing else.
    let [c] = after.signed.comments.as_slice() else {
        panic!("{:?}", after.signed.comments)
    };
    assert_eq!(c.comment, "explored the demo");
    let digest = after.digest();
    assert_eq!(
        crate::commands::job::comment_verdict(c, &digest, &[bob.public_key()]),
        "valid"
    );
    assert_eq!(
        crate::commands::job::comment_verdict(c, &digest, &[alice.public_key()]),
        "not checked (no matching --pubkey)"
    );
    assert_eq!(
        crate::commands::job::comment_verdict(c, &"0".repeat(64), &[bob.public_key()]),
        "INVALID"
    );
    let text = show::show_text(&after, &checks, &[bob.public_key()], 1_800_000_000);
    assert!(
        text.contains(&format!(
            "comment     by key {} (valid): explored the demo",
            bob.key_id()
        )),
        "{text}"
    );
    let json = show::show_json(&after, &checks, &[bob.public_key()]);
    assert_eq!(json["comments"][0]["check"], "valid", "{json}");
}

#[test]
fn show_prints_the_plan_its_rings_digest_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_plan(dir.path());
    let file = PlanFile::read(&path).unwrap();
    let text = show::show_text(&file, &[], &[], 1_800_000_000);
    for want in [
        "plan        rel-2\n",
        "app         web\n",
        "environment (none: only agents with no environment)\n",
        "version     2.0.0\n",
        "  0 all: every agent labelled ring=1; max 1 at once, 100% healthy, bake 0, on failure halt",
        &format!("digest      {}\n", fleet::plan_digest(&file.signed.plan)),
        "signatures  none (sign with: gantry rollout sign --key KEY FILE)\n",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let json = show::show_json(&file, &[], &[]);
    assert_eq!(json["plan_id"], "rel-2");
    assert_eq!(json["rings"][0]["labels"]["ring"], "1");
    assert_eq!(json["rings"][0]["on_failure"], "halt");
    assert_eq!(json["digest"], fleet::plan_digest(&file.signed.plan));
}
