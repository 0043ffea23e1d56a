//! `explain_plan` over the example config: what `gantry rollout show --policy` says.

use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use prost::Message;

use super::*;
use crate::admission::SignatureIn;
use crate::admission::fleet::explain_plan;

fn plan(environment: &str, ring_labels: &[(&str, &str)]) -> Vec<u8> {
    v1::Plan {
        plan_id: "rel-2".to_owned(),
        app: "web".to_owned(),
        environment: environment.to_owned(),
        release: Some(v1::Release {
            version: "2.0.0".to_owned(),
            artifact_sha256: "a".repeat(64),
            artifact_size: 10,
            strategy: v1::Strategy::Hot.into(),
            instances: 1,
            command: vec!["bin/web".to_owned()],
            health: Some(v1::HealthCheck {
                probe: Some(v1::health_check::Probe::Tcp(v1::TcpProbe {})),
                ..v1::HealthCheck::default()
            }),
            ..v1::Release::default()
        }),
        rings: vec![v1::Ring {
            name: "rest".to_owned(),
            selector: Some(v1::Selector {
                agent_ids: Vec::new(),
                labels: ring_labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            }),
            ..v1::Ring::default()
        }],
        issued_at: crate::unix_now() - 60,
        not_before: crate::unix_now() - 60,
        expires_at: crate::unix_now() + 86_400,
        reason: String::new(),
    }
    .encode_to_vec()
}

fn signed(dir: &Path, bytes: &[u8], keys: &[&str]) -> Vec<SignatureIn> {
    keys.iter()
        .map(|k| {
            let key = SigningKey::read_pem_file(&dir.join(format!("keys/{k}.key"))).unwrap();
            let s = gantry_proto::fleet::sign_plan(&key, bytes);
            SignatureIn {
                key_id_hint: s.key_id,
                sig: s.sig,
            }
        })
        .collect()
}

fn verdicts(reqs: &[crate::admission::explain::Requirement]) -> Vec<(&str, bool)> {
    reqs.iter().map(|r| (r.name, r.met)).collect()
}

#[test]
fn a_plan_is_explained_against_the_agents_policy_environment_ring_and_dispatch_role() {
    let dir = fixture();
    let text = EXAMPLE.replace(
        "# dispatch = [\"orchestrator\"]",
        "dispatch = [\"approver\"]",
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let now = crate::unix_now();

    let good = plan("production", &[("ring", "2")]);
    let both = signed(dir.path(), &good, &["ci", "release-manager"]);
    let reqs = explain_plan(&cfg, &good, &both, now);
    assert_eq!(
        verdicts(&reqs),
        [
            ("plan", true),
            ("environment", true),
            ("ring", true),
            ("dispatch", true)
        ],
        "{reqs:#?}"
    );
    assert!(reqs[2].detail.contains("ring 0 (rest)"), "{reqs:#?}");

    // The deployer alone: the app wants one approval; nothing else is judged.
    let alone = signed(dir.path(), &good, &["ci"]);
    let reqs = explain_plan(&cfg, &good, &alone, now);
    assert_eq!(verdicts(&reqs), [("plan", false)], "{reqs:#?}");
    assert!(reqs[0].detail.contains("approval"), "{reqs:#?}");

    let elsewhere = plan("staging", &[("ring", "1")]);
    let sigs = signed(dir.path(), &elsewhere, &["ci", "release-manager"]);
    let reqs = explain_plan(&cfg, &elsewhere, &sigs, now);
    assert_eq!(
        verdicts(&reqs),
        [
            ("plan", true),
            ("environment", false),
            ("ring", false),
            ("dispatch", true)
        ],
        "{reqs:#?}"
    );
    assert!(
        reqs[2].detail.contains("region=eu-west, ring=2"),
        "{reqs:#?}"
    );

    // Without [apps.web.allow] dispatch, nobody may dispatch the plan here.
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    let reqs = explain_plan(&cfg, &good, &both, now);
    assert!(
        !reqs[3].met && reqs[3].detail.contains("no role may sign dispatches"),
        "{reqs:#?}"
    );
}
