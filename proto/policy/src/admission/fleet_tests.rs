//! The pure dispatch checks, one refusal per test, on a hand-built policy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gantry_proto::fleet::{job_id, plan_digest, sign_dispatch, sign_plan};
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{self, DispatchAction};
use prost::Message;

use super::*;
use crate::admission::WindowError;
use crate::config::{RouterConfig, RunAs};

const NOW: i64 = 1_800_000_000;

struct Fixture {
    deployer: SigningKey,
    approver: SigningKey,
    orchestrator: SigningKey,
    outsider: SigningKey,
    policy: Policy,
    limits: Limits,
    placement: Placement,
}

fn trusted(name: &str, key: &SigningKey, roles: &[&str]) -> TrustedKey {
    TrustedKey {
        name: name.to_owned(),
        file: format!("keys/{name}.pub").into(),
        key: key.public_key(),
        key_id: key.key_id(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        not_before: None,
        not_after: None,
        revoked: false,
        revoked_reason: None,
    }
}

fn fixture(approvals: u32) -> Fixture {
    let deployer = SigningKey::generate().unwrap();
    let approver = SigningKey::generate().unwrap();
    let orchestrator = SigningKey::generate().unwrap();
    let outsider = SigningKey::generate().unwrap();
    let app = AppPolicy {
        name: AppName::new("web").unwrap(),
        user: "web".to_owned(),
        run_as: RunAs::CurrentUser { uid: 1, gid: 1 },
        ports: 18000..=18003,
        max_instances: 2,
        stop_timeout: Duration::from_secs(5),
        approvals,
        deployer_may_approve: false,
        allow: BTreeMap::from([(Action::Deploy, BTreeSet::from(["deployer".to_owned()]))]),
        dispatch: BTreeSet::from(["orchestrator".to_owned()]),
        listen: None,
        router: RouterConfig::None,
        front_door_mode: crate::config::FrontDoorMode::Tcp,
        hold_timeout: crate::config::DEFAULT_HOLD_TIMEOUT,
        flags: None,
        limits: Default::default(),
    };
    let policy = Policy {
        keys: vec![
            trusted("deployer", &deployer, &["deployer"]),
            trusted("approver", &approver, &["approver"]),
            trusted("orchestrator", &orchestrator, &["orchestrator"]),
        ],
        apps: BTreeMap::from([(app.name.clone(), app)]),
        environments: Default::default(),
    };
    let limits = Limits {
        max_job_bytes: 64 * 1024,
        max_artifact_bytes: 1 << 20,
        max_unpacked_bytes: 1 << 20,
        max_store_bytes: 8 << 30,
        max_unused_bytes_per_client: 2 << 30,
        unused_artifact_ttl: std::time::Duration::from_secs(3600),
        max_validity: Duration::from_secs(3600),
        clock_skew: Duration::from_secs(30),
        releases_kept: 3,
        client_rejections_burst: 10,
        client_rejections_per_second: 1,
        client_connections: 4,
        max_plan_validity: Duration::from_secs(14 * 86_400),
        max_dispatch_validity: Duration::from_secs(300),
    };
    let placement = Placement {
        environment: Some("production".to_owned()),
        labels: BTreeMap::from([("ring".to_owned(), "1".to_owned())]),
    };
    Fixture {
        deployer,
        approver,
        orchestrator,
        outsider,
        policy,
        limits,
        placement,
    }
}

fn plan() -> v1::Plan {
    v1::Plan {
        plan_id: "rel-2.0.0".to_owned(),
        app: "web".to_owned(),
        environment: "production".to_owned(),
        release: Some(v1::Release {
            version: "2.0.0".to_owned(),
            artifact_sha256: "a".repeat(64),
            artifact_size: 10,
            strategy: v1::Strategy::Hot.into(),
            instances: 1,
            command: vec!["bin/app".to_owned()],
            health: Some(v1::HealthCheck {
                probe: Some(v1::health_check::Probe::Tcp(v1::TcpProbe {})),
                ..v1::HealthCheck::default()
            }),
            ..v1::Release::default()
        }),
        rings: vec![
            v1::Ring {
                name: "canary".to_owned(),
                selector: Some(v1::Selector {
                    agent_ids: vec!["web-9".to_owned()],
                    labels: std::collections::HashMap::new(),
                }),
                ..v1::Ring::default()
            },
            v1::Ring {
                name: "everyone".to_owned(),
                selector: Some(v1::Selector {
                    agent_ids: vec![],
                    labels: [("ring".to_owned(), "1".to_owned())].into(),
                }),
                ..v1::Ring::default()
            },
        ],
        issued_at: NOW - 60,
        not_before: NOW - 60,
        expires_at: NOW + 86_400,
        reason: "release 2.0.0".to_owned(),
    }
}

fn dispatch(plan_bytes: &[u8], ring: u32, action: DispatchAction) -> v1::Dispatch {
    v1::Dispatch {
        plan_sha256: plan_digest(plan_bytes),
        agent_id: "web-1".to_owned(),
        ring,
        epoch: 3,
        job_id: job_id("rel-2.0.0", "web-1", action),
        action: action.into(),
        issued_at: NOW - 5,
        expires_at: NOW + 60,
    }
}

fn sig(s: v1::Signature) -> SignatureIn {
    SignatureIn {
        key_id_hint: s.key_id,
        sig: s.sig,
    }
}

/// Runs both assessments over `plan` signed by `plan_keys` and `d` signed by `dispatch_key`.
fn judge(
    f: &Fixture,
    plan: &v1::Plan,
    plan_keys: &[&SigningKey],
    d: impl FnOnce(&[u8]) -> v1::Dispatch,
    dispatch_key: &SigningKey,
) -> Result<PassedDispatch, AdmissionError> {
    let plan_bytes = plan.encode_to_vec();
    let plan_sigs: Vec<SignatureIn> = plan_keys
        .iter()
        .map(|k| sig(sign_plan(k, &plan_bytes)))
        .collect();
    let passed = assess_plan(&f.policy, &f.limits, &plan_bytes, &plan_sigs, NOW)?;
    let dispatch_bytes = d(&plan_bytes).encode_to_vec();
    let dispatch_sigs = [sig(sign_dispatch(dispatch_key, &dispatch_bytes))];
    let here = Here {
        agent_id: "web-1",
        placement: &f.placement,
    };
    assess_dispatch(
        &f.policy,
        &f.limits,
        here,
        &passed,
        &dispatch_bytes,
        &dispatch_sigs,
        NOW,
    )
}

fn deploy_ring_1(plan_bytes: &[u8]) -> v1::Dispatch {
    dispatch(plan_bytes, 1, DispatchAction::Deploy)
}

#[test]
fn a_plan_signed_as_a_deploy_and_a_dispatch_for_this_ring_pass() {
    let f = fixture(1);
    let passed = judge(
        &f,
        &plan(),
        &[&f.deployer, &f.approver],
        deploy_ring_1,
        &f.orchestrator,
    )
    .unwrap();
    assert_eq!(
        passed.spec.id.as_str(),
        job_id("rel-2.0.0", "web-1", DispatchAction::Deploy)
    );
    assert_eq!(passed.spec.action, Action::Deploy);
    assert_eq!(passed.spec.agent_id, "web-1");
    assert_eq!(
        passed.spec.release.as_ref().unwrap().version.to_string(),
        "2.0.0"
    );
    assert_eq!((passed.ring, passed.ring_name.as_str()), (1, "everyone"));
    assert_eq!(passed.epoch, 3);
    assert_eq!(passed.plan_signers.len(), 2);
    assert_eq!(
        passed.dispatch_signers,
        vec![f.orchestrator.key_id().to_string()]
    );

    let back = judge(
        &f,
        &plan(),
        &[&f.deployer, &f.approver],
        |b| dispatch(b, 1, DispatchAction::Rollback),
        &f.orchestrator,
    )
    .unwrap();
    assert_eq!(back.spec.action, Action::Rollback);
    assert!(back.spec.release.is_none() && back.spec.target_version.is_none());
}

#[test]
fn a_plan_signed_by_an_unknown_key_is_refused_as_plan_signature() {
    let f = fixture(0);
    let err = judge(&f, &plan(), &[&f.outsider], deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(&err, AdmissionError::PlanSignature(inner) if matches!(**inner, AdmissionError::UnknownKey { .. })),
        "{err:?}"
    );
}

#[test]
fn a_job_signature_does_not_count_on_a_plan() {
    let f = fixture(0);
    let plan_bytes = plan().encode_to_vec();
    let as_job = gantry_proto::envelope::sign_job(&f.deployer, &plan_bytes);
    let err = assess_plan(&f.policy, &f.limits, &plan_bytes, &[sig(as_job)], NOW).unwrap_err();
    assert!(
        matches!(&err, AdmissionError::PlanSignature(inner) if matches!(**inner, AdmissionError::BadSignature { .. })),
        "{err:?}"
    );
}

#[test]
fn a_plan_below_the_quorum_or_without_a_deployer_is_refused() {
    let f = fixture(1);
    let err = judge(&f, &plan(), &[&f.deployer], deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(err, AdmissionError::PlanQuorum { needed: 1, got: 0 }),
        "{err:?}"
    );
    let err = judge(&f, &plan(), &[&f.approver], deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(matches!(err, AdmissionError::PlanRole(_)), "{err:?}");
}

#[test]
fn a_revoked_plan_signer_is_named_when_it_was_needed() {
    let mut f = fixture(1);
    f.policy.keys[1].revoked = true;
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer, &f.approver],
        deploy_ring_1,
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(&err, AdmissionError::PlanSignature(inner) if matches!(**inner, AdmissionError::KeyNotValid { .. })),
        "{err:?}"
    );
}

