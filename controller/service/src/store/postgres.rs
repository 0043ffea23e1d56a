//! The PostgreSQL store, for several `gantry server` replicas sharing one database.
//!
//! Migrations live in `controller/service/migrations/postgres/NNNN_*.sql`, compiled in, and
//! are applied in order at connect under an advisory lock, so replicas starting together
//! apply each exactly once. Lease takes and fenced writes serialise per rollout on a
//! transaction-scoped advisory lock keyed by the rollout id, and read the lease inside that
//! transaction: two replicas can never both believe they hold the same epoch.
//!
//! With a CA (`store_ca` in controller.toml) the connection is TLS (rustls, ring), the server's
//! certificate verified against that CA and the URL's host, and never falls back to plain
//! text; without one, a URL asking for `sslmode=require` is refused rather than left
//! unverified.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    AgentRecord, CheckpointRecord, ControlRequest, FlagDeliveryRecord, FlagSetRecord, HostRecord,
    Lease, Published, RolloutRecord, Store, StoreError, extend_lease, judge_publication,
    take_lease,
};

/// The schema migrations, in order: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_flags.sql")),
];

/// Advisory lock key taken while migrating ("gantry" in ASCII).
const MIGRATE_LOCK: i64 = 0x67_61_6e_74_72_79;

/// The newest schema version this build knows.
pub fn schema_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The PostgreSQL store. One connection, re-opened when it drops.
pub struct PostgresStore {
    url: String,
    tls: Option<MakeRustlsConnect>,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn pg(e: &tokio_postgres::Error) -> StoreError {
    // The Display of a database error is only "db error"; its source says what.
    let text = match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    StoreError::Postgres(text)
}

/// The rustls client config that trusts only `ca` (PEM, one or more certificates).
fn tls_config(ca: &Path) -> Result<MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| StoreError::Postgres(format!("store_ca {}: {reason}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".to_owned()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

async fn connect(url: &str, tls: Option<&MakeRustlsConnect>) -> Result<Client, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e: tokio_postgres::Error| pg(&e))?;
    match tls {
        Some(tls) => {
            // Verified TLS or nothing: no plain-text fallback once a CA is configured.
            config.ssl_mode(SslMode::Require);
            let (client, conn) = config.connect(tls.clone()).await.map_err(|e| pg(&e))?;
            tokio::spawn(drive(conn));
            Ok(client)
        }
        None if config.get_ssl_mode() == SslMode::Require => Err(StoreError::Postgres(
            "the store URL asks for sslmode=require: set store_ca to the CA that signed the \
             server's certificate (the connection is then verified TLS)"
                .to_owned(),
        )),
        None => {
            let (client, conn) = config.connect(NoTls).await.map_err(|e| pg(&e))?;
            tokio::spawn(drive(conn));
            Ok(client)
        }
    }
}

/// Runs a connection's I/O until it closes, and says so.
async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(conn: F) {
    if let Err(e) = conn.await {
        tracing::warn!(error = %e, "postgres connection closed");
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Postgres`] when it cannot connect or a migration fails;
    /// [`StoreError::SchemaTooNew`] when a newer build migrated the database.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_ca(url, None).await
    }

    /// [`Self::connect`], over TLS verified against `ca` when it is given.
    ///
    /// # Errors
    /// As [`Self::connect`]; also an unreadable `ca`, a certificate it does not vouch for, or
    /// `sslmode=require` without a `ca`.
    pub async fn connect_with_ca(url: &str, ca: Option<&Path>) -> Result<Self, StoreError> {
        let tls = ca.map(tls_config).transpose()?;
        let mut client = connect(url, tls.as_ref()).await?;
        migrate(&mut client).await?;
        Ok(Self {
            url: url.to_owned(),
            tls,
            client: Mutex::new(Some(client)),
        })
    }

    /// Runs `f` with a live connection, reconnecting first if the last one closed.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().await;
        let live = match guard.take() {
            Some(c) if !c.is_closed() => c,
            Some(_) | None => connect(&self.url, self.tls.as_ref()).await?,
        };
        let client = guard.insert(live);
        f(client).await
    }

    /// Runs one statement: the number of rows it changed.
    async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        self.with(async |c| c.execute(sql, params).await.map_err(|e| pg(&e)))
            .await
    }

    /// Runs one statement in a transaction fenced by `epoch` (see [`check_epoch`]): the
    /// number of rows it changed.
    async fn execute_fenced(
        &self,
        rollout_id: &str,
        epoch: u64,
        sql: &str,
        params: Params<'_>,
    ) -> Result<u64, StoreError> {
        self.with(async |c| {
            let tx = c.transaction().await.map_err(|e| pg(&e))?;
            check_epoch(&tx, rollout_id, epoch).await?;
            let n = tx.execute(sql, params).await.map_err(|e| pg(&e))?;
            tx.commit().await.map_err(|e| pg(&e))?;
            Ok(n)
        })
        .await
    }

    /// The rows of a query, each made into a `T` by `row`.
    async fn rows<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        row: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.with(async |c| {
            let rows = c.query(sql, params).await.map_err(|e| pg(&e))?;
            rows.iter().map(row).collect()
        })
        .await
    }

    /// The one row of a query, if there is one, made into a `T` by `row`.
    async fn row<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        row: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        self.with(async |c| {
            let found = c.query_opt(sql, params).await.map_err(|e| pg(&e))?;
            found.as_ref().map(row).transpose()
        })
        .await
    }

    /// Reads the lease of `rollout_id` under its lock, writes what `change` makes of it (when
    /// it makes one) and returns that, in one transaction.
    async fn change_lease(
        &self,
        rollout_id: &str,
        change: impl FnOnce(Option<&Lease>) -> Option<Lease>,
    ) -> Result<Option<Lease>, StoreError> {
        self.with(async |c| {
            let tx = c.transaction().await.map_err(|e| pg(&e))?;
            let current = lock_lease(&tx, rollout_id).await?;
            let changed = change(current.as_ref());
            if let Some(l) = &changed {
                write_lease(&tx, l).await?;
            }
            tx.commit().await.map_err(|e| pg(&e))?;
            Ok(changed)
        })
        .await
    }
}

/// A statement's parameters.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| pg(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(|e| pg(&e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS gantry_schema (version bigint PRIMARY KEY, applied_ms bigint NOT NULL)",
    )
    .await
    .map_err(|e| pg(&e))?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM gantry_schema", &[])
        .await
        .map_err(|e| pg(&e))?;
    let found: i64 = row.get(0);
    if found > schema_version() {
        return Err(StoreError::SchemaTooNew {
            found,
            known: schema_version(),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await.map_err(|e| pg(&e))?;
        tx.execute(
            "INSERT INTO gantry_schema (version, applied_ms) VALUES ($1, $2)",
            &[version, &gantry_client::clock::now_ms()],
        )
        .await
        .map_err(|e| pg(&e))?;
    }
    tx.commit().await.map_err(|e| pg(&e))
}

fn encode<T: Serialize>(what: &'static str, key: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        what,
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(what: &'static str, key: &str, doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt {
        what,
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn epoch_i64(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

/// Serialises this transaction with every other one on the same rollout's lease, then
/// returns that lease.
async fn lock_lease(tx: &Transaction<'_>, rollout_id: &str) -> Result<Option<Lease>, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&rollout_id],
    )
    .await
    .map_err(|e| pg(&e))?;
    let row = tx
        .query_opt(LEASE, &[&rollout_id])
        .await
        .map_err(|e| pg(&e))?;
    Ok(row.map(|r| lease_of(rollout_id, &r)))
}

/// The lease of a rollout, as [`lease_of`] reads it.
const LEASE: &str = "SELECT holder, epoch, expires_ms FROM leases WHERE rollout_id = $1";

fn lease_of(rollout_id: &str, r: &Row) -> Lease {
    Lease {
        rollout_id: rollout_id.to_owned(),
        holder: r.get(0),
        epoch: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
        expires_ms: r.get(2),
    }
}

async fn check_epoch(tx: &Transaction<'_>, rollout_id: &str, epoch: u64) -> Result<(), StoreError> {
    let current = lock_lease(tx, rollout_id).await?.map_or(0, |l| l.epoch);
    if current == epoch {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            rollout_id: rollout_id.to_owned(),
            epoch,
            current,
        })
    }
}

async fn write_lease(tx: &Transaction<'_>, l: &Lease) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO leases (rollout_id, holder, epoch, expires_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (rollout_id) DO UPDATE SET holder = $2, epoch = $3, expires_ms = $4",
        &[&l.rollout_id, &l.holder, &epoch_i64(l.epoch), &l.expires_ms],
    )
    .await
    .map_err(|e| pg(&e))?;
    Ok(())
}

impl Store for PostgresStore {
    async fn put_agent(&self, agent: AgentRecord) -> Result<(), StoreError> {
        let doc = encode("agent", &agent.id, &agent)?;
        self.execute(
            "INSERT INTO agents (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = $2",
            &[&agent.id, &doc],
        )
        .await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.rows("SELECT id, doc FROM agents ORDER BY id", &[], |r| {
            decode("agent", r.get(0), r.get(1))
        })
        .await
    }

    async fn create_rollout(&self, rollout: RolloutRecord) -> Result<(), StoreError> {
        let doc = encode("rollout", &rollout.id, &rollout)?;
        let n = self
            .execute(
                "INSERT INTO rollouts (id, created_ms, doc) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
                &[&rollout.id, &rollout.created_ms, &doc],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Exists(rollout.id));
        }
        Ok(())
    }

    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        self.row("SELECT doc FROM rollouts WHERE id = $1", &[&id], |r| {
            decode("rollout", id, r.get(0))
        })
        .await
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        self.rows(
            "SELECT id, doc FROM rollouts ORDER BY created_ms, id",
            &[],
            |r| decode("rollout", r.get(0), r.get(1)),
        )
        .await
    }

    async fn update_rollout(&self, rollout: RolloutRecord, epoch: u64) -> Result<(), StoreError> {
        let doc = encode("rollout", &rollout.id, &rollout)?;
        let n = self
            .execute_fenced(
                &rollout.id,
                epoch,
                "UPDATE rollouts SET doc = $2 WHERE id = $1",
                &[&rollout.id, &doc],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(rollout.id));
        }
        Ok(())
    }

    async fn put_host(&self, host: HostRecord, epoch: u64) -> Result<(), StoreError> {
        let key = format!("{}/{}", host.rollout_id, host.agent_id);
        let doc = encode("host", &key, &host)?;
        let ring = i32::try_from(host.ring).unwrap_or(i32::MAX);
        self.execute_fenced(
            &host.rollout_id,
            epoch,
            "INSERT INTO hosts (rollout_id, agent_id, ring, doc) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rollout_id, agent_id) DO UPDATE SET ring = $3, doc = $4",
            &[&host.rollout_id, &host.agent_id, &ring, &doc],
        )
        .await?;
        Ok(())
    }

    async fn hosts(&self, rollout_id: &str) -> Result<Vec<HostRecord>, StoreError> {
        self.rows(
            "SELECT agent_id, doc FROM hosts WHERE rollout_id = $1 ORDER BY ring, agent_id",
            &[&rollout_id],
            |r| decode("host", r.get(0), r.get(1)),
        )
        .await
    }

    async fn acquire_lease(
        &self,
        rollout_id: &str,
        holder: &str,
        now_ms: i64,
        period_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        self.change_lease(rollout_id, |current| {
            take_lease(current, rollout_id, holder, now_ms, period_ms)
        })
        .await
    }

    async fn renew_lease(
        &self,
        rollout_id: &str,
        holder: &str,
        epoch: u64,
        now_ms: i64,
        period_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        self.change_lease(rollout_id, |current| {
            extend_lease(current, holder, epoch, now_ms, period_ms)
        })
        .await
    }

    async fn lease(&self, rollout_id: &str) -> Result<Option<Lease>, StoreError> {
        self.row(LEASE, &[&rollout_id], |r| Ok(lease_of(rollout_id, r)))
            .await
    }

    async fn witness_checkpoint(&self, cp: CheckpointRecord) -> Result<bool, StoreError> {
        let seq = i64::try_from(cp.seq).unwrap_or(i64::MAX);
        // Forward only: the update applies when the new seq is higher.
        let n = self
            .execute(
                "INSERT INTO checkpoints (agent_id, key_id, seq, line) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (agent_id) DO UPDATE SET key_id = $2, seq = $3, line = $4 \
                 WHERE checkpoints.seq < $3",
                &[&cp.agent_id, &cp.key_id, &seq, &cp.line],
            )
            .await?;
        Ok(n == 1)
    }

    async fn checkpoint(&self, agent_id: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        self.row(
            "SELECT key_id, seq, line FROM checkpoints WHERE agent_id = $1",
            &[&agent_id],
            |r| {
                Ok(CheckpointRecord {
                    agent_id: agent_id.to_owned(),
                    key_id: r.get(0),
                    seq: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                    line: r.get(2),
                })
            },
        )
        .await
    }

    async fn set_control(&self, request: ControlRequest) -> Result<(), StoreError> {
        let doc = encode("control", &request.rollout_id, &request)?;
        self.execute(
            "INSERT INTO controls (rollout_id, doc) VALUES ($1, $2) \
             ON CONFLICT (rollout_id) DO UPDATE SET doc = $2",
            &[&request.rollout_id, &doc],
        )
        .await?;
        Ok(())
    }

    async fn control(&self, rollout_id: &str) -> Result<Option<ControlRequest>, StoreError> {
        self.row(
            "SELECT doc FROM controls WHERE rollout_id = $1",
            &[&rollout_id],
            |r| decode("control", rollout_id, r.get(0)),
        )
        .await
    }

    async fn clear_control(&self, request: &ControlRequest) -> Result<(), StoreError> {
        let doc = encode("control", &request.rollout_id, request)?;
        self.execute(
            "DELETE FROM controls WHERE rollout_id = $1 AND doc = $2",
            &[&request.rollout_id, &doc],
        )
        .await?;
        Ok(())
    }

    async fn publish_flags(&self, set: FlagSetRecord) -> Result<Published, StoreError> {
        let doc = encode("flag set", &set.app, &set)?;
        let version = i64::try_from(set.version).unwrap_or(i64::MAX);
        self.with(async |c| {
            let tx = c.transaction().await.map_err(|e| pg(&e))?;
            // Serialises publications of one app across replicas (no row to lock the first
            // time).
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('flags:' || $1, 0))",
                &[&set.app],
            )
            .await
            .map_err(|e| pg(&e))?;
            let current: Option<FlagSetRecord> = tx
                .query_opt("SELECT doc FROM flag_sets WHERE app = $1", &[&set.app])
                .await
                .map_err(|e| pg(&e))?
                .map(|r| decode("flag set", &set.app, r.get(0)))
                .transpose()?;
            if !judge_publication(current.as_ref(), &set)? {
                return Ok(Published::Same);
            }
            tx.execute(
                "INSERT INTO flag_sets (app, version, doc) VALUES ($1, $2, $3) \
                 ON CONFLICT (app) DO UPDATE SET version = $2, doc = $3",
                &[&set.app, &version, &doc],
            )
            .await
            .map_err(|e| pg(&e))?;
            tx.commit().await.map_err(|e| pg(&e))?;
            Ok(Published::New)
        })
        .await
    }

    async fn flag_set(&self, app: &str) -> Result<Option<FlagSetRecord>, StoreError> {
        self.row("SELECT doc FROM flag_sets WHERE app = $1", &[&app], |r| {
            decode("flag set", app, r.get(0))
        })
        .await
    }

    async fn flag_sets(&self) -> Result<Vec<FlagSetRecord>, StoreError> {
        self.rows("SELECT app, doc FROM flag_sets ORDER BY app", &[], |r| {
            decode("flag set", r.get(0), r.get(1))
        })
        .await
    }

    async fn put_delivery(&self, delivery: FlagDeliveryRecord) -> Result<(), StoreError> {
        let key = format!("{}/{}", delivery.app, delivery.agent_id);
        let doc = encode("flag delivery", &key, &delivery)?;
        self.execute(
            "INSERT INTO flag_deliveries (app, agent_id, doc) VALUES ($1, $2, $3) \
             ON CONFLICT (app, agent_id) DO UPDATE SET doc = $3",
            &[&delivery.app, &delivery.agent_id, &doc],
        )
        .await?;
        Ok(())
    }

    async fn deliveries(&self, app: &str) -> Result<Vec<FlagDeliveryRecord>, StoreError> {
        self.rows(
            "SELECT agent_id, doc FROM flag_deliveries WHERE app = $1 ORDER BY agent_id",
            &[&app],
            |r| decode("flag delivery", r.get(0), r.get(1)),
        )
        .await
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::store::pg_test::PgServer;

    async fn encrypted(store: &PostgresStore) -> bool {
        store
            .with(async |c| {
                let row = c
                    .query_one(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                Ok(row.get::<_, bool>(0))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn with_a_ca_the_store_is_reached_over_verified_tls_and_never_in_plain_text() {
        let Some((server, ca)) = PgServer::start_tls() else {
            return;
        };
        let store = PostgresStore::connect_with_ca(&server.url(), Some(&ca))
            .await
            .unwrap();
        assert!(encrypted(&store).await, "the session is not encrypted");
        // Without a CA the same server is reached as before (plain text, no verification).
        let plain = PostgresStore::connect(&server.url()).await.unwrap();
        assert!(!encrypted(&plain).await);

        // A CA that did not sign the server's certificate: refused, saying why.
        let (_other, other_ca) = PgServer::start_tls().unwrap();
        let e = PostgresStore::connect_with_ca(&server.url(), Some(&other_ca))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("certificate"), "{e}");
        // sslmode=require without a CA is not left unverified.
        let e = PostgresStore::connect(&format!("{}?sslmode=require", server.url()))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("set store_ca"), "{e}");
        // An unreadable or empty CA file names itself.
        let empty = ca.with_file_name("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = PostgresStore::connect_with_ca(&server.url(), Some(&empty))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }
}
