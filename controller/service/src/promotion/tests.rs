//! Promotion rules, the log confirmation, and the check over a real embedded store with agents'
//! logs handed in as lines.

use std::collections::BTreeMap;
use std::sync::Mutex;

use gantry_proto::v1::{Plan, Release, Ring, Selector, Signature, SignedPlan};
use prost::Message;

use super::*;
use crate::store::embedded::EmbeddedStore;
use crate::store::{CheckpointRecord, HostRecord};

const DIGEST: &str = "aa11";

fn rules(table: &[(&str, &[&str])]) -> Result<Rules, (String, String)> {
    Rules::new(
        table
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
    )
}

#[test]
fn rules_refuse_a_self_reference_a_repeat_and_a_loop() {
    assert_eq!(
        rules(&[("production", &["production"])]).unwrap_err(),
        (
            "production".into(),
            "production cannot come before itself".into()
        )
    );
    assert_eq!(
        rules(&[("production", &["staging", "staging"])]).unwrap_err(),
        ("production".into(), "staging is named twice".into())
    );
    let (key, why) = rules(&[
        ("production", &["staging"]),
        ("staging", &["demo"]),
        ("demo", &["production"]),
    ])
    .unwrap_err();
    assert_eq!(key, "demo");
    assert_eq!(
        why,
        "the environments loop: demo → production → staging → demo"
    );
    assert_eq!(
        rules(&[("", &["staging"])]).unwrap_err().1,
        "an environment name is empty"
    );
    assert_eq!(
        rules(&[("production", &[""])]).unwrap_err().1,
        "an environment name is empty"
    );
    let ok = rules(&[("production", &["staging"]), ("staging", &["demo"])]).unwrap();
    assert_eq!(ok.before("production"), ["staging".to_owned()]);
    assert!(ok.before("demo").is_empty());
    assert!(!ok.is_empty());
    assert!(Rules::default().is_empty());
}