#[test]
fn a_dispatch_signed_without_the_dispatch_role_is_refused() {
    let f = fixture(0);
    let err = judge(&f, &plan(), &[&f.deployer], deploy_ring_1, &f.deployer).unwrap_err();
    assert!(
        matches!(&err, AdmissionError::DispatchRole { needed, .. } if needed == &["orchestrator".to_owned()]),
        "{err:?}"
    );
    let err = judge(&f, &plan(), &[&f.deployer], deploy_ring_1, &f.outsider).unwrap_err();
    assert!(
        matches!(err, AdmissionError::DispatchSignature(_)),
        "{err:?}"
    );
}

#[test]
fn a_dispatch_naming_another_plan_agent_or_job_id_is_refused() {
    let f = fixture(0);
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| v1::Dispatch {
            plan_sha256: "0".repeat(64),
            ..deploy_ring_1(b)
        },
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(err, AdmissionError::PlanDigestMismatch { .. }),
        "{err:?}"
    );
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| v1::Dispatch {
            agent_id: "web-2".to_owned(),
            ..deploy_ring_1(b)
        },
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(matches!(err, AdmissionError::WrongAgent { .. }), "{err:?}");
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| v1::Dispatch {
            job_id: "plan-000000000000000000000000-deploy".to_owned(),
            ..deploy_ring_1(b)
        },
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(matches!(err, AdmissionError::WrongJobId { .. }), "{err:?}");
}

