//! The embedded store: one redb database file in the server's data dir, no other process.
//!
//! A second server on the same data dir is refused at start: the store holds an exclusive
//! `flock` on `store.lock` for as long as it is open (the kernel drops it when the process
//! dies, even by `kill -9`, so a restart never finds a stale lock).
//!
//! Records are JSON values in key/value tables. The schema is versioned in `MIGRATIONS`:
//! each entry upgrades the database by one version, inside the write transaction that records
//! the new version in the `meta` table.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AgentRecord, CheckpointRecord, ControlRequest, FlagDeliveryRecord, FlagSetRecord, HostRecord,
    Lease, Published, RolloutRecord, Store, StoreError, extend_lease, judge_publication,
    take_lease,
};

/// The database file's name in the data dir.
pub const DB_FILE: &str = "store.redb";
/// The lock file's name in the data dir.
pub const LOCK_FILE: &str = "store.lock";

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const AGENTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("agents");
const ROLLOUTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rollouts");
/// Keyed `rollout_id NUL agent_id`.
const HOSTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hosts");
const LEASES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases");
const CHECKPOINTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("checkpoints");
const CONTROLS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("controls");
const FLAG_SETS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("flag_sets");
/// Keyed `app NUL agent_id`.
const DELIVERIES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("flag_deliveries");

const SCHEMA_KEY: &str = "schema_version";

type Migration = fn(&WriteTransaction) -> Result<(), MigrateError>;

/// Schema upgrades in order: entry *n* takes the database from version *n* to *n + 1*.
const MIGRATIONS: &[Migration] = &[v1_tables, v2_flags];

/// Version 2: the flag sets the service distributes and their deliveries.
fn v2_flags(tx: &WriteTransaction) -> Result<(), MigrateError> {
    tx.open_table(FLAG_SETS)?;
    tx.open_table(DELIVERIES)?;
    Ok(())
}

/// Version 1: the seven tables.
fn v1_tables(tx: &WriteTransaction) -> Result<(), MigrateError> {
    tx.open_table(AGENTS)?;
    tx.open_table(ROLLOUTS)?;
    tx.open_table(HOSTS)?;
    tx.open_table(LEASES)?;
    tx.open_table(CHECKPOINTS)?;
    tx.open_table(CONTROLS)?;
    Ok(())
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Held for as long as the store is open; released by the kernel when the process dies.
    _lock: Flock<File>,
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, locks it, and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another server holds the data dir;
    /// [`StoreError::Embedded`] when the file cannot be opened;
    /// [`StoreError::SchemaTooNew`] when a newer build wrote it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let embedded = |path: &Path, reason: String| StoreError::Embedded {
            path: path.to_owned(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| embedded(data_dir, e.to_string()))?;
        let lock_path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| embedded(&lock_path, e.to_string()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            StoreError::Locked {
                dir: data_dir.to_owned(),
                reason: match errno {
                    nix::errno::Errno::EWOULDBLOCK => format!(
                        "{} is locked by a running server (stop it, or give this one its own data_dir)",
                        lock_path.display()
                    ),
                    other => format!("cannot lock {}: {other}", lock_path.display()),
                },
            }
        })?;
        let path = data_dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| embedded(&path, e.to_string()))?;
        migrate(&db).map_err(|e| match e {
            MigrateError::Redb(e) => embedded(&path, e.to_string()),
            MigrateError::TooNew(found) => StoreError::SchemaTooNew {
                found,
                known: schema_version(),
            },
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a blocking thread: redb's commits fsync.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, Failure> + Send + 'static,
    {
        let inner = self.inner.clone();
        let path = inner.path.clone();
        let joined = tokio::task::spawn_blocking(move || f(&inner.db)).await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Failure::Redb(e))) => Err(StoreError::Embedded {
                path,
                reason: e.to_string(),
            }),
            Ok(Err(Failure::Store(e))) => Err(e),
            Err(e) => Err(StoreError::Embedded {
                path,
                reason: format!("store task failed: {e}"),
            }),
        }
    }
}

