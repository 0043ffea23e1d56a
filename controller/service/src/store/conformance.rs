//! The conformance suite every store passes: the embedded one and a real PostgreSQL that the
//! test starts on loopback ([`super::pg_test`]). Each check is one function over any [`Store`];
//! the tests at the bottom run all of them against both.

#![cfg(test)]

use std::collections::BTreeMap;

use super::{
    AgentRecord, BakeCounts, CheckpointRecord, HostAction, HostRecord, HostStep, RolloutRecord,
    RolloutState, Store, StoreError,
};

fn rollout(id: &str, created_ms: i64) -> RolloutRecord {
    RolloutRecord {
        id: id.to_owned(),
        signed_plan: vec![1, 2, 3, 0, 255],
        plan_sha256: "ab".repeat(32),
        state: RolloutState::Pending,
        ring: 0,
        bake_until_ms: 0,
        rollback_to: 0,
        bake_counts: Default::default(),
        reason: String::new(),
        started_by: "operator-1".to_owned(),
        created_ms,
        updated_ms: created_ms,
    }
}

fn host(rollout_id: &str, agent_id: &str, ring: u32) -> HostRecord {
    HostRecord {
        rollout_id: rollout_id.to_owned(),
        agent_id: agent_id.to_owned(),
        ring,
        action: HostAction::Deploy,
        step: HostStep::Pending,
        job_id: format!("plan-{agent_id}-deploy"),
        reason: String::new(),
        updated_ms: 0,
    }
}

/// Agents: added, replaced, listed by id.
pub async fn agents_round_trip(s: &impl Store) {
    assert!(s.agents().await.unwrap().is_empty());
    let mut a = AgentRecord {
        id: "web-2".into(),
        addr: "127.0.0.1:7002".into(),
        version: String::new(),
        environment: String::new(),
        labels: BTreeMap::new(),
        reachable: false,
        last_seen_ms: 0,
        error: "connection refused".into(),
    };
    s.put_agent(a.clone()).await.unwrap();
    let b = AgentRecord {
        id: "web-1".into(),
        addr: "127.0.0.1:7001".into(),
        ..a.clone()
    };
    s.put_agent(b.clone()).await.unwrap();
    a.labels.insert("ring".into(), "1".into());
    a.reachable = true;
    a.version = "0.1.0".into();
    a.error.clear();
    s.put_agent(a.clone()).await.unwrap();
    assert_eq!(s.agents().await.unwrap(), vec![b, a]);
}

/// A rollout is created once, read back byte for byte, and listed oldest first.
pub async fn rollouts_are_created_once(s: &impl Store) {
    s.create_rollout(rollout("r-b", 20)).await.unwrap();
    s.create_rollout(rollout("r-a", 30)).await.unwrap();
    let again = s.create_rollout(rollout("r-b", 40)).await.unwrap_err();
    assert!(
        matches!(&again, StoreError::Exists(id) if id == "r-b"),
        "{again}"
    );
    assert_eq!(s.rollout("r-b").await.unwrap(), Some(rollout("r-b", 20)));
    assert_eq!(s.rollout("nope").await.unwrap(), None);
    let ids: Vec<String> = s
        .rollouts()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r-b", "r-a"]);
}