#[test]
fn an_agent_outside_the_ring_or_the_environment_is_refused() {
    let f = fixture(0);
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| dispatch(b, 0, DispatchAction::Deploy),
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(&err, AdmissionError::NotInRing { why, .. } if why.contains("agents web-9")),
        "{err:?}"
    );
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| dispatch(b, 7, DispatchAction::Deploy),
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(&err, AdmissionError::NotInRing { why, .. } if why.contains("2 ring(s)")),
        "{err:?}"
    );
    let staging = v1::Plan {
        environment: "staging".to_owned(),
        ..plan()
    };
    let err = judge(&f, &staging, &[&f.deployer], deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(&err, AdmissionError::WrongEnvironment { plan, agent } if plan == "staging" && agent.as_deref() == Some("production")),
        "{err:?}"
    );
}

#[test]
fn expired_dispatches_and_overlong_plans_are_refused() {
    let f = fixture(0);
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| v1::Dispatch {
            issued_at: NOW - 600,
            expires_at: NOW - 1,
            ..deploy_ring_1(b)
        },
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AdmissionError::DispatchWindow(WindowError::Expired { .. })
        ),
        "{err:?}"
    );
    let err = judge(
        &f,
        &plan(),
        &[&f.deployer],
        |b| v1::Dispatch {
            expires_at: NOW + 3600,
            ..deploy_ring_1(b)
        },
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AdmissionError::DispatchWindow(WindowError::TooLong { .. })
        ),
        "{err:?}"
    );
    let long = v1::Plan {
        expires_at: NOW + 30 * 86_400,
        ..plan()
    };
    let err = judge(&f, &long, &[&f.deployer], deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(err, AdmissionError::PlanWindow(WindowError::TooLong { .. })),
        "{err:?}"
    );
}

