//! Fleet dispatches to a real agent, the test playing the controller service: it signs plans
//! with the environment's human keys and dispatches with an orchestrator key it generates.
//! A valid dispatch deploys once (resends attach, older epochs are refused, a rollback
//! returns the release the plan replaced); every refusal has its gRPC code, a message naming
//! the cause and a `job.rejected` entry with its reason, and runs nothing.

use std::path::PathBuf;

use gantry_policy::config::raw::RawConfig;
use gantry_proto::v1::{self, DispatchAction, SignedPlan, job_event};
use gantry_tests::fleet::{
    Orchestrator, dispatch, plan, release, request, ring_of_ids, ring_of_labels,
    sign_dispatch_with, sign_plan, trust_orchestrator,
};
use gantry_tests::grpc::{dispatch_raw, upload_raw};
use gantry_tests::{Agent, Controller, Options, TestEnv, audit_events, banner, make_artifact};
use tonic::Code;

use crate::{assert_serves, deploy, mentions};

/// One agent in environment `production` with label `ring = "1"`, trusting an orchestrator.
struct Fleet {
    env: TestEnv,
    agent: Agent,
    orchestrator: Orchestrator,
    artifact: PathBuf,
}

impl Fleet {
    fn start(options: Options) -> Fleet {
        Fleet::start_with(options, |_, raw| (raw, ())).0
    }

    /// [`Fleet::start`] with `config` adding to the agent's config before it starts; returns
    /// what it returned besides the config.
    fn start_with<T>(
        options: Options,
        config: impl FnOnce(&TestEnv, RawConfig) -> (RawConfig, T),
    ) -> (Fleet, T) {
        let env = TestEnv::with_options(options).unwrap();
        let orchestrator = Orchestrator::create(&env, "orchestrator").unwrap();
        let (mut raw, extra) = config(&env, env.raw_config());
        trust_orchestrator(
            &mut raw,
            &orchestrator.pair.public,
            Some("production"),
            &[("ring", "1")],
        );
        env.write_raw_config(&raw).unwrap();
        let agent = Agent::start(&env).unwrap();
        let artifact = make_artifact(&env, "2.0.0", "").unwrap();
        let bytes = std::fs::read(&artifact).unwrap();
        let digest = gantry_policy::job::Sha256Hex::of(&bytes).to_string();
        upload_raw(
            &env,
            &agent,
            &digest,
            u64::try_from(bytes.len()).unwrap(),
            &bytes,
        )
        .unwrap()
        .unwrap();
        let fleet = Fleet {
            env,
            agent,
            orchestrator,
            artifact,
        };
        (fleet, extra)
    }

    /// Plan `plan_id` of web 2.0.0 for `environment`: ring 0 `canary` (agent `web-9` only),
    /// ring 1 `everyone` (label `ring = 1`), signed by `keys`.
    fn plan(
        &self,
        plan_id: &str,
        environment: &str,
        keys: &[&gantry_tests::KeyPair],
    ) -> SignedPlan {
        let rel = release("2.0.0", &self.artifact, 1).unwrap();
        let p = plan(
            plan_id,
            environment,
            rel,
            vec![
                ring_of_ids("canary", &["web-9"]),
                ring_of_labels("everyone", &[("ring", "1")]),
            ],
        );
        sign_plan(&p, keys).unwrap()
    }

    fn signed_plan(&self, plan_id: &str) -> SignedPlan {
        let keys = &self.env.keys;
        self.plan(plan_id, "production", &[&keys.deployer, &keys.approver])
    }

    /// A valid dispatch of `action` to ring 1 at `epoch`.
    fn dispatch(&self, plan: &SignedPlan, epoch: u64, action: DispatchAction) -> v1::Dispatch {
        dispatch(plan, &self.env.agent_id, 1, epoch, action).unwrap()
    }

    fn send(
        &self,
        plan: &SignedPlan,
        d: &v1::Dispatch,
    ) -> Result<Vec<v1::JobEvent>, tonic::Status> {
        dispatch_raw(
            &self.env,
            &self.agent,
            request(plan, self.orchestrator.sign(d)),
        )
        .unwrap()
    }

