//! Dispatch admission's own checks over the plan records: epochs, attaches, rollbacks.

use gantry_proto::fleet::{job_id, plan_digest, sign_dispatch, sign_plan};
use gantry_proto::v1::DispatchAction;

use super::*;
use crate::admission::dispatch::{AdmittedDispatch, DispatchIn, FleetSeat};
use crate::config::Placement;
use crate::ledger::plans::PlanLedger;

struct Fleet {
    fx: Fx,
    orchestrator: SigningKey,
    plan: Vec<u8>,
}

fn seat(dir: &std::path::Path) -> FleetSeat {
    FleetSeat {
        placement: Placement {
            environment: Some("production".to_owned()),
            labels: BTreeMap::new(),
        },
        plans: Arc::new(PlanLedger::open(&dir.join("plans")).unwrap()),
    }
}

fn fleet() -> Fleet {
    let keys = keys();
    let orchestrator = SigningKey::generate().unwrap();
    let mut policy = policy(&keys, 0);
    policy
        .keys
        .push(trusted("orchestrator", &orchestrator, &["orchestrator"]));
    web_mut(&mut policy).dispatch = ["orchestrator".to_owned()].into();
    let mut fx = fx_policy(keys, policy);
    fx.adm = reopen(&fx);
    let mut release = job("x").release.unwrap();
    release.env.clear();
    let plan = v1::Plan {
        plan_id: "rel-1.2.0".to_owned(),
        app: "web".to_owned(),
        environment: "production".to_owned(),
        release: Some(release),
        rings: vec![v1::Ring {
            name: "all".to_owned(),
            selector: Some(v1::Selector {
                agent_ids: vec![AGENT.to_owned()],
                labels: std::collections::HashMap::new(),
            }),
            ..v1::Ring::default()
        }],
        issued_at: NOW - 10,
        not_before: NOW - 10,
        expires_at: NOW + 86_400,
        reason: String::new(),
    }
    .encode_to_vec();
    Fleet {
        fx,
        orchestrator,
        plan,
    }
}

/// The admission over the same directories, as after a restart.
fn reopen(fx: &Fx) -> Admission {
    let policy = (**fx.adm.policy()).clone();
    open(policy, fx.dir.path())
        .unwrap()
        .with_fleet(seat(fx.dir.path()))
}

impl Fleet {
    fn dispatch(
        &self,
        adm: &Admission,
        action: DispatchAction,
        epoch: u64,
        apps: &Apps,
    ) -> Result<AdmittedDispatch, Rejection> {
        let d = v1::Dispatch {
            plan_sha256: plan_digest(&self.plan),
            agent_id: AGENT.to_owned(),
            ring: 0,
            epoch,
            job_id: job_id("rel-1.2.0", AGENT, action),
            action: action.into(),
            issued_at: NOW - 1,
            expires_at: NOW + 60,
        }
        .encode_to_vec();
        let ps = sign_plan(&self.fx.keys.deployer, &self.plan);
        let ds = sign_dispatch(&self.orchestrator, &d);
        let plan_sigs = [SignatureIn {
            key_id_hint: ps.key_id,
            sig: ps.sig,
        }];
        let dispatch_sigs = [SignatureIn {
            key_id_hint: ds.key_id,
            sig: ds.sig,
        }];
        adm.admit_dispatch(
            DispatchIn {
                plan: &self.plan,
                plan_sigs: &plan_sigs,
                dispatch: &d,
                dispatch_sigs: &dispatch_sigs,
            },
            NOW,
            apps,
        )
    }
}

