//! The distributor over a fake fleet: what is pushed where, what is kept, what is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{FlagSet, SignedFlags};
use prost::Message;
use serde_json::Value;

use super::{Distributor, FlagSetError, check, targets};
use crate::agents::{FlagPush, PushOutcome};
use crate::audit::{AuditLog, read_lines};
use crate::store::embedded::EmbeddedStore;
use crate::store::{AgentRecord, Store};

const DEFINITION: &str = r#"{"flags":{"new-checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}"#;

/// Answers each agent as told (applied when not told), and counts the pushes.
#[derive(Default)]
struct Fake {
    answers: Mutex<HashMap<String, PushOutcome>>,
    pushes: Mutex<Vec<(String, u64)>>,
}

impl Fake {
    fn answer(&self, agent: &str, outcome: PushOutcome) {
        self.answers.lock().unwrap().insert(agent.into(), outcome);
    }
    fn pushes(&self) -> Vec<(String, u64)> {
        let mut p = self.pushes.lock().unwrap().clone();
        p.sort();
        p
    }
}

impl FlagPush for Fake {
    async fn push_flags(&self, agent: &AgentRecord, signed: SignedFlags) -> PushOutcome {
        let doc = FlagSet::decode(signed.flags.as_slice()).unwrap();
        self.pushes
            .lock()
            .unwrap()
            .push((agent.id.clone(), doc.version));
        self.answers
            .lock()
            .unwrap()
            .get(&agent.id)
            .cloned()
            .unwrap_or(PushOutcome::Applied { unchanged: false })
    }
}

struct World {
    _dir: tempfile::TempDir,
    audit_dir: std::path::PathBuf,
    store: Arc<EmbeddedStore>,
    fake: Arc<Fake>,
    flags: Distributor<EmbeddedStore, Fake>,
}

fn agent(id: &str, ring: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        addr: "127.0.0.1:1".into(),
        version: "0.1.0".into(),
        environment: "production".into(),
        labels: [("ring".to_owned(), ring.to_owned())].into(),
        reachable: true,
        last_seen_ms: 1,
        error: String::new(),
    }
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    for (id, ring) in [("web-1", "1"), ("web-2", "1"), ("web-3", "2")] {
        store.put_agent(agent(id, ring)).await.unwrap();
    }
    let audit_dir = dir.path().join("audit");
    let audit = Arc::new(AuditLog::open(&audit_dir, SigningKey::generate().unwrap()).unwrap());
    let fake = Arc::new(Fake::default());
    let flags = Distributor::new(store.clone(), fake.clone(), audit);
    World {
        _dir: dir,
        audit_dir,
        store,
        fake,
        flags,
    }
}

const NOW_MS: i64 = 1_800_000_000_000;

fn doc(version: u64) -> FlagSet {
    FlagSet {
        app: "web".into(),
        version,
        issued_at: NOW_MS / 1000,
        expires_at: NOW_MS / 1000 + 3600,
        agent_ids: vec![],
        labels: [("ring".to_owned(), "1".to_owned())].into(),
        definition_json: DEFINITION.as_bytes().to_vec(),
        reason: "launch".into(),
    }
}

fn signed(doc: &FlagSet) -> SignedFlags {
    let key = SigningKey::generate().unwrap();
    let mut s = SignedFlags {
        flags: doc.encode_to_vec(),
        signatures: vec![],
    };
    gantry_client::flags::add_flags_signature(&mut s, &key);
    s
}

fn entries(w: &World, event: &str) -> Vec<Value> {
    read_lines(&w.audit_dir)
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == event)
        .collect()
}

fn states(f: &gantry_proto::v1::FleetFlags) -> Vec<(String, String, u64)> {
    f.deliveries
        .iter()
        .map(|d| (d.agent_id.clone(), d.state.clone(), d.version))
        .collect()
}