#[test]
fn selectors_match_a_listed_id_or_every_label() {
    let placement = Placement {
        environment: None,
        labels: BTreeMap::from([
            ("ring".to_owned(), "1".to_owned()),
            ("region".to_owned(), "eu".to_owned()),
        ]),
    };
    let sel = |ids: &[&str], labels: &[(&str, &str)]| v1::Selector {
        agent_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    assert!(selects(&sel(&["a"], &[]), "a", &placement));
    assert!(!selects(&sel(&["b"], &[]), "a", &placement));
    assert!(selects(&sel(&[], &[("ring", "1")]), "a", &placement));
    assert!(selects(
        &sel(&[], &[("ring", "1"), ("region", "eu")]),
        "a",
        &placement
    ));
    assert!(!selects(
        &sel(&[], &[("ring", "1"), ("region", "us")]),
        "a",
        &placement
    ));
    assert!(!selects(&sel(&[], &[]), "a", &placement));
}

/// The signature count limit, on the job path and the plan path alike: exactly
/// `MAX_SIGNATURES` are looked at, one more is refused before any is verified.
#[test]
fn exactly_max_signatures_are_looked_at_and_one_more_is_refused() {
    use crate::admission::policy::{MAX_SIGNATURES, signers_of};
    let fx = fixture(0);
    let bytes = b"a plan's bytes";
    let one = sig(sign_plan(&fx.deployer, bytes));
    let at = vec![one.clone(); MAX_SIGNATURES];
    let signers = signers_of(&fx.policy, gantry_proto::fleet::verify_plan, bytes, &at);
    assert!(signers.is_ok(), "{:?}", signers.err());
    let over = vec![one; MAX_SIGNATURES + 1];
    let Err(err) = signers_of(&fx.policy, gantry_proto::fleet::verify_plan, bytes, &over) else {
        panic!("one too many signatures was admitted")
    };
    assert!(
        matches!(
            err,
            AdmissionError::TooManySignatures { count: 33, max: 32 }
        ),
        "{err:?}"
    );
}

/// The window limits are inclusive: a window exactly `max` long is admitted, one second more
/// is not; `not_before` exactly `skew` ahead is admitted, one second more is not; a window that
/// expires exactly now is expired.
#[test]
fn window_boundaries_are_exact() {
    use crate::admission::window::check_times;
    let hour = Duration::from_secs(3600);
    let skew = Duration::from_secs(30);
    assert!(check_times(NOW - 10, NOW - 10 + 3600, NOW, skew, hour).is_ok());
    assert!(matches!(
        check_times(NOW - 10, NOW - 10 + 3601, NOW, skew, hour),
        Err(WindowError::TooLong {
            window_secs: 3601,
            max_secs: 3600
        })
    ));
    assert!(check_times(NOW + 30, NOW + 60, NOW, skew, hour).is_ok());
    assert!(matches!(
        check_times(NOW + 31, NOW + 60, NOW, skew, hour),
        Err(WindowError::NotYetValid { .. })
    ));
    assert!(matches!(
        check_times(NOW - 10, NOW, NOW, skew, hour),
        Err(WindowError::Expired { .. })
    ));
    assert!(check_times(NOW - 10, NOW + 1, NOW, skew, hour).is_ok());
}

// ---------------------------------------------------------------------------------------------
// The job-path checks a plan shares (signers, approvals, roles, window), tested here in the
// crate that holds them, so that mutation testing of gantry-policy alone catches each.

fn job_sig(key: &SigningKey, bytes: &[u8], hint: &SigningKey) -> SignatureIn {
    SignatureIn {
        key_id_hint: hint.key_id().to_string(),
        sig: gantry_proto::envelope::sign_job(key, bytes).sig,
    }
}

#[test]
fn signers_are_the_verified_keys_found_also_past_a_wrong_hint_and_junk_is_counted() {
    use crate::admission::policy::{signers, verify_signers};
    let fx = fixture(0);
    let bytes = b"job bytes";
    let keys = verify_signers(
        &fx.policy,
        bytes,
        &[job_sig(&fx.deployer, bytes, &fx.deployer)],
    )
    .unwrap();
    assert_eq!(
        keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["deployer"]
    );
    // The hint names another trusted key: the signature is still found under its own key.
    let mislabelled = job_sig(&fx.deployer, bytes, &fx.approver);
    let keys = verify_signers(&fx.policy, bytes, std::slice::from_ref(&mislabelled)).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name, "deployer");
    // A signature by no trusted key neither helps nor hurts, and is counted.
    let junk = job_sig(&fx.outsider, bytes, &fx.outsider);
    let s = signers(&fx.policy, bytes, &[junk.clone(), mislabelled, junk]).unwrap();
    assert_eq!(s.keys.len(), 1);
    assert_eq!(s.ignored, 2);
}