    /// The dispatch was refused with `code`, a message naming one of `words`, and a
    /// `job.rejected` entry with `reason`; nothing was accepted.
    #[track_caller]
    fn assert_refused(
        &self,
        answer: Result<Vec<v1::JobEvent>, tonic::Status>,
        code: Code,
        reason: &str,
        words: &[&str],
    ) {
        let status = answer.expect_err("the dispatch was not refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            mentions(status.message(), words),
            "the message names none of {words:?}: {}",
            status.message()
        );
        let rejected = audit_events(&self.env, "job.rejected").unwrap();
        assert!(
            rejected.iter().any(|e| e["reason"] == reason
                && mentions(e["detail"].as_str().unwrap_or_default(), words)),
            "no job.rejected with reason {reason}: {rejected:#?}"
        );
        let accepted = audit_events(&self.env, "job.accepted").unwrap();
        assert!(accepted.is_empty(), "a refused dispatch ran: {accepted:?}");
        assert_eq!(banner(self.env.port(0)), None, "an instance answers");
    }
}

fn outcome(events: &[v1::JobEvent]) -> Option<v1::Outcome> {
    events.iter().find_map(|e| match &e.kind {
        Some(job_event::Kind::Finished(f)) => v1::Outcome::try_from(f.outcome).ok(),
        _ => None,
    })
}

#[test]
fn a_dispatched_plan_deploys_once_refuses_older_epochs_and_rolls_back_to_what_it_replaced() {
    let mut fleet = Fleet::start(Options::default());
    let env = &fleet.env;
    // What the plan replaces: 1.0.0, deployed directly.
    let old = make_artifact(env, "1.0.0", "").unwrap();
    let ctl = Controller::new(env, &fleet.agent);
    deploy(&ctl, env, "1.0.0", &old, 1, "20s").assert_code(0);
    assert_serves(env, "1.0.0", 1);

    let plan = fleet.signed_plan("rel-2.0.0");
    let first = fleet
        .send(&plan, &fleet.dispatch(&plan, 3, DispatchAction::Deploy))
        .unwrap();
    assert_eq!(outcome(&first), Some(v1::Outcome::Succeeded), "{first:?}");
    assert_serves(env, "2.0.0", 1);

    // The service restarted (or another replica took over): the same job, a higher epoch.
    let again = fleet
        .send(&plan, &fleet.dispatch(&plan, 4, DispatchAction::Deploy))
        .unwrap();
    assert_eq!(outcome(&again), Some(v1::Outcome::Succeeded), "{again:?}");
    let accepted = audit_events(env, "job.accepted").unwrap();
    let of_plan: Vec<_> = accepted
        .iter()
        .filter(|e| e["plan_id"] == "rel-2.0.0")
        .collect();
    assert_eq!(of_plan.len(), 1, "{accepted:#?}");
    let entry = of_plan[0];
    assert_eq!(entry["ring"], 1);
    assert_eq!(entry["ring_name"], "everyone");
    assert_eq!(entry["epoch"], 3);
    assert_eq!(entry["dispatch_action"], "deploy");
    assert_eq!(
        entry["plan_digest"],
        gantry_proto::fleet::plan_digest(&plan.plan)
    );
    assert_eq!(entry["plan_signer_key_ids"].as_array().unwrap().len(), 2);
    let resent = audit_events(env, "job.resubmitted").unwrap();
    assert!(resent.iter().any(|e| e["epoch"] == 4), "{resent:#?}");

    // A dispatch from the replica that lost its lease, before and after the agent restarts
    // with its plan records deleted: the highest epoch is on disk, and rebuilt from the audit
    // log when they are lost.
    // A dropped Agent kills every process under the test's root: the stopped one is kept.
    let mut stopped = Vec::new();
    for restart in [false, true] {
        if restart {
            fleet.agent.terminate().unwrap();
            std::fs::remove_dir_all(fleet.env.data_dir.join("plans")).unwrap();
            let again = Agent::start(&fleet.env).unwrap();
            stopped.push(std::mem::replace(&mut fleet.agent, again));
        }
        let stale = fleet.send(&plan, &fleet.dispatch(&plan, 3, DispatchAction::Deploy));
        let status = stale.expect_err("an older epoch was admitted");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("epoch 3") && status.message().contains("below 4"),
            "{status:?}"
        );
    }
    let env = &fleet.env;
    let rejected = audit_events(env, "job.rejected").unwrap();
    assert_eq!(
        rejected
            .iter()
            .filter(|e| e["reason"] == "stale_epoch")
            .count(),
        2,
        "{rejected:#?}"
    );
    let rebuilt = audit_events(env, "plan_store.rebuilt").unwrap();
    assert!(
        rebuilt.len() == 1 && rebuilt[0]["plan_ids"] == serde_json::json!(["rel-2.0.0"]),
        "{rebuilt:#?}"
    );

    // The ring failed: the service rolls this host back to what the plan replaced.
    let back = fleet
        .send(&plan, &fleet.dispatch(&plan, 4, DispatchAction::Rollback))
        .unwrap();
    assert!(
        matches!(
            outcome(&back),
            Some(v1::Outcome::Succeeded | v1::Outcome::RolledBack)
        ),
        "{back:?}"
    );
    assert_serves(env, "1.0.0", 1);
    let accepted = audit_events(env, "job.accepted").unwrap();
    assert!(
        accepted
            .iter()
            .any(|e| e["dispatch_action"] == "rollback" && e["action"] == "rollback"),
        "{accepted:#?}"
    );
}

