//! Promotion through environments, end to end: a service with `[promotion] production =
//! ["staging"]` over a staging agent and a production agent refuses a production plan until
//! the same artifact digest has succeeded in staging, as the staging agent's own audit log
//! shows, and records what let it through.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_proto::v1::OnFailure;
use gantry_tests::fleet::{plan, release, sign_plan};
use gantry_tests::make_artifact;
use gantry_tests::service::{Fleet, Service};
use prost::Message;

use crate::fleet_service::{plan_entries, ring, rollout_start as start, wait_final};

/// Writes plan `plan_id` for `environment`, releasing `artifact` as `version` to ring label
/// `ring_label`, signed by the deployer.
fn plan_for(
    fleet: &Fleet,
    plan_id: &str,
    environment: &str,
    version: &str,
    artifact: &Path,
    ring_label: &str,
) -> PathBuf {
    let env = fleet.env();
    let p = plan(
        plan_id,
        environment,
        release(version, artifact, 1).unwrap(),
        vec![ring("all", ring_label, 0, OnFailure::Halt, "1")],
    );
    let signed = sign_plan(&p, &[&env.keys.deployer]).unwrap();
    let path = env.root.join(format!("{plan_id}.plan"));
    std::fs::write(&path, signed.encode_to_vec()).unwrap();
    path
}

/// The service's own audit entries `event`.
fn service_entries(svc: &Service, event: &str) -> Vec<serde_json::Value> {
    svc.audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect()
}

#[test]
fn a_production_plan_is_refused_until_the_same_digest_succeeded_in_staging() {
    let fleet = Fleet::start_in_environments(&[
        ("stg-1", "staging", &[("ring", "s")]),
        ("prod-1", "production", &[("ring", "p")]),
    ])
    .unwrap();
    let dir = fleet.env().root.join("ctl");
    let config = fleet.write_config(&dir, "ctl-1", None, "10s").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[promotion]\nproduction = [\"staging\"]\n");
    std::fs::write(&config, text).unwrap();
    let svc = Service::start(&fleet, &config).unwrap();

    let env = fleet.env();
    let v2 = make_artifact(env, "2.0.0", "").unwrap();
    let digest = gantry_policy::job::Sha256Hex::of(&std::fs::read(&v2).unwrap()).to_string();
    let prod = plan_for(&fleet, "rel-prod", "production", "2.0.0", &v2, "p");

    // Nothing ran in staging yet: refused, naming the artifact and the environment.
    let out = start(&svc, &prod, &v2);
    out.assert_code(3);
    assert!(
        out.stderr.contains(&format!(
            "a plan for production needs artifact {digest} to have succeeded in staging first: \
             no rollout of it there has succeeded ([promotion] production lists staging)"
        )),
        "{}",
        out.all()
    );
    let refused = service_entries(&svc, "rollout.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["rollout"], "rel-prod");
    assert_eq!(refused[0]["environment"], "production");
    assert_eq!(refused[0]["by"], "ops-1");
    assert!(service_entries(&svc, "rollout.started").is_empty());

    // Staging runs the same artifact.
    let stg = plan_for(&fleet, "rel-stg", "staging", "2.0.0", &v2, "s");
    start(&svc, &stg, &v2).assert_code(0);
    let s = wait_final(&svc, "rel-stg", Duration::from_secs(120));
    assert_eq!(s["state"], "succeeded", "{s:#}");

    // Another artifact is still held back: promotion is per digest.
    let v3 = make_artifact(env, "2.0.1", "").unwrap();
    let other = plan_for(&fleet, "rel-prod-201", "production", "2.0.1", &v3, "p");
    let out = start(&svc, &other, &v3);
    out.assert_code(3);
    assert!(
        out.stderr.contains("to have succeeded in staging first"),
        "{}",
        out.all()
    );

    // Now the production plan starts, and says what let it through.
    start(&svc, &prod, &v2).assert_code(0);
    let s = wait_final(&svc, "rel-prod", Duration::from_secs(120));
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert_eq!(
        plan_entries(&fleet, "prod-1", "job.accepted", "rel-prod").len(),
        1
    );
    let started = service_entries(&svc, "rollout.started");
    let prod_start = started
        .iter()
        .find(|e| e["rollout"] == "rel-prod")
        .unwrap_or_else(|| panic!("{started:?}"));
    let from = &prod_start["promoted_from"][0];
    assert_eq!(from["environment"], "staging", "{prod_start}");
    assert_eq!(from["rollout"], "rel-stg", "{prod_start}");
    let host = &from["hosts"][0];
    assert_eq!(host["agent_id"], "stg-1", "{prod_start}");
    assert!(
        host["checkpoint_seq"].as_u64() > host["succeeded_seq"].as_u64(),
        "{prod_start}"
    );
    // The staging plan itself needed nothing.
    let stg_start = started.iter().find(|e| e["rollout"] == "rel-stg").unwrap();
    assert!(stg_start["promoted_from"].is_null(), "{stg_start}");

    // Where the artifact ran across the fleet, from the service's plans and each agent's log.
    let addr = svc.addr.to_string();
    let config = env.config.to_string_lossy().into_owned();
    let show = svc
        .gantry(&[
            "release", "show", &digest, "--server", &addr, "--policy", &config,
        ])
        .unwrap();
    show.assert_code(0);
    for want in [
        format!("release sha256:{digest}\n"),
        "plan rel-stg (from the controller service): deploy 2.0.0 of web in environment staging"
            .to_owned(),
        "plan rel-prod (from the controller service): deploy 2.0.0 of web in environment \
         production"
            .to_owned(),
        "  signed by  deployer (deployer)".to_owned(),
        format!("where deployed (every agent of the controller service at {addr}"),
        "  stg-1: ".to_owned(),
        "  prod-1: ".to_owned(),
        " deploy 2.0.0  succeeded at ".to_owned(),
    ] {
        assert!(
            show.stdout.contains(&want),
            "no {want:?} in:\n{}",
            show.all()
        );
    }
    // 2.0.1 never ran anywhere: its plan is not the service's (it was refused), so nothing
    // releases it.
    let v3_digest = gantry_policy::job::Sha256Hex::of(&std::fs::read(&v3).unwrap()).to_string();
    let none = svc
        .gantry(&["release", "show", &v3_digest, "--server", &addr])
        .unwrap();
    none.assert_code(2);
    assert!(
        none.stderr.contains(&format!(
            "none of the job or plan files deploys artifact {v3_digest}"
        )),
        "{}",
        none.all()
    );
}