#[test]
fn approvals_count_distinct_approvers_less_a_deployer_that_is_one() {
    use crate::admission::policy::approvals;
    let mut fx = fixture(1);
    let both = trusted("both", &fx.outsider, &["deployer", "approver"]);
    let approver = trusted("approver", &fx.approver, &["approver"]);
    let deployer = trusted("deployer", &fx.deployer, &["deployer"]);
    let web = AppName::new("web").unwrap();
    let app = fx.policy.apps[&web].clone();
    // The deployer is also an approver: it cannot count for itself.
    assert_eq!(approvals(&app, Action::Deploy, &[&both, &approver]), 1);
    // A deployer-only key signed: every approver counts.
    assert_eq!(approvals(&app, Action::Deploy, &[&deployer, &approver]), 1);
    assert_eq!(
        approvals(&app, Action::Deploy, &[&deployer, &both, &approver]),
        2
    );
    // No deployer signed at all: every approver counts.
    assert_eq!(approvals(&app, Action::Deploy, &[&approver]), 1);
    // deployer_may_approve lets the deployer's own approval count.
    let web_policy = fx.policy.apps.get_mut(&web).unwrap();
    web_policy.deployer_may_approve = true;
    let app = web_policy.clone();
    assert_eq!(approvals(&app, Action::Deploy, &[&both, &approver]), 2);
}

#[test]
fn check_roles_refuses_a_signer_without_the_role_and_below_quorum() {
    use crate::admission::policy::check_roles;
    let fx = fixture(1);
    let app = &fx.policy.apps[&AppName::new("web").unwrap()];
    let deployer = trusted("deployer", &fx.deployer, &["deployer"]);
    let approver = trusted("approver", &fx.approver, &["approver"]);
    assert!(matches!(
        check_roles(app, Action::Deploy, &[&approver]),
        Err(AdmissionError::MissingRole { .. })
    ));
    assert!(matches!(
        check_roles(app, Action::Deploy, &[&deployer]),
        Err(AdmissionError::QuorumNotMet { .. })
    ));
    assert!(check_roles(app, Action::Deploy, &[&deployer, &approver]).is_ok());
}