#[test]
fn dispatch_refusals_are_specific_audited_and_run_nothing() {
    let fleet = Fleet::start(Options {
        approvals: 1,
        ..Options::default()
    });
    let env = &fleet.env;
    let keys = &env.keys;
    let good = fleet.signed_plan("rel-2.0.0");

    // A plan signed by a key the agent does not trust.
    let forged = fleet.plan("forged", "production", &[&keys.attacker]);
    fleet.assert_refused(
        fleet.send(&forged, &fleet.dispatch(&forged, 1, DispatchAction::Deploy)),
        Code::Unauthenticated,
        "plan_signature",
        &["plan's signatures", "trusted key"],
    );
    // A plan the deployer signed alone, where the policy wants one approval.
    let alone = fleet.plan("alone", "production", &[&keys.deployer]);
    fleet.assert_refused(
        fleet.send(&alone, &fleet.dispatch(&alone, 1, DispatchAction::Deploy)),
        Code::PermissionDenied,
        "plan_quorum",
        &["approval"],
    );
    // Ring 0 selects another agent by id.
    fleet.assert_refused(
        fleet.send(
            &good,
            &dispatch(&good, &env.agent_id, 0, 1, DispatchAction::Deploy).unwrap(),
        ),
        Code::PermissionDenied,
        "not_in_ring",
        &["not in ring 0", "web-9"],
    );
    // A staging plan on a production agent.
    let staging = fleet.plan("staging", "staging", &[&keys.deployer, &keys.approver]);
    fleet.assert_refused(
        fleet.send(
            &staging,
            &fleet.dispatch(&staging, 1, DispatchAction::Deploy),
        ),
        Code::PermissionDenied,
        "wrong_environment",
        &["environment \"staging\""],
    );
    // A dispatch that expired a minute ago.
    let mut expired = fleet.dispatch(&good, 1, DispatchAction::Deploy);
    expired.issued_at -= 180;
    expired.expires_at -= 120;
    fleet.assert_refused(
        fleet.send(&good, &expired),
        Code::FailedPrecondition,
        "dispatch_expired",
        &["expired"],
    );
    // A dispatch signed by the deployer's key, which holds no orchestrator role.
    let deployer = gantry_tests::fleet::read_key(&keys.deployer.key).unwrap();
    let by_deployer =
        sign_dispatch_with(&deployer, &fleet.dispatch(&good, 1, DispatchAction::Deploy));
    fleet.assert_refused(
        dispatch_raw(env, &fleet.agent, request(&good, by_deployer)).unwrap(),
        Code::PermissionDenied,
        "dispatch_role",
        &["role orchestrator"],
    );
    // A job id of the service's own choosing.
    let mut chosen = fleet.dispatch(&good, 1, DispatchAction::Deploy);
    chosen.job_id = "my-own-job-id".to_owned();
    fleet.assert_refused(
        fleet.send(&good, &chosen),
        Code::InvalidArgument,
        "wrong_job_id",
        &["job id \"my-own-job-id\""],
    );
    // A rollback of a plan that never deployed here.
    fleet.assert_refused(
        fleet.send(&good, &fleet.dispatch(&good, 1, DispatchAction::Rollback)),
        Code::FailedPrecondition,
        "rollback_without_deploy",
        &["never ran"],
    );
    // A release candidate in production, whose environment refuses pre-releases: a plan
    // obeys the environment's rules as a job does.
    let rc = plan(
        "rel-2.0.0-rc.1",
        "production",
        release("2.0.0-rc.1", &fleet.artifact, 1).unwrap(),
        vec![
            ring_of_ids("canary", &["web-9"]),
            ring_of_labels("everyone", &[("ring", "1")]),
        ],
    );
    let rc = sign_plan(&rc, &[&keys.deployer, &keys.approver]).unwrap();
    fleet.assert_refused(
        fleet.send(&rc, &fleet.dispatch(&rc, 1, DispatchAction::Deploy)),
        Code::FailedPrecondition,
        "prerelease_refused",
        &["2.0.0-rc.1 is a pre-release", "production"],
    );
}