#[test]
fn a_document_must_name_an_app_a_version_targets_a_valid_definition_and_a_signature() {
    let now = NOW_MS / 1000;
    assert_eq!(check(&signed(&doc(1)), now).unwrap().version, 1);
    let bad = |f: &dyn Fn(&mut FlagSet)| {
        let mut d = doc(1);
        f(&mut d);
        check(&signed(&d), now).unwrap_err().to_string()
    };
    assert!(bad(&|d| d.app.clear()).contains("flag set app: is empty"));
    assert!(bad(&|d| d.version = 0).contains("flag set version: is 0"));
    assert!(
        bad(&|d| d.labels.clear()).contains("names no agent id and no label"),
        "{}",
        bad(&|d| d.labels.clear())
    );
    assert!(
        bad(&|d| d.definition_json = b"{\"flags\":3}".to_vec())
            .starts_with("flag definition of app web:")
    );
    assert!(bad(&|d| d.expires_at = now).contains("expired at"));
    let mut unsigned = signed(&doc(1));
    unsigned.signatures.clear();
    assert_eq!(
        check(&unsigned, now).unwrap_err().to_string(),
        "flag set of app web carries no signature"
    );
    let e = check(
        &SignedFlags {
            flags: vec![0xff, 0xff],
            signatures: vec![],
        },
        now,
    )
    .unwrap_err();
    assert!(matches!(e, FlagSetError::Decode(_)), "{e}");
}