#[test]
fn check_window_applies_the_limits_to_a_jobs_times() {
    use crate::admission::window::check_window;
    use crate::job::{JobId, JobSpec};
    let fx = fixture(0);
    let spec = |not_before: i64, expires_at: i64| JobSpec {
        id: JobId::new("j1").unwrap(),
        agent_id: "agent-1".to_owned(),
        app: AppName::new("web").unwrap(),
        action: Action::Restart,
        issued_at: not_before,
        not_before,
        expires_at,
        release: None,
        target_version: None,
        restore_flags: false,
        reason: String::new(),
    };
    assert!(check_window(&spec(NOW - 10, NOW + 60), NOW, &fx.limits).is_ok());
    assert!(matches!(
        check_window(&spec(NOW - 100, NOW - 1), NOW, &fx.limits),
        Err(AdmissionError::Expired { .. })
    ));
    assert!(matches!(
        check_window(&spec(NOW - 10, NOW + 3600), NOW, &fx.limits),
        Err(AdmissionError::WindowTooLong { .. })
    ));
}

#[test]
fn a_plan_obeys_the_environments_prerelease_rule_like_a_job() {
    let mut f = fixture(1);
    f.policy.environments.current = Some("production".to_owned());
    let mut rc = plan();
    if let Some(r) = rc.release.as_mut() {
        r.version = "2.1.0-rc.1".to_owned();
    }
    let e = judge(
        &f,
        &rc,
        &[&f.deployer, &f.approver],
        deploy_ring_1,
        &f.orchestrator,
    )
    .unwrap_err();
    assert!(
        matches!(&e, AdmissionError::PrereleaseRefused { version, environment }
            if version.to_string() == "2.1.0-rc.1" && environment == "production"),
        "{e:?}"
    );
    // A release without a pre-release label passes there; staging allows the candidate.
    judge(
        &f,
        &plan(),
        &[&f.deployer, &f.approver],
        deploy_ring_1,
        &f.orchestrator,
    )
    .unwrap();
    f.policy.environments.current = Some("staging".to_owned());
    f.placement.environment = Some("staging".to_owned());
    rc.environment = "staging".to_owned();
    judge(
        &f,
        &rc,
        &[&f.deployer, &f.approver],
        deploy_ring_1,
        &f.orchestrator,
    )
    .unwrap();
}

#[test]
fn a_plan_needs_the_gates_its_environment_requires_signed_for_its_artifact() {
    use crate::admission::gates::tests::{evidence, gate};
    use crate::environment::{EnvironmentRules, GateKind};
    use gantry_proto::attest::Verdict;
    let mut f = fixture(1);
    let ci = SigningKey::generate().unwrap();
    f.policy.keys.push(trusted("ci", &ci, &["ci"]));
    f.policy.environments.current = Some("production".to_owned());
    let mut rules = EnvironmentRules::defaults_for(Some("production"));
    rules.require_gates = BTreeSet::from([GateKind::Tests]);
    rules.configured = true;
    f.policy
        .environments
        .tables
        .insert("production".to_owned(), rules);
    let keys = [&f.deployer, &f.approver];
    let e = judge(&f, &plan(), &keys, deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(&e, AdmissionError::GateMissing { gate: GateKind::Tests, environment }
            if environment == "production"),
        "{e:?}"
    );
    let with = |ev: Vec<u8>| {
        let mut p = plan();
        if let Some(r) = p.release.as_mut() {
            r.evidence = vec![ev];
        }
        p
    };
    let failed = with(evidence(
        &ci,
        &"a".repeat(64),
        NOW + 3600,
        vec![gate("tests", Verdict::Failed)],
    ));
    let e = judge(&f, &failed, &keys, deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(
            e,
            AdmissionError::GateFailed {
                gate: GateKind::Tests,
                ..
            }
        ),
        "{e:?}"
    );
    let other = with(evidence(
        &ci,
        &"b".repeat(64),
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    ));
    let e = judge(&f, &other, &keys, deploy_ring_1, &f.orchestrator).unwrap_err();
    assert!(
        matches!(e, AdmissionError::GateDigestMismatch { .. }),
        "{e:?}"
    );
    let passed = with(evidence(
        &ci,
        &"a".repeat(64),
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    ));
    let bytes = passed.encode_to_vec();
    let sigs: Vec<SignatureIn> = keys.iter().map(|k| sig(sign_plan(k, &bytes))).collect();
    let ok = assess_plan(&f.policy, &f.limits, &bytes, &sigs, NOW).unwrap();
    assert_eq!(ok.gates.len(), 1);
    assert_eq!(
        (ok.gates[0].gate, ok.gates[0].signer.as_str()),
        (GateKind::Tests, "ci")
    );
    judge(&f, &passed, &keys, deploy_ring_1, &f.orchestrator).unwrap();
}