#[test]
fn a_plan_made_signed_and_approved_with_the_cli_is_explained_and_admitted_by_a_real_agent() {
    let fleet = Fleet::start(Options {
        approvals: 1,
        ..Options::default()
    });
    let env = &fleet.env;
    let plan_path = env.root.join("web.plan");
    let plan_s = plan_path.to_string_lossy().into_owned();
    let artifact = fleet.artifact.to_string_lossy().into_owned();
    env.gantry(&[
        "rollout",
        "plan",
        "--out",
        &plan_s,
        "--plan-id",
        "cli-2.0.0",
        "--environment",
        "production",
        "--app",
        "web",
        "--version",
        "2.0.0",
        "--artifact",
        &artifact,
        "--health",
        "http:/health",
        "--health-interval",
        "200ms",
        "--health-deadline",
        "20s",
        "--ring",
        "name=canary,ids=web-9",
        "--ring",
        "name=everyone,labels=ring:1,bake=10m,on_failure=rollback_ring",
        "--",
        "bin/gantry-sample-app",
    ])
    .unwrap()
    .assert_code(0);
    let sign = |verb: &str, key: &gantry_tests::KeyPair| {
        env.gantry(&[
            "rollout",
            verb,
            "--key",
            &key.key.to_string_lossy(),
            &plan_s,
        ])
        .unwrap()
        .assert_code(0);
    };
    sign("sign", &env.keys.deployer);
    let config = env.config.to_string_lossy().into_owned();
    let show = env
        .gantry(&["rollout", "show", "--policy", &config, &plan_s])
        .unwrap();
    show.assert_code(3);
    assert!(
        show.stdout.contains("MISSING") && show.stdout.contains("approval"),
        "{}",
        show.all()
    );

    // The stakeholder's sign-off, with what they say, signed by the same key.
    let approved = env
        .gantry(&[
            "rollout",
            "approve",
            "--key",
            &env.keys.approver.key.to_string_lossy(),
            "--comment",
            "explored the demo; ok to ship",
            &plan_s,
        ])
        .unwrap();
    approved.assert_code(0);
    assert!(
        approved.stdout.contains(
            "with the comment, signed by the same key: \"explored the demo; ok to ship\""
        ),
        "{}",
        approved.all()
    );
    let show = env
        .gantry(&["rollout", "show", "--policy", &config, &plan_s])
        .unwrap();
    show.assert_code(0);
    let approver_id = gantry_proto::keys::SigningKey::read_pem_file(&env.keys.approver.key)
        .unwrap()
        .key_id()
        .to_string();
    let comment_line =
        format!("comment     by key {approver_id} (valid): explored the demo; ok to ship");
    for want in [
        comment_line.as_str(),
        "plan        cli-2.0.0",
        "1 everyone: every agent labelled ring=1",
        "bake 10m, on failure rollback_ring",
        "this agent is in ring 1 (everyone); its job ids: plan-",
        "signed by a key with role orchestrator",
        "the agent's policy admits dispatches of this plan",
    ] {
        assert!(
            show.stdout.contains(want),
            "{want:?} not in:\n{}",
            show.all()
        );
    }

    let bytes = std::fs::read(&plan_path).unwrap();
    let signed = <SignedPlan as prost::Message>::decode(bytes.as_slice()).unwrap();
    let events = fleet
        .send(&signed, &fleet.dispatch(&signed, 1, DispatchAction::Deploy))
        .unwrap();
    assert_eq!(outcome(&events), Some(v1::Outcome::Succeeded), "{events:?}");
    assert_serves(env, "2.0.0", 1);
    let accepted = audit_events(env, "job.accepted").unwrap();
    assert!(
        accepted.iter().any(|e| e["plan_id"] == "cli-2.0.0"
            && e["plan_signer_key_ids"].as_array().map(Vec::len) == Some(2)),
        "{accepted:#?}"
    );

    // The release from the plan file: its signers by name, the approval with its comment, and
    // where the plan's dispatch ran, from the agent's verified log.
    let digest =
        gantry_policy::job::Sha256Hex::of(&std::fs::read(&fleet.artifact).unwrap()).to_string();
    let show = gantry_tests::controller::Controller::new(env, &fleet.agent)
        .run(&[
            "release",
            "show",
            &digest,
            "--plan",
            &plan_s,
            "--policy",
            &config,
            "--agent-pubkey",
            &env.keys.agent.public.to_string_lossy(),
        ])
        .unwrap();
    show.assert_code(0);
    for want in [
        format!("release sha256:{digest}\n"),
        format!(
            "plan cli-2.0.0 ({plan_s}): deploy 2.0.0 of web in environment production, 2 ring(s)\n"
        ),
        "  signed by  deployer (deployer); approver (approver)\n".to_owned(),
        "  approval   approver (approver): \"explored the demo; ok to ship\"\n".to_owned(),
        "chain and checkpoints verified with the agent's key)\n".to_owned(),
        " deploy 2.0.0  succeeded at ".to_owned(),
    ] {
        assert!(
            show.stdout.contains(&want),
            "no {want:?} in:\n{}",
            show.all()
        );
    }
}