#[test]
fn targets_are_the_listed_ids_or_the_agents_with_every_label() {
    let inventory = [
        agent("web-1", "1"),
        agent("web-2", "2"),
        agent("web-3", "1"),
    ];
    let ids = |d: &FlagSet| {
        targets(d, &inventory)
            .iter()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&doc(1)), ["web-1", "web-3"]);
    let mut by_id = doc(1);
    by_id.labels.clear();
    by_id.agent_ids = vec!["web-2".into()];
    assert_eq!(ids(&by_id), ["web-2"]);
    let mut both = doc(1);
    both.labels.insert("region".into(), "eu".into());
    assert!(ids(&both).is_empty(), "every label must match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_pushed_to_its_targets_kept_and_retried_where_it_did_not_arrive() {
    let w = world().await;
    w.fake.answer(
        "web-2",
        PushOutcome::Unreachable("connection refused".into()),
    );
    let status = w
        .flags
        .publish(signed(&doc(1)), "ops-1", NOW_MS)
        .await
        .unwrap();
    assert_eq!(status.version, 1);
    assert_eq!(status.published_by, "ops-1");
    assert_eq!(
        states(&status),
        [
            ("web-1".into(), "applied".into(), 1),
            ("web-2".into(), "pending".into(), 1)
        ]
    );
    assert_eq!(status.deliveries[1].detail, "connection refused");
    assert_eq!(w.fake.pushes(), [("web-1".into(), 1), ("web-2".into(), 1)]);
    let published = entries(&w, "flags.published");
    assert_eq!(published.len(), 1);
    assert_eq!(published[0]["by"], "ops-1");
    assert_eq!(
        published[0]["targets"],
        serde_json::json!(["web-1", "web-2"])
    );

    // The next pass tries only the agent it could not reach; once it answers, none.
    w.flags.sync_once(NOW_MS + 1000).await;
    assert_eq!(w.fake.pushes().len(), 3);
    let status = w.flags.status("web").await.unwrap();
    assert_eq!(status.deliveries[1].attempts, 2);
    w.fake
        .answer("web-2", PushOutcome::Applied { unchanged: true });
    w.flags.sync_once(NOW_MS + 2000).await;
    w.flags.sync_once(NOW_MS + 3000).await;
    assert_eq!(w.fake.pushes().len(), 4);
    let status = w.flags.status("web").await.unwrap();
    assert_eq!(status.deliveries[1].state, "applied");
    assert_eq!(status.deliveries[1].detail, "it was in force there already");
    // One entry per state reached: web-1 applied, web-2 pending then applied.
    let delivered: Vec<_> = entries(&w, "flags.delivered")
        .iter()
        .map(|e| (e["agent_id"].clone(), e["state"].clone()))
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:?}");

    // An agent that joins the targets later gets the set at the next pass.
    w.store.put_agent(agent("web-4", "1")).await.unwrap();
    w.flags.sync_once(NOW_MS + 4000).await;
    assert!(w.fake.pushes().contains(&("web-4".into(), 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_kept_and_not_retried_and_older_or_rival_versions_are_refused() {
    let w = world().await;
    w.fake.answer(
        "web-1",
        PushOutcome::Refused("flags of web: no key in the agent's policy signed it".into()),
    );
    let first = signed(&doc(3));
    let status = w
        .flags
        .publish(first.clone(), "ops-1", NOW_MS)
        .await
        .unwrap();
    assert_eq!(status.deliveries[0].state, "refused");
    assert!(status.deliveries[0].detail.contains("no key"));
    w.flags.sync_once(NOW_MS + 1000).await;
    assert_eq!(w.fake.pushes().len(), 2, "a refusal is not retried");

    // The same document again changes nothing and pushes nothing.
    w.flags.publish(first, "ops-1", NOW_MS).await.unwrap();
    assert_eq!(w.fake.pushes().len(), 2);
    assert_eq!(entries(&w, "flags.published").len(), 1);

    // Another document of version 3, or an older one: refused, recorded, nothing kept.
    for version in [3, 2] {
        let mut rival = doc(version);
        rival.reason = "rival".into();
        let e = w
            .flags
            .publish(signed(&rival), "ops-2", NOW_MS)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "flags of web: version {version} is not above version 3, which the service distributes already (sign the next version)"
            )
        );
    }
    let refused = entries(&w, "flags.refused");
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["by"], "ops-2");
    assert_eq!(w.flags.status("web").await.unwrap().version, 3);

    // The same document with one more signature (an approval): kept, and pushed again to the
    // agent that refused it only.
    let mut approved = signed(&doc(3));
    approved
        .signatures
        .extend(status.signed.as_ref().unwrap().signatures.clone());
    w.fake
        .answer("web-1", PushOutcome::Applied { unchanged: false });
    let status = w.flags.publish(approved, "ops-2", NOW_MS).await.unwrap();
    assert_eq!(status.signed.as_ref().unwrap().signatures.len(), 2);
    assert_eq!(status.deliveries[0].state, "applied");
    assert_eq!(w.fake.pushes().len(), 3);
    assert_eq!(entries(&w, "flags.published").len(), 2);
    w.fake.answer(
        "web-1",
        PushOutcome::Refused("flags of web: no key in the agent's policy signed it".into()),
    );

    // A newer version is pushed to every target again, the refused one included.
    let status = w
        .flags
        .publish(signed(&doc(4)), "ops-1", NOW_MS)
        .await
        .unwrap();
    assert_eq!(
        states(&status),
        [
            ("web-1".into(), "refused".into(), 4),
            ("web-2".into(), "applied".into(), 4)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_document_is_no_longer_pushed_and_its_unreached_agents_say_so() {
    let w = world().await;
    w.fake
        .answer("web-2", PushOutcome::Unreachable("no route".into()));
    w.flags
        .publish(signed(&doc(1)), "ops-1", NOW_MS)
        .await
        .unwrap();
    w.flags.sync_once(NOW_MS + 3_601_000).await;
    assert_eq!(w.fake.pushes().len(), 2, "nothing pushed after the window");
    let status = w.flags.status("web").await.unwrap();
    assert_eq!(status.deliveries[1].state, "expired");
    assert!(status.deliveries[1].detail.contains("sign a new version"));
    w.flags.sync_once(NOW_MS + 3_602_000).await;
    assert_eq!(entries(&w, "flags.delivered").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_document_is_recorded_and_nothing_is_kept() {
    let w = world().await;
    let mut unsigned = signed(&doc(1));
    unsigned.signatures.clear();
    let e = w
        .flags
        .publish(unsigned, "ops-1", NOW_MS)
        .await
        .unwrap_err();
    assert!(matches!(e, FlagSetError::Unsigned(_)), "{e}");
    assert_eq!(entries(&w, "flags.refused").len(), 1);
    assert!(w.fake.pushes().is_empty());
    let e = w.flags.status("web").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the service distributes no flag set for app web"
    );
}