/// [`plan`] as a canary releasing flag `f`, its rings' `flag_percent`s as given.
fn flag_plan(with_flag: bool, percents: [Option<u32>; 2]) -> v1::Plan {
    let mut p = plan();
    if let Some(r) = p.release.as_mut() {
        r.strategy = v1::Strategy::Canary.into();
        r.rollout = Some(v1::Rollout {
            canary_flag: if with_flag {
                "f".to_owned()
            } else {
                String::new()
            },
            ..v1::Rollout::default()
        });
    }
    for (ring, percent) in p.rings.iter_mut().zip(percents) {
        ring.flag_percent = percent;
    }
    p
}

fn plan_refusal(f: &Fixture, p: &v1::Plan) -> String {
    match judge(
        f,
        p,
        &[&f.deployer, &f.approver],
        deploy_ring_1,
        &f.orchestrator,
    ) {
        Err(AdmissionError::InvalidPlan { detail }) => detail,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rings_flag_percent_is_the_limit_of_the_canary_flag_on_its_hosts() {
    let mut f = fixture(1);
    for app in f.policy.apps.values_mut() {
        app.router = RouterConfig::FrontDoor;
    }
    let limit = |percents| {
        judge(
            &f,
            &flag_plan(true, percents),
            &[&f.deployer, &f.approver],
            deploy_ring_1,
            &f.orchestrator,
        )
        .unwrap()
        .spec
        .release
        .unwrap()
        .rollout
        .flag_limit
    };
    assert_eq!(limit([Some(10), Some(50)]), Some(50));
    assert_eq!(limit([Some(50), Some(50)]), Some(50));
    assert_eq!(limit([Some(10), None]), None);
    assert_eq!(limit([None, Some(100)]), Some(100));
    assert_eq!(limit([Some(0), Some(0)]), Some(0));

    assert_eq!(
        plan_refusal(&f, &flag_plan(true, [Some(10), Some(101)])),
        "rings[1].flag_percent 101 is more than 100 (percent)"
    );
    assert_eq!(
        plan_refusal(&f, &flag_plan(true, [Some(60), Some(50)])),
        "rings[1].flag_percent 50 is less than ring 0's 60: a user served the flag's canary \
         variant keeps it, so rings must not lower it"
    );
    // A ring without one serves 100%: a later ring cannot go below it.
    assert_eq!(
        plan_refusal(&f, &flag_plan(true, [None, Some(50)])),
        "rings[1].flag_percent 50 is less than ring 0's 100: a user served the flag's canary \
         variant keeps it, so rings must not lower it"
    );
    assert_eq!(
        plan_refusal(&f, &flag_plan(false, [None, Some(50)])),
        "rings[1].flag_percent needs release.rollout.canary_flag (a canary that releases a flag)"
    );
    assert_eq!(
        plan_refusal(&f, &flag_plan(false, [Some(5), None])),
        "rings[0].flag_percent needs release.rollout.canary_flag (a canary that releases a flag)"
    );
}