/// The lease: one holder at a time, the epoch grows on every take, renewals are a
/// compare-and-set on holder and epoch, and an expired lease can be taken over.
pub async fn the_lease_has_one_holder_and_a_growing_epoch(s: &impl Store) {
    s.create_rollout(rollout("r", 0)).await.unwrap();
    assert_eq!(s.lease("r").await.unwrap(), None);
    let a = s
        .acquire_lease("r", "replica-a", 1_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.epoch, a.expires_ms, a.holder.as_str()),
        (1, 11_000, "replica-a")
    );
    // Held and fresh: the other replica cannot take it.
    assert_eq!(
        s.acquire_lease("r", "replica-b", 5_000, 10_000)
            .await
            .unwrap(),
        None
    );
    // Renewed by its holder: same epoch, later expiry.
    let a2 = s
        .renew_lease("r", "replica-a", 1, 9_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a2.epoch, a2.expires_ms), (1, 19_000));
    assert_eq!(
        s.acquire_lease("r", "replica-b", 18_999, 10_000)
            .await
            .unwrap(),
        None
    );
    // Expired: b takes it over with a higher epoch, and a's renewal fails from then on.
    let b = s
        .acquire_lease("r", "replica-b", 19_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.epoch, b.holder.as_str()), (2, "replica-b"));
    assert_eq!(
        s.renew_lease("r", "replica-a", 1, 19_001, 10_000)
            .await
            .unwrap(),
        None
    );
    // A holder at a stale epoch cannot renew even its own name's lease.
    assert_eq!(
        s.renew_lease("r", "replica-b", 1, 19_001, 10_000)
            .await
            .unwrap(),
        None
    );
    // A restarted holder takes its own lease again at once, with a new epoch: the fence
    // against whatever its previous process still had in flight.
    let b2 = s
        .acquire_lease("r", "replica-b", 20_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b2.epoch, 3);
    assert_eq!(s.lease("r").await.unwrap(), Some(b2));
    // Leases are per rollout.
    let other = s
        .acquire_lease("other", "replica-a", 20_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.epoch, 1);
}

/// Writes fenced by the epoch: the current one passes, an older one is refused and changes
/// nothing.
pub async fn writes_from_an_old_epoch_are_refused(s: &impl Store) {
    s.create_rollout(rollout("r", 0)).await.unwrap();
    let a = s.acquire_lease("r", "a", 0, 100).await.unwrap().unwrap();
    let mut r = rollout("r", 0);
    r.state = RolloutState::Running;
    s.update_rollout(r.clone(), a.epoch).await.unwrap();
    s.put_host(host("r", "web-1", 0), a.epoch).await.unwrap();
    let b = s.acquire_lease("r", "b", 100, 100).await.unwrap().unwrap();
    assert_eq!(b.epoch, 2);

    let mut stale = r.clone();
    stale.state = RolloutState::Succeeded;
    let e = s.update_rollout(stale, a.epoch).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Fenced {
                epoch: 1,
                current: 2,
                ..
            }
        ),
        "{e}"
    );
    let mut h = host("r", "web-1", 0);
    h.step = HostStep::Succeeded;
    let e = s.put_host(h.clone(), a.epoch).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert_eq!(
        s.rollout("r").await.unwrap().unwrap().state,
        RolloutState::Running
    );
    assert_eq!(s.hosts("r").await.unwrap()[0].step, HostStep::Pending);

    s.put_host(h.clone(), b.epoch).await.unwrap();
    assert_eq!(s.hosts("r").await.unwrap(), vec![h]);
    // No lease at all: epoch 0 is not a lease, every write is fenced.
    s.create_rollout(rollout("unleased", 0)).await.unwrap();
    assert!(matches!(
        s.update_rollout(rollout("unleased", 0), 1)
            .await
            .unwrap_err(),
        StoreError::Fenced { current: 0, .. }
    ));
    let missing = s
        .update_rollout(rollout("missing", 0), 0)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
}

/// A bake's gate counts are kept with the rollout and read back as written; clearing them
/// keeps nothing.
pub async fn bake_counts_are_kept_with_the_rollout(s: &impl Store) {
    s.create_rollout(rollout("r", 0)).await.unwrap();
    let a = s.acquire_lease("r", "a", 0, 100).await.unwrap().unwrap();
    let mut r = rollout("r", 0);
    r.state = RolloutState::Running;
    r.bake_until_ms = 5_000;
    r.bake_counts.insert(
        "web-1".into(),
        BakeCounts::first(4, 1).read(6, 1).read(1, 3),
    );
    r.bake_counts
        .insert("web-2".into(), BakeCounts::first(0, 0));
    s.update_rollout(r.clone(), a.epoch).await.unwrap();
    let back = s.rollout("r").await.unwrap().unwrap();
    assert_eq!(back.bake_counts, r.bake_counts);
    // 4 -> 6 counts 2; the reset to 1 counts 1. 1 -> 3 connection errors (no reset) counts 2.
    assert_eq!(
        back.bake_counts["web-1"],
        BakeCounts {
            restarts: 3,
            conn_errors: 2,
            last_restarts: 1,
            last_conn_errors: 3,
        }
    );
    r.bake_counts.clear();
    s.update_rollout(r, a.epoch).await.unwrap();
    assert!(
        s.rollout("r")
            .await
            .unwrap()
            .unwrap()
            .bake_counts
            .is_empty()
    );
}