/// The newest schema version this build knows.
pub fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

enum MigrateError {
    Redb(Box<redb::Error>),
    TooNew(i64),
}

impl<E: Into<redb::Error>> From<E> for MigrateError {
    fn from(e: E) -> Self {
        MigrateError::Redb(Box::new(e.into()))
    }
}

fn migrate(db: &Database) -> Result<(), MigrateError> {
    let tx = db.begin_write()?;
    let found = {
        let meta = tx.open_table(META)?;
        meta.get(SCHEMA_KEY)?.map(|g| g.value()).unwrap_or(0)
    };
    let found_i = i64::try_from(found).unwrap_or(i64::MAX);
    if found_i > schema_version() {
        return Err(MigrateError::TooNew(found_i));
    }
    let from = usize::try_from(found).unwrap_or(usize::MAX);
    for (i, step) in MIGRATIONS.iter().enumerate().skip(from) {
        step(&tx)?;
        let mut meta = tx.open_table(META)?;
        meta.insert(SCHEMA_KEY, u64::try_from(i + 1).unwrap_or(u64::MAX))?;
    }
    tx.commit()?;
    Ok(())
}

/// A failure inside a store task: redb's, or the store's own (fenced, exists ...).
enum Failure {
    Redb(Box<redb::Error>),
    Store(StoreError),
}

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Redb(Box::new(e.into()))
    }
}

fn encode<T: Serialize>(what: &'static str, key: &str, v: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(v).map_err(|e| {
        Failure::Store(StoreError::Corrupt {
            what,
            key: key.to_owned(),
            reason: e.to_string(),
        })
    })
}

fn decode<T: DeserializeOwned>(what: &'static str, key: &str, bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failure::Store(StoreError::Corrupt {
            what,
            key: key.to_owned(),
            reason: e.to_string(),
        })
    })
}

fn host_key(rollout_id: &str, agent_id: &str) -> String {
    format!("{rollout_id}\0{agent_id}")
}

fn delivery_key(app: &str, agent_id: &str) -> String {
    format!("{app}\0{agent_id}")
}

/// The records of `table` whose keys start with `prefix`, decoded.
fn scan<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<'_, &str, &[u8]>,
    what: &'static str,
    prefix: &str,
) -> Result<Vec<T>, Failure> {
    let tx = db.begin_read()?;
    let t = tx.open_table(table)?;
    let mut out = Vec::new();
    for item in t.range(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(decode(what, k.value(), v.value())?);
    }
    Ok(out)
}

fn get<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<'_, &str, &[u8]>,
    what: &'static str,
    key: &str,
) -> Result<Option<T>, Failure> {
    let tx = db.begin_read()?;
    read(&tx.open_table(table)?, what, key)
}

/// The record at `key` of an open table, decoded.
fn read<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    what: &'static str,
    key: &str,
) -> Result<Option<T>, Failure> {
    match t.get(key)? {
        Some(v) => Ok(Some(decode(what, key, v.value())?)),
        None => Ok(None),
    }
}

/// Writes `value` at `key` of `table` in a transaction of its own.
fn put<T: Serialize>(
    db: &Database,
    table: TableDefinition<'_, &str, &[u8]>,
    what: &'static str,
    key: &str,
    value: &T,
) -> Result<(), Failure> {
    let bytes = encode(what, key, value)?;
    let tx = db.begin_write()?;
    tx.open_table(table)?.insert(key, bytes.as_slice())?;
    tx.commit()?;
    Ok(())
}

/// Reads the lease of `rollout_id`, writes what `change` makes of it (when it makes one) and
/// returns that, in one write transaction.
fn change_lease(
    db: &Database,
    rollout_id: &str,
    change: impl FnOnce(Option<&Lease>) -> Option<Lease>,
) -> Result<Option<Lease>, Failure> {
    let tx = db.begin_write()?;
    let changed = {
        let mut t = tx.open_table(LEASES)?;
        let current: Option<Lease> = read(&t, "lease", rollout_id)?;
        let changed = change(current.as_ref());
        if let Some(l) = &changed {
            let bytes = encode("lease", rollout_id, l)?;
            t.insert(rollout_id, bytes.as_slice())?;
        }
        changed
    };
    tx.commit()?;
    Ok(changed)
}