#[test]
fn a_rings_flag_percent_holds_the_canary_flag_at_that_share_on_its_hosts() {
    let (fleet, (keys, ofrep)) = Fleet::start_with(Options::front_door(2), |env, raw| {
        let (raw, keys, _, addr) = gantry_tests::ofrep::flags_config(env, raw, 0, None).unwrap();
        (raw, (keys, addr))
    });
    let env = &fleet.env;
    let ctl = Controller::new(env, &fleet.agent);
    crate::flags::push_canary_set(&ctl, env, &keys.flagger);

    // Ring 1 holds the flag at 30%: its hosts' canaries never serve it to more.
    let mut rel = release("2.0.0", &fleet.artifact, 1).unwrap();
    rel.strategy = v1::Strategy::Canary.into();
    rel.rollout = Some(v1::Rollout {
        canary_flag: "new-checkout".to_owned(),
        steps: vec![v1::CanaryStep {
            weight: 50,
            pause_ms: 0,
            until_promote: false,
            flag_percent: None,
        }],
        ..v1::Rollout::default()
    });
    let mut first = ring_of_ids("canary", &["web-9"]);
    first.flag_percent = Some(10);
    let mut everyone = ring_of_labels("everyone", &[("ring", "1")]);
    everyone.flag_percent = Some(30);
    let keys = &env.keys;
    let signed = sign_plan(
        &plan("rel-flag", "production", rel, vec![first, everyone]),
        &[&keys.deployer, &keys.approver],
    )
    .unwrap();
    let events = fleet
        .send(&signed, &fleet.dispatch(&signed, 1, DispatchAction::Deploy))
        .unwrap();
    assert_eq!(outcome(&events), Some(v1::Outcome::Succeeded), "{events:?}");
    let on = crate::flags::checkout_on(ofrep).unwrap();
    assert!((35..=85).contains(&on), "on for {on} of 200 at 30%");
    let weights = audit_events(env, "flags.canary_weight").unwrap();
    let percents: Vec<_> = weights.iter().map(|e| e["percent"].clone()).collect();
    assert_eq!(percents, [30, 30, 30], "{weights:#?}");
    assert_eq!(weights[1]["why"], "promoted", "{weights:#?}");
    let show = ctl
        .run(&["flags", "show", "--app", "web", "--json"])
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(shown["splits"][0]["percent"], 30, "{shown}");
    assert_eq!(shown["splits"][0]["kept"], true, "{shown}");
}