/// Hosts are listed per rollout, by ring then id, and replaced in place.
pub async fn hosts_are_listed_by_ring(s: &impl Store) {
    s.create_rollout(rollout("r1", 0)).await.unwrap();
    s.create_rollout(rollout("r10", 0)).await.unwrap();
    let e1 = s
        .acquire_lease("r1", "a", 0, 100)
        .await
        .unwrap()
        .unwrap()
        .epoch;
    let e10 = s
        .acquire_lease("r10", "a", 0, 100)
        .await
        .unwrap()
        .unwrap()
        .epoch;
    for (id, ring) in [("c", 0), ("b", 1), ("a", 1), ("z", 0)] {
        s.put_host(host("r1", id, ring), e1).await.unwrap();
    }
    // A rollout whose id starts with the other's does not leak into its hosts.
    s.put_host(host("r10", "x", 0), e10).await.unwrap();
    let order: Vec<(u32, String)> = s
        .hosts("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.ring, h.agent_id))
        .collect();
    assert_eq!(
        order,
        [
            (0, "c".into()),
            (0, "z".into()),
            (1, "a".into()),
            (1, "b".into())
        ]
    );
    let mut changed = host("r1", "a", 1);
    changed.step = HostStep::Failed;
    changed.reason = "health check failed".into();
    s.put_host(changed.clone(), e1).await.unwrap();
    let hosts = s.hosts("r1").await.unwrap();
    assert_eq!(hosts.len(), 4);
    assert_eq!(hosts[2], changed);
    assert_eq!(s.hosts("r10").await.unwrap().len(), 1);
}

/// The witnessed checkpoint only moves forward.
pub async fn checkpoints_move_forward_only(s: &impl Store) {
    let cp = |seq: u64| CheckpointRecord {
        agent_id: "web-1".into(),
        key_id: "k".into(),
        seq,
        line: format!("{{\"seq\":{seq}}}"),
    };
    assert_eq!(s.checkpoint("web-1").await.unwrap(), None);
    assert!(s.witness_checkpoint(cp(5)).await.unwrap());
    assert!(!s.witness_checkpoint(cp(3)).await.unwrap());
    assert!(!s.witness_checkpoint(cp(5)).await.unwrap());
    assert_eq!(s.checkpoint("web-1").await.unwrap(), Some(cp(5)));
    assert!(s.witness_checkpoint(cp(9)).await.unwrap());
    assert_eq!(s.checkpoint("web-1").await.unwrap(), Some(cp(9)));
}

/// Operator requests: the newest one stands, and clearing an older one leaves it.
pub async fn controls_keep_the_newest_request(s: &impl Store) {
    use super::{Control, ControlRequest};
    let req = |control, at_ms| ControlRequest {
        rollout_id: "r".into(),
        control,
        by: "ops-1".into(),
        at_ms,
    };
    assert_eq!(s.control("r").await.unwrap(), None);
    s.set_control(req(Control::Pause, 1)).await.unwrap();
    s.set_control(req(Control::Abort, 2)).await.unwrap();
    s.clear_control(&req(Control::Pause, 1)).await.unwrap();
    assert_eq!(s.control("r").await.unwrap(), Some(req(Control::Abort, 2)));
    s.clear_control(&req(Control::Abort, 2)).await.unwrap();
    assert_eq!(s.control("r").await.unwrap(), None);
}

fn flag_set(app: &str, version: u64, digest: &str) -> super::FlagSetRecord {
    super::FlagSetRecord {
        app: app.into(),
        version,
        signed_hex: format!("0a{version:02x}"),
        digest: digest.into(),
        published_ms: 1_000 + i64::try_from(version).unwrap(),
        published_by: "ops-1".into(),
    }
}

/// A flag set only moves to a higher version; the same bytes again are no change, the same
/// document with other signatures replaces it; another document of the kept version, or a
/// lower one, is refused naming both versions.
pub async fn flag_sets_only_move_forward(s: &impl Store) {
    use super::{Published, StoreError};
    assert_eq!(s.flag_set("web").await.unwrap(), None);
    assert_eq!(
        s.publish_flags(flag_set("web", 2, "aa")).await.unwrap(),
        Published::New
    );
    assert_eq!(
        s.publish_flags(flag_set("web", 2, "aa")).await.unwrap(),
        Published::Same
    );
    for (version, digest) in [(2, "bb"), (1, "cc")] {
        let e = s
            .publish_flags(flag_set("web", version, digest))
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::FlagsSuperseded { current: 2, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("version {version} is not above version 2")),
            "{e}"
        );
    }
    assert_eq!(
        s.flag_set("web").await.unwrap(),
        Some(flag_set("web", 2, "aa"))
    );
    // The kept document with other signatures takes its place.
    let mut resigned = flag_set("web", 2, "aa");
    resigned.signed_hex.push_str("ff");
    assert_eq!(
        s.publish_flags(resigned.clone()).await.unwrap(),
        Published::New
    );
    assert_eq!(s.flag_set("web").await.unwrap(), Some(resigned));
    assert_eq!(
        s.publish_flags(flag_set("web", 5, "dd")).await.unwrap(),
        Published::New
    );
    s.publish_flags(flag_set("api", 1, "ee")).await.unwrap();
    let all: Vec<_> = s
        .flag_sets()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.app, f.version))
        .collect();
    assert_eq!(all, [("api".into(), 1), ("web".into(), 5)]);
}