fn line(seq: u64, event: &str, extra: &str) -> String {
    format!(r#"{{"seq":{seq},"ts":"t","prev":"p","event":"{event}"{extra}}}"#)
}

fn good_log() -> Vec<String> {
    vec![
        line(1, "agent.started", ""),
        line(2, "job.accepted", r#","job_id":"j-1","plan_digest":"pd""#),
        line(3, "job.step", r#","job_id":"j-1""#),
        line(4, "job.succeeded", r#","job_id":"j-1""#),
        line(5, "checkpoint", r#","key_id":"k","sig":"s""#),
    ]
}

#[test]
fn a_log_confirms_a_job_accepted_for_the_plan_succeeded_and_sealed() {
    assert_eq!(confirm_in_log(&good_log(), "j-1", "pd"), Ok((4, 5)));
    // Another job's success is not this one's.
    assert_eq!(
        confirm_in_log(&good_log(), "j-2", "pd").unwrap_err(),
        "does not show job j-2 accepted"
    );
    // Accepted for another plan.
    assert_eq!(
        confirm_in_log(&good_log(), "j-1", "other").unwrap_err(),
        "shows job j-1 accepted for plan digest pd, not other"
    );
    // Not succeeded: failed instead.
    let mut failed = good_log();
    failed[3] = line(4, "job.failed", r#","job_id":"j-1""#);
    assert_eq!(
        confirm_in_log(&failed, "j-1", "pd").unwrap_err(),
        "does not show job j-1 succeeded"
    );
    // Not sealed yet.
    let unsealed = good_log()[..4].to_vec();
    assert_eq!(
        confirm_in_log(&unsealed, "j-1", "pd").unwrap_err(),
        "has no checkpoint after job j-1 succeeded (seq 4)"
    );
    // A checkpoint before the success does not seal it.
    let mut early = good_log();
    early.insert(2, line(3, "checkpoint", ""));
    early.truncate(5);
    assert!(confirm_in_log(&early, "j-1", "pd").is_err());
    // A success without its acceptance is not taken.
    let mut orphan = good_log();
    orphan.remove(1);
    assert_eq!(
        confirm_in_log(&orphan, "j-1", "pd").unwrap_err(),
        "does not show job j-1 accepted"
    );
}

/// Agents' logs by agent id; an agent without one cannot be read.
#[derive(Default)]
struct Logs(Mutex<BTreeMap<String, Vec<String>>>);

impl AuditSource for Logs {
    async fn verified_lines(
        &self,
        agent: &AgentRecord,
        _: Option<&CheckpointRecord>,
    ) -> Result<Vec<String>, String> {
        self.0
            .lock()
            .unwrap()
            .get(&agent.id)
            .cloned()
            .ok_or_else(|| "connection refused".to_owned())
    }
}

fn plan(id: &str, environment: &str, digest: &str) -> LoadedPlan {
    let plan = Plan {
        plan_id: id.into(),
        app: "web".into(),
        environment: environment.into(),
        release: Some(Release {
            version: "1.1.0".into(),
            artifact_sha256: digest.into(),
            ..Release::default()
        }),
        rings: vec![Ring {
            selector: Some(Selector {
                agent_ids: vec!["s-1".into()],
                ..Selector::default()
            }),
            ..Ring::default()
        }],
        ..Plan::default()
    };
    LoadedPlan::from_signed(SignedPlan {
        plan: plan.encode_to_vec(),
        signatures: vec![Signature {
            key_id: "k".into(),
            sig: vec![1],
        }],
        comments: Vec::new(),
    })
    .unwrap()
}

/// A store holding `rollout` (a plan for `environment` of `digest`) in `state`, with agent
/// `s-1` whose deploy job `j-1` reached `step`.
async fn store_with(
    dir: &std::path::Path,
    environment: &str,
    digest: &str,
    state: RolloutState,
    step: HostStep,
) -> (EmbeddedStore, String) {
    let store = EmbeddedStore::open(dir).unwrap();
    store
        .put_agent(AgentRecord {
            id: "s-1".into(),
            addr: "127.0.0.1:1".into(),
            version: "0.1.0".into(),
            environment: environment.into(),
            labels: BTreeMap::new(),
            reachable: true,
            last_seen_ms: 1,
            error: String::new(),
        })
        .await
        .unwrap();
    let p = plan("rel-staging", environment, digest);
    let mut record = RolloutRecord {
        id: p.plan.plan_id.clone(),
        signed_plan: p.signed.encode_to_vec(),
        plan_sha256: p.sha256.clone(),
        state: RolloutState::Pending,
        ring: 0,
        bake_until_ms: 0,
        rollback_to: 0,
        bake_counts: Default::default(),
        reason: String::new(),
        started_by: "ops".into(),
        created_ms: 1,
        updated_ms: 1,
    };
    store.create_rollout(record.clone()).await.unwrap();
    let lease = store
        .acquire_lease(&record.id, "r", 1, 60_000)
        .await
        .unwrap()
        .unwrap();
    store
        .put_host(
            HostRecord {
                rollout_id: record.id.clone(),
                agent_id: "s-1".into(),
                ring: 0,
                action: HostAction::Deploy,
                step,
                job_id: "j-1".into(),
                reason: String::new(),
                updated_ms: 2,
            },
            lease.epoch,
        )
        .await
        .unwrap();
    record.state = state;
    record.updated_ms = 3;
    store.update_rollout(record, lease.epoch).await.unwrap();
    (store, p.sha256)
}

/// A store where staging's rollout of [`DIGEST`] succeeded on `s-1`.
async fn staging_succeeded(dir: &std::path::Path) -> (EmbeddedStore, String) {
    store_with(
        dir,
        "staging",
        DIGEST,
        RolloutState::Succeeded,
        HostStep::Succeeded,
    )
    .await
}

fn staging_first() -> Rules {
    rules(&[("production", &["staging"])]).unwrap()
}

fn log_for(plan_sha256: &str) -> Vec<String> {
    good_log()
        .into_iter()
        .map(|l| {
            l.replace(
                r#""plan_digest":"pd""#,
                &format!(r#""plan_digest":"{plan_sha256}""#),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_production_plan_passes_once_staging_succeeded_with_the_same_digest_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let (store, staging_sha) = staging_succeeded(dir.path()).await;
    let logs = Logs::default();
    logs.0
        .lock()
        .unwrap()
        .insert("s-1".into(), log_for(&staging_sha));
    let evidence = check(
        &staging_first(),
        &store,
        &logs,
        &plan("rel-prod", "production", DIGEST),
    )
    .await
    .unwrap();
    assert_eq!(
        evidence,
        vec![Evidence {
            environment: "staging".into(),
            rollout_id: "rel-staging".into(),
            hosts: vec![HostEvidence {
                agent_id: "s-1".into(),
                job_id: "j-1".into(),
                succeeded_seq: 4,
                checkpoint_seq: 5,
            }],
        }]
    );
    // An environment without a rule needs nothing.
    assert!(
        check(
            &staging_first(),
            &store,
            &logs,
            &plan("rel-demo", "demo", "other")
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn another_digest_or_an_unfinished_staging_rollout_is_not_yet() {
    for (digest, state) in [
        ("bb22", RolloutState::Succeeded),
        (DIGEST, RolloutState::Running),
        (DIGEST, RolloutState::RolledBack),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) =
            store_with(dir.path(), "staging", digest, state, HostStep::Succeeded).await;
        let e = check(
            &staging_first(),
            &store,
            &Logs::default(),
            &plan("rel-prod", "production", DIGEST),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a plan for production needs artifact aa11 to have succeeded in staging first: no \
             rollout of it there has succeeded ([promotion] production lists staging)"
        );
    }
    // The same digest succeeded in another environment only.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with(
        dir.path(),
        "demo",
        DIGEST,
        RolloutState::Succeeded,
        HostStep::Succeeded,
    )
    .await;
    assert!(matches!(
        check(
            &staging_first(),
            &store,
            &Logs::default(),
            &plan("rel-prod", "production", DIGEST)
        )
        .await,
        Err(PromotionError::NotYet { .. })
    ));
}

#[tokio::test]
async fn a_staging_success_its_agents_log_does_not_show_is_unconfirmed_naming_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, staging_sha) = staging_succeeded(dir.path()).await;
    let prod = plan("rel-prod", "production", DIGEST);
    // The agent cannot be read.
    let e = check(&staging_first(), &store, &Logs::default(), &prod)
        .await
        .unwrap_err();
    assert!(
        e.to_string().ends_with(
            "rollout rel-staging did by the service's record, but agent s-1's audit log cannot \
             confirm it: connection refused"
        ),
        "{e}"
    );
    // Its log shows the job failed.
    let logs = Logs::default();
    let mut log = log_for(&staging_sha);
    log[3] = line(4, "job.failed", r#","job_id":"j-1""#);
    logs.0.lock().unwrap().insert("s-1".into(), log);
    let e = check(&staging_first(), &store, &logs, &prod)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("but agent s-1's audit log does not show job j-1 succeeded"),
        "{e}"
    );
    // A staging rollout whose hosts never succeeded has nothing to confirm.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with(
        dir.path(),
        "staging",
        DIGEST,
        RolloutState::Succeeded,
        HostStep::Failed,
    )
    .await;
    let e = check(&staging_first(), &store, &Logs::default(), &prod)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("none of its hosts has a succeeded deploy on record"),
        "{e}"
    );
}