/// Inside a write transaction: fails with [`StoreError::Fenced`] unless `epoch` is the
/// rollout's current lease epoch.
fn check_epoch(tx: &WriteTransaction, rollout_id: &str, epoch: u64) -> Result<(), Failure> {
    let current: Option<Lease> = read(&tx.open_table(LEASES)?, "lease", rollout_id)?;
    let current = current.map_or(0, |l| l.epoch);
    if current == epoch {
        Ok(())
    } else {
        Err(Failure::Store(StoreError::Fenced {
            rollout_id: rollout_id.to_owned(),
            epoch,
            current,
        }))
    }
}

/// Writes a rollout in one transaction: without `epoch` a new one ([`StoreError::Exists`] when
/// it is there already); with it, fenced by that epoch, over the one there
/// ([`StoreError::NotFound`] when there is none).
fn write_rollout(
    db: &Database,
    rollout: &RolloutRecord,
    epoch: Option<u64>,
) -> Result<(), Failure> {
    let bytes = encode("rollout", &rollout.id, rollout)?;
    let tx = db.begin_write()?;
    if let Some(epoch) = epoch {
        check_epoch(&tx, &rollout.id, epoch)?;
    }
    {
        let mut t = tx.open_table(ROLLOUTS)?;
        let there = t.get(rollout.id.as_str())?.is_some();
        match (epoch, there) {
            (None, true) => return Err(Failure::Store(StoreError::Exists(rollout.id.clone()))),
            (Some(_), false) => {
                return Err(Failure::Store(StoreError::NotFound(rollout.id.clone())));
            }
            (None, false) | (Some(_), true) => {}
        }
        t.insert(rollout.id.as_str(), bytes.as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

impl Store for EmbeddedStore {
    async fn put_agent(&self, agent: AgentRecord) -> Result<(), StoreError> {
        self.run(move |db| put(db, AGENTS, "agent", &agent.id, &agent))
            .await
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.run(|db| scan(db, AGENTS, "agent", "")).await
    }

    async fn create_rollout(&self, rollout: RolloutRecord) -> Result<(), StoreError> {
        self.run(move |db| write_rollout(db, &rollout, None)).await
    }

    async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |db| get(db, ROLLOUTS, "rollout", &id)).await
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let mut all: Vec<RolloutRecord> = self.run(|db| scan(db, ROLLOUTS, "rollout", "")).await?;
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }

    async fn update_rollout(&self, rollout: RolloutRecord, epoch: u64) -> Result<(), StoreError> {
        self.run(move |db| write_rollout(db, &rollout, Some(epoch)))
            .await
    }

    async fn put_host(&self, host: HostRecord, epoch: u64) -> Result<(), StoreError> {
        self.run(move |db| {
            let key = host_key(&host.rollout_id, &host.agent_id);
            let bytes = encode("host", &key, &host)?;
            let tx = db.begin_write()?;
            check_epoch(&tx, &host.rollout_id, epoch)?;
            tx.open_table(HOSTS)?
                .insert(key.as_str(), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn hosts(&self, rollout_id: &str) -> Result<Vec<HostRecord>, StoreError> {
        let prefix = host_key(rollout_id, "");
        let mut all: Vec<HostRecord> = self.run(move |db| scan(db, HOSTS, "host", &prefix)).await?;
        all.sort_by(|a, b| (a.ring, &a.agent_id).cmp(&(b.ring, &b.agent_id)));
        Ok(all)
    }

    async fn acquire_lease(
        &self,
        rollout_id: &str,
        holder: &str,
        now_ms: i64,
        period_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let (rollout_id, holder) = (rollout_id.to_owned(), holder.to_owned());
        self.run(move |db| {
            change_lease(db, &rollout_id, |current| {
                take_lease(current, &rollout_id, &holder, now_ms, period_ms)
            })
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
        let (rollout_id, holder) = (rollout_id.to_owned(), holder.to_owned());
        self.run(move |db| {
            change_lease(db, &rollout_id, |current| {
                extend_lease(current, &holder, epoch, now_ms, period_ms)
            })
        })
        .await
    }

    async fn lease(&self, rollout_id: &str) -> Result<Option<Lease>, StoreError> {
        let id = rollout_id.to_owned();
        self.run(move |db| get(db, LEASES, "lease", &id)).await
    }

    async fn witness_checkpoint(&self, checkpoint: CheckpointRecord) -> Result<bool, StoreError> {
        self.run(move |db| {
            let key = checkpoint.agent_id.clone();
            let tx = db.begin_write()?;
            let kept = {
                let mut t = tx.open_table(CHECKPOINTS)?;
                let current: Option<CheckpointRecord> = read(&t, "checkpoint", &key)?;
                let newer = current.is_none_or(|c| checkpoint.seq > c.seq);
                if newer {
                    let bytes = encode("checkpoint", &key, &checkpoint)?;
                    t.insert(key.as_str(), bytes.as_slice())?;
                }
                newer
            };
            tx.commit()?;
            Ok(kept)
        })
        .await
    }

    async fn checkpoint(&self, agent_id: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        let id = agent_id.to_owned();
        self.run(move |db| get(db, CHECKPOINTS, "checkpoint", &id))
            .await
    }

    async fn set_control(&self, request: ControlRequest) -> Result<(), StoreError> {
        self.run(move |db| put(db, CONTROLS, "control", &request.rollout_id, &request))
            .await
    }

    async fn control(&self, rollout_id: &str) -> Result<Option<ControlRequest>, StoreError> {
        let id = rollout_id.to_owned();
        self.run(move |db| get(db, CONTROLS, "control", &id)).await
    }

    async fn clear_control(&self, request: &ControlRequest) -> Result<(), StoreError> {
        let request = request.clone();
        self.run(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(CONTROLS)?;
                let current: Option<ControlRequest> = read(&t, "control", &request.rollout_id)?;
                if current.as_ref() == Some(&request) {
                    t.remove(request.rollout_id.as_str())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn publish_flags(&self, set: FlagSetRecord) -> Result<Published, StoreError> {
        self.run(move |db| {
            let bytes = encode("flag set", &set.app, &set)?;
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(FLAG_SETS)?;
                let current: Option<FlagSetRecord> = read(&t, "flag set", &set.app)?;
                if !judge_publication(current.as_ref(), &set).map_err(Failure::Store)? {
                    return Ok(Published::Same);
                }
                t.insert(set.app.as_str(), bytes.as_slice())?;
            }
            tx.commit()?;
            Ok(Published::New)
        })
        .await
    }

    async fn flag_set(&self, app: &str) -> Result<Option<FlagSetRecord>, StoreError> {
        let app = app.to_owned();
        self.run(move |db| get(db, FLAG_SETS, "flag set", &app))
            .await
    }

    async fn flag_sets(&self) -> Result<Vec<FlagSetRecord>, StoreError> {
        self.run(|db| scan(db, FLAG_SETS, "flag set", "")).await
    }

    async fn put_delivery(&self, delivery: FlagDeliveryRecord) -> Result<(), StoreError> {
        self.run(move |db| {
            let key = delivery_key(&delivery.app, &delivery.agent_id);
            put(db, DELIVERIES, "flag delivery", &key, &delivery)
        })
        .await
    }

    async fn deliveries(&self, app: &str) -> Result<Vec<FlagDeliveryRecord>, StoreError> {
        let prefix = delivery_key(app, "");
        self.run(move |db| scan(db, DELIVERIES, "flag delivery", &prefix))
            .await
    }
}