/// One delivery per app and agent, the newest write standing, listed by agent id.
pub async fn deliveries_are_kept_per_app_and_agent(s: &impl Store) {
    use super::{DeliveryState, FlagDeliveryRecord};
    let d = |app: &str, agent: &str, version, state| FlagDeliveryRecord {
        app: app.into(),
        agent_id: agent.into(),
        version,
        state,
        detail: String::new(),
        at_ms: 7,
        attempts: 1,
    };
    assert!(s.deliveries("web").await.unwrap().is_empty());
    s.put_delivery(d("web", "web-2", 1, DeliveryState::Pending))
        .await
        .unwrap();
    s.put_delivery(d("web", "web-1", 1, DeliveryState::Refused))
        .await
        .unwrap();
    s.put_delivery(d("web", "web-2", 2, DeliveryState::Applied))
        .await
        .unwrap();
    s.put_delivery(d("webx", "web-1", 1, DeliveryState::Applied))
        .await
        .unwrap();
    assert_eq!(
        s.deliveries("web").await.unwrap(),
        [
            d("web", "web-1", 1, DeliveryState::Refused),
            d("web", "web-2", 2, DeliveryState::Applied)
        ]
    );
}

/// Runs every check against fresh stores made by `fresh`.
macro_rules! conformance_tests {
    ($fresh:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn agents_round_trip() {
            let Some(s) = $fresh.await else { return };
            super::agents_round_trip(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rollouts_are_created_once() {
            let Some(s) = $fresh.await else { return };
            super::rollouts_are_created_once(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_lease_has_one_holder_and_a_growing_epoch() {
            let Some(s) = $fresh.await else { return };
            super::the_lease_has_one_holder_and_a_growing_epoch(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn writes_from_an_old_epoch_are_refused() {
            let Some(s) = $fresh.await else { return };
            super::writes_from_an_old_epoch_are_refused(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bake_counts_are_kept_with_the_rollout() {
            let Some(s) = $fresh.await else { return };
            super::bake_counts_are_kept_with_the_rollout(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn hosts_are_listed_by_ring() {
            let Some(s) = $fresh.await else { return };
            super::hosts_are_listed_by_ring(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn controls_keep_the_newest_request() {
            let Some(s) = $fresh.await else { return };
            super::controls_keep_the_newest_request(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn flag_sets_only_move_forward() {
            let Some(s) = $fresh.await else { return };
            super::flag_sets_only_move_forward(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn deliveries_are_kept_per_app_and_agent() {
            let Some(s) = $fresh.await else { return };
            super::deliveries_are_kept_per_app_and_agent(&s.store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn checkpoints_move_forward_only() {
            let Some(s) = $fresh.await else { return };
            super::checkpoints_move_forward_only(&s.store).await;
        }
    };
}

mod embedded {
    use crate::store::embedded::EmbeddedStore;

    struct Fresh {
        store: EmbeddedStore,
        _dir: tempfile::TempDir,
    }

    async fn fresh() -> Option<Fresh> {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        Some(Fresh { store, _dir: dir })
    }

    conformance_tests!(fresh());
}

mod postgres {
    use crate::store::pg_test::PgServer;
    use crate::store::postgres::PostgresStore;

    struct Fresh {
        store: PostgresStore,
        _pg: PgServer,
    }

    async fn fresh() -> Option<Fresh> {
        let pg = PgServer::start()?;
        let store = PostgresStore::connect(&pg.url()).await.unwrap();
        Some(Fresh { store, _pg: pg })
    }

    conformance_tests!(fresh());
}

/// Store-specific behaviour: the data-dir lock, and migrations applied once.
mod opening {
    use crate::store::Store;
    use crate::store::StoreError;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::pg_test::PgServer;
    use crate::store::postgres::{self, PostgresStore};

    #[tokio::test]
    async fn a_second_server_on_the_same_data_dir_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = EmbeddedStore::open(dir.path()).unwrap();
        let e = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("locked by a running server"), "{e}");
        first
            .put_agent(super::AgentRecord {
                id: "a".into(),
                addr: "127.0.0.1:1".into(),
                version: String::new(),
                environment: String::new(),
                labels: Default::default(),
                reachable: false,
                last_seen_ms: 0,
                error: String::new(),
            })
            .await
            .unwrap();
        drop(first);
        // Reopened (a restart): the schema is not migrated again and the data is there.
        let again = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(again.agents().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_embedded_store_of_schema_version_1_is_upgraded_and_keeps_its_data() {
        use redb::{Database, TableDefinition};
        let dir = tempfile::tempdir().unwrap();
        // A version-1 file, as the build before the flag tables wrote it.
        {
            let db = Database::create(dir.path().join("store.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            let meta: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
            tx.open_table(meta)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
            let agents: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("agents");
            tx.open_table(agents)
                .unwrap()
                .insert("a", br#"{"id":"a","addr":"127.0.0.1:1","version":"","environment":"","labels":{},"reachable":false,"last_seen_ms":0,"error":""}"#.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(crate::store::embedded::schema_version(), 2);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.agents().await.unwrap().len(), 1);
        assert!(store.flag_sets().await.unwrap().is_empty());
        assert!(store.deliveries("web").await.unwrap().is_empty());
        store
            .publish_flags(super::flag_set("web", 1, "aa"))
            .await
            .unwrap();
        drop(store);
        let again = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(again.flag_set("web").await.unwrap().unwrap().version, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_migrations_apply_once_across_replicas() {
        let Some(pg) = PgServer::start() else { return };
        let url = pg.url();
        let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        a.create_rollout(super::rollout("r", 1)).await.unwrap();
        assert_eq!(b.rollout("r").await.unwrap().unwrap().id, "r");
        let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = client
            .query("SELECT version FROM gantry_schema ORDER BY version", &[])
            .await
            .unwrap();
        let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            versions,
            (1..=postgres::schema_version()).collect::<Vec<_>>()
        );
        assert_eq!(postgres::schema_version(), 2);
    }
}