#[test]
fn a_deploy_runs_once_a_resend_attaches_and_an_older_epoch_is_refused_after_a_restart() {
    let f = fleet();
    let apps = Apps::at(semver::Version::new(1, 0, 0));
    let job = match f.dispatch(&f.fx.adm, DispatchAction::Deploy, 2, &apps) {
        Ok(AdmittedDispatch::New(job, facts)) => {
            assert_eq!(facts.epoch, 2);
            assert_eq!(facts.plan_id, "rel-1.2.0");
            job
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(job.spec.action, Action::Deploy);
    assert_eq!(job.digest.as_str(), plan_digest(&f.plan));
    assert_eq!(job.signers, vec![f.fx.keys.deployer.key_id()]);
    match f.dispatch(&f.fx.adm, DispatchAction::Deploy, 5, &apps) {
        Ok(AdmittedDispatch::Duplicate(record, _)) => assert_eq!(record.job_id, job.spec.id),
        other => panic!("{other:?}"),
    }
    let restarted = reopen(&f.fx);
    let err = f
        .dispatch(&restarted, DispatchAction::Deploy, 4, &apps)
        .unwrap_err()
        .error;
    assert!(
        matches!(
            err,
            AdmissionError::StaleEpoch {
                epoch: 4,
                highest: 5,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_rollback_needs_the_deploy_and_returns_to_the_release_it_replaced() {
    let f = fleet();
    let err = f
        .dispatch(&f.fx.adm, DispatchAction::Rollback, 1, &Apps::default())
        .unwrap_err()
        .error;
    assert!(
        matches!(err, AdmissionError::RollbackWithoutDeploy { .. }),
        "{err:?}"
    );
    let before = semver::Version::new(1, 0, 0);
    let deployed = f
        .dispatch(
            &f.fx.adm,
            DispatchAction::Deploy,
            1,
            &Apps::at(before.clone()),
        )
        .unwrap();
    assert!(matches!(deployed, AdmittedDispatch::New(..)));
    let mut apps = Apps::at(semver::Version::new(1, 2, 0));
    let err = f
        .dispatch(&f.fx.adm, DispatchAction::Rollback, 1, &apps)
        .unwrap_err()
        .error;
    assert!(
        matches!(&err, AdmissionError::RollbackTargetMissing { version } if *version == before),
        "{err:?}"
    );
    apps.on_disk.push(before.clone());
    match f.dispatch(&f.fx.adm, DispatchAction::Rollback, 1, &apps) {
        Ok(AdmittedDispatch::New(job, facts)) => {
            assert_eq!(job.spec.action, Action::Rollback);
            assert_eq!(job.spec.target_version, Some(before));
            assert_eq!(facts.action, DispatchAction::Rollback);
            assert!(job.spec.id.as_str().ends_with("-rollback"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rolling_back_a_first_install_stops_the_app() {
    let f = fleet();
    f.dispatch(&f.fx.adm, DispatchAction::Deploy, 1, &Apps::default())
        .unwrap();
    match f.dispatch(&f.fx.adm, DispatchAction::Rollback, 1, &Apps::default()) {
        Ok(AdmittedDispatch::New(job, _)) => assert_eq!(job.spec.action, Action::Stop),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_production_rollback_dispatch_to_a_prerelease_it_replaced_is_refused() {
    let mut f = fleet();
    let mut policy = (**f.fx.adm.policy()).clone();
    policy.environments = gantry_policy::environment::Environments {
        current: Some("production".to_owned()),
        tables: BTreeMap::new(),
    };
    f.fx.adm = open(policy, f.fx.dir.path())
        .unwrap()
        .with_fleet(seat(f.fx.dir.path()));
    let before = semver::Version::parse("1.0.0-rc.1").unwrap();
    f.dispatch(
        &f.fx.adm,
        DispatchAction::Deploy,
        1,
        &Apps::at(before.clone()),
    )
    .unwrap();
    let mut apps = Apps::at(semver::Version::new(1, 2, 0));
    apps.on_disk.push(before.clone());
    let err = f
        .dispatch(&f.fx.adm, DispatchAction::Rollback, 1, &apps)
        .unwrap_err()
        .error;
    assert!(
        matches!(&err, AdmissionError::PrereleaseRefused { version, .. } if *version == before),
        "{err:?}"
    );
}
