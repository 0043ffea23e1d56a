//! Feature flags: signed flag sets admitted per app ([`admit`]), persisted ([`store`]) and
//! served to the app's instances over OFREP ([`ofrep`]).
//!
//! [`Flags`] is the use case the gRPC service calls: [`Flags::push`] runs admission under the
//! app's lock, records `flags.changed` in the audit log, writes the set durably and only then
//! puts it in force for the OFREP endpoint (a `watch` channel per app, so every open
//! connection sees the new set at its next request, and every event stream ([`events`])
//! sends an event at once). A refusal is recorded by the caller as
//! `flags.rejected` with its reason code (`server::status::flags_reason`), or counted into a
//! `flags.rejected.summary` beyond 50 a second (`server::flood`).

pub mod admit;
pub mod events;
pub mod ofrep;
pub mod split;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gantry_flags::{DefinitionError, FlagSet};
use gantry_policy::admission::{AdmissionError, SignatureIn};
use gantry_policy::config::{Config, FlagsPolicy};
use gantry_policy::job::AppName;
use gantry_proto::v1;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::audit::{AuditError, AuditLog, Entry};
use store::{Age, InForce, Seen, Split, StoreError};

/// Why a flag set was refused. Each variant is one rule; the reason codes and gRPC codes in
/// `server::status` match them exhaustively.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// The signed bytes exceed the limit.
    #[error("flag set is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The signatures do not count (the job rules: unknown, bad, invalid keys).
    #[error(transparent)]
    Signature(AdmissionError),
    /// The signed bytes are not a `gantry.v1.FlagSet`.
    #[error("flag set is not a valid gantry.v1.FlagSet: {detail}")]
    Malformed {
        /// prost's description.
        detail: String,
    },
    /// A field is invalid.
    #[error("invalid flag set: {field} {problem}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The app is not configured here.
    #[error("app {app:?} is not configured on this agent")]
    AppNotConfigured {
        /// The app.
        app: String,
    },
    /// The app has no `[apps.NAME.flags]`.
    #[error("app {app} serves no flags on this agent (no [apps.{app}.flags] in its config)")]
    FlagsNotEnabled {
        /// The app.
        app: String,
    },
    /// The set names other agents.
    #[error("flag set is for {}, not for agent {agent_id:?}", list(targets))]
    WrongAgent {
        /// This agent.
        agent_id: String,
        /// The agent ids and labels the set names.
        targets: Vec<String>,
    },
    /// `issued_at` is in the future.
    #[error("flag set is not valid before {issued_at} (now {now})")]
    NotYetValid {
        /// The set's `issued_at`.
        issued_at: i64,
        /// The agent's time.
        now: i64,
    },
    /// `expires_at` has passed.
    #[error("flag set expired at {expires_at} (now {now})")]
    Expired {
        /// The set's `expires_at`.
        expires_at: i64,
        /// The agent's time.
        now: i64,
    },
    /// The window is longer than `limits.max_validity`.
    #[error("flag set is valid for {window_secs}s, more than the maximum of {max_secs}s")]
    WindowTooLong {
        /// `expires_at - issued_at`.
        window_secs: i64,
        /// The limit.
        max_secs: u64,
    },
    /// These exact bytes were admitted before and replaced since.
    #[error(
        "flag set version {version} was admitted before and replaced (version {current} is in force)"
    )]
    Replayed {
        /// The replayed version.
        version: u64,
        /// The version in force.
        current: u64,
    },
    /// The version is not above the highest admitted (the one in force, unless a rollback
    /// restored an older set).
    #[error(
        "flag set version {version} is not above version {current}, the highest this agent admitted"
    )]
    OlderVersion {
        /// The version received.
        version: u64,
        /// The highest version admitted.
        current: u64,
    },
    /// The JSON is not a flag definition flagd would load.
    #[error("invalid flag definition: {0}")]
    Definition(DefinitionError),
    /// A targeting rule does not compile.
    #[error("invalid flag definition: targeting of flag {flag:?}: {problem}")]
    Targeting {
        /// The flag.
        flag: String,
        /// Why.
        problem: String,
    },
    /// Only a kill-switch role signed, and the change does more than switch flags off.
    #[error("a kill-switch key may only switch flags of {app} off, but this set {why}")]
    KillSwitchOnly {
        /// The app.
        app: String,
        /// What the change does beyond that.
        why: String,
    },
    /// Fewer distinct keys with an `allow` role signed than `[apps.NAME.flags] approvals`.
    #[error(
        "changing the flags of {app} needs {needed} signature(s) by distinct keys with a flags \
         role, has {got} ({})",
        list(signers)
    )]
    QuorumNotMet {
        /// The app.
        app: String,
        /// Signatures required.
        needed: u32,
        /// Valid signatures by keys with an `allow` role.
        got: u32,
        /// Those keys' names.
        signers: Vec<String>,
    },
    /// No signer holds a flags role of the app.
    #[error(
        "changing the flags of {app} needs a signature by a key with role {} (signers hold: {})",
        list(needed),
        list(signer_roles)
    )]
    MissingRole {
        /// The app.
        app: String,
        /// Roles that may change (or switch off) its flags.
        needed: Vec<String>,
        /// Roles the valid signers hold.
        signer_roles: Vec<String>,
    },
    /// A rollback asked for the flag set of a release no set is recorded for.
    #[error(
        "no flag set of app {app} is recorded for release {release} (a set is recorded when a deploy replaces the release it went with)"
    )]
    NoSetForRelease {
        /// The app.
        app: String,
        /// The release.
        release: String,
    },
    /// The recorded set's signed bytes are no longer kept.
    #[error("flag set version {version} of app {app} is no longer kept on this agent")]
    NotKept {
        /// The app.
        app: String,
        /// The set's version.
        version: u64,
    },
    /// A canary names a flag of an app that has no flag set in force.
    #[error("app {app} has no flag set in force")]
    NoFlagSet {
        /// The app.
        app: String,
    },
    /// A canary names a flag the set in force does not have.
    #[error("flag set version {version} of app {app} has no flag {flag:?}")]
    UnknownFlag {
        /// The app.
        app: String,
        /// The set's version.
        version: u64,
        /// The flag.
        flag: String,
    },
    /// The flag does not allow a canary to split it.
    #[error("flag {flag:?} of app {app} cannot be split by a canary: {why}")]
    CannotSplit {
        /// The app.
        app: String,
        /// The flag.
        flag: String,
        /// Why.
        why: gantry_flags::SplitError,
    },
    /// The set could not be stored (it is not in force).
    #[error("cannot store the flag set")]
    Store(#[source] StoreError),
    /// The audit log refused the `flags.changed` entry (the set is not in force).
    #[error("cannot record the flag change")]
    Audit(#[source] AuditError),
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// The set an app's OFREP endpoint serves.
#[derive(Debug)]
pub struct Served {
    /// Its version.
    pub version: u64,
    /// SHA-256 of its signed bytes, hex, or with canary splits applied, of those and the
    /// splits (the event stream's ETag is taken from it).
    pub digest: String,
    /// The flags.
    pub set: FlagSet,
}

/// Where an app's OFREP endpoint reads the set in force (`None` until the app has one).
pub type Feed = watch::Receiver<Option<Arc<Served>>>;

/// One app's flags.
#[derive(Debug)]
struct AppFlags {
    policy: FlagsPolicy,
    in_force: Option<InForce>,
    /// The canary splits applied now: those kept in the set in force, and the running
    /// canary's ([`split`]).
    splits: BTreeMap<String, Split>,
    tx: watch::Sender<Option<Arc<Served>>>,
}

/// What [`Flags::push`] did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The receipt for the caller.
    pub receipt: v1::FlagsReceipt,
}

/// The agent's flag sets, one per app with `[apps.NAME.flags]`.
#[derive(Debug, Clone)]
pub struct Flags {
    config: Arc<Config>,
    labels: Arc<BTreeMap<String, String>>,
    audit: AuditLog,
    apps: Arc<Mutex<BTreeMap<AppName, AppFlags>>>,
}

impl Flags {
    /// Loads the set in force of every app with flags from `<data_dir>/flags/`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when a stored set cannot be read.
    pub fn open(config: Arc<Config>, audit: AuditLog) -> Result<Flags, StoreError> {
        let mut apps = BTreeMap::new();
        for (name, app) in &config.policy.apps {
            let Some(policy) = &app.flags else { continue };
            let in_force = store::load(&config.data_dir, name)?;
            let splits = in_force
                .as_ref()
                .map(|f| f.splits.clone())
                .unwrap_or_default();
            let served = in_force
                .as_ref()
                .map(|f| Arc::new(split::served(f, &splits)));
            let (tx, _) = watch::channel(served);
            apps.insert(
                name.clone(),
                AppFlags {
                    policy: policy.clone(),
                    in_force,
                    splits,
                    tx,
                },
            );
        }
        Ok(Flags {
            config: Arc::clone(&config),
            labels: Arc::new(config.placement.labels.clone()),
            audit,
            apps: Arc::new(Mutex::new(apps)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AppName, AppFlags>> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The apps with flags, their OFREP address and the channel their endpoint serves from.
    pub fn endpoints(&self) -> Vec<(AppName, FlagsPolicy, Feed)> {
        self.lock()
            .iter()
            .map(|(n, a)| (n.clone(), a.policy.clone(), a.tx.subscribe()))
            .collect()
    }

    /// The set in force for `app` with the app's flags policy; `None` when the app has no
    /// flags section.
    pub fn in_force(&self, app: &AppName) -> Option<(FlagsPolicy, Option<InForce>)> {
        self.lock()
            .get(app)
            .map(|a| (a.policy.clone(), a.in_force.clone()))
    }

    /// Admits a signed flag set and puts it in force (see the module docs).
    ///
    /// # Errors
    ///
    /// [`FlagsError`] for a refusal, or when the change cannot be recorded or stored (then
    /// the set in force is unchanged).
    pub async fn push(
        &self,
        bytes: &[u8],
        sigs: &[SignatureIn],
        now: i64,
        peer_fingerprint: &str,
    ) -> Result<Pushed, FlagsError> {
        let host = admit::Host {
            policy: &self.config.policy,
            limits: &self.config.limits,
            agent_id: &self.config.agent_id,
            labels: &self.labels,
        };
        let snapshot = |app: &AppName| self.lock().get(app).and_then(|a| a.in_force.clone());
        let verdict = admit::admit(host, bytes, sigs, now, snapshot)?;
        let admitted = match verdict {
            admit::Verdict::Unchanged => {
                let (app, version) = admit::claimed_app(bytes).unwrap_or_default();
                let signers = AppName::new(&app)
                    .ok()
                    .and_then(|a| self.lock().get(&a).and_then(|f| f.in_force.clone()))
                    .map(|f| f.signers)
                    .unwrap_or_default();
                return Ok(Pushed {
                    receipt: v1::FlagsReceipt {
                        app,
                        version,
                        signers,
                        unchanged: true,
                        ..Default::default()
                    },
                });
            }
            admit::Verdict::New(a) => a,
        };
        let previous = snapshot(&admitted.app);
        let kept = previous.as_ref().map_or_else(BTreeMap::new, |p| {
            split::kept_after(p, &admitted.changes.changed, &admitted.changes.removed)
        });
        // Recorded before it takes effect: a change the log cannot hold does not happen.
        self.audit
            .append(
                changed_entry(&admitted, previous.as_ref(), peer_fingerprint).with(
                    "splits_dropped",
                    json!(split::dropped(previous.as_ref(), &kept)),
                ),
            )
            .await
            .map_err(FlagsError::Audit)?;
        let ages = ages_of(&admitted, previous.as_ref(), now);
        let mut history = previous
            .as_ref()
            .map(|p| p.history.clone())
            .unwrap_or_default();
        if let Some(p) = &previous {
            history.push(Seen {
                version: p.version,
                digest: p.digest.clone(),
            });
        }
        let in_force = InForce {
            version: admitted.doc.version,
            digest: admitted.digest.to_string(),
            signed: v1::SignedFlags {
                flags: bytes.to_vec(),
                signatures: sigs
                    .iter()
                    .map(|s| v1::Signature {
                        key_id: s.key_id_hint.clone(),
                        sig: s.sig.clone(),
                    })
                    .collect(),
            },
            set: admitted.set.clone(),
            signers: admitted.signer_names.clone(),
            admitted_at: now,
            ages,
            history,
            floor: previous.as_ref().map_or(0, InForce::floor),
            releases: previous
                .as_ref()
                .map(|p| p.releases.clone())
                .unwrap_or_default(),
            splits: kept,
        };
        let mut apps = self.lock();
        let Some(entry) = apps.get_mut(&admitted.app) else {
            return Err(FlagsError::FlagsNotEnabled {
                app: admitted.app.to_string(),
            });
        };
        // Another push may have won the race since the snapshot: check again under the lock.
        if let Some(cur) = &entry.in_force
            && cur.floor() >= in_force.version
        {
            return Err(FlagsError::OlderVersion {
                version: in_force.version,
                current: cur.floor(),
            });
        }
        // Kept for a rollback that restores it, before it is in force.
        store::archive::put(
            &self.config.data_dir,
            &admitted.app,
            in_force.version,
            &in_force.signed,
        )
        .map_err(FlagsError::Store)?;
        if let Some(p) = &previous {
            split::forget_dropped(entry, p, &in_force.splits);
        }
        self.put_in_force(entry, &admitted.app, in_force)?;
        drop(apps);
        let c = &admitted.changes;
        Ok(Pushed {
            receipt: v1::FlagsReceipt {
                app: admitted.app.to_string(),
                version: admitted.doc.version,
                added: c.added.clone(),
                changed: c.changed.clone(),
                removed: c.removed.clone(),
                signers: admitted.signer_names.clone(),
                unchanged: false,
            },
        })
    }

    /// Where the data of the flag store lives (for status and docs).
    pub fn dir(&self) -> PathBuf {
        store::dir(&self.config.data_dir)
    }

    /// Stores `in_force` durably, then serves it and prunes the archive to the sets still
    /// in use (the one in force, those recorded for a release).
    fn put_in_force(
        &self,
        entry: &mut AppFlags,
        app: &AppName,
        in_force: InForce,
    ) -> Result<(), FlagsError> {
        store::save(&self.config.data_dir, app, &in_force).map_err(FlagsError::Store)?;
        entry
            .tx
            .send_replace(Some(Arc::new(split::served(&in_force, &entry.splits))));
        let keep: std::collections::BTreeSet<u64> = in_force
            .releases
            .values()
            .copied()
            .chain([in_force.version])
            .collect();
        store::archive::prune(&self.config.data_dir, app, &keep);
        entry.in_force = Some(in_force);
        Ok(())
    }

    /// Records that `release` of `app` is being replaced while the set in force is what went
    /// with it, so that a rollback to it may restore that set. Nothing to do for an app without
    /// flags or without a set.
    ///
    /// # Errors
    ///
    /// [`FlagsError::Store`] when the record cannot be written.
    pub fn remember_release(
        &self,
        app: &AppName,
        release: &semver::Version,
    ) -> Result<(), FlagsError> {
        let mut apps = self.lock();
        let Some(entry) = apps.get_mut(app) else {
            return Ok(());
        };
        let Some(mut in_force) = entry.in_force.clone() else {
            return Ok(());
        };
        let key = release.to_string();
        if in_force.releases.get(&key) == Some(&in_force.version) {
            return Ok(());
        }
        // A set admitted by an agent that kept no archive yet: keep it now.
        store::archive::put(
            &self.config.data_dir,
            app,
            in_force.version,
            &in_force.signed,
        )
        .map_err(FlagsError::Store)?;
        in_force.releases.insert(key, in_force.version);
        while in_force.releases.len() > store::RELEASES_KEPT {
            let oldest = in_force
                .releases
                .iter()
                .min_by_key(|(_, v)| **v)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => in_force.releases.remove(&k),
                None => break,
            };
        }
        self.put_in_force(entry, app, in_force)
    }

    /// Finds and re-checks the set recorded for `release` of `app`, before a rollback to that
    /// release starts, so that a set that cannot come back stops the job before anything
    /// changes (see [`admit::readmit`]).
    ///
    /// # Errors
    ///
    /// [`FlagsError::FlagsNotEnabled`], [`FlagsError::NoSetForRelease`],
    /// [`FlagsError::NotKept`], [`FlagsError::Store`], or the refusal of [`admit::readmit`].
    pub fn prepare_restore(
        &self,
        app: &AppName,
        release: &semver::Version,
        now: i64,
    ) -> Result<Restore, FlagsError> {
        let Some((_, in_force)) = self.in_force(app) else {
            return Err(FlagsError::FlagsNotEnabled {
                app: app.to_string(),
            });
        };
        let no_set = || FlagsError::NoSetForRelease {
            app: app.to_string(),
            release: release.to_string(),
        };
        let current = in_force.ok_or_else(no_set)?;
        let version = *current
            .releases
            .get(&release.to_string())
            .ok_or_else(no_set)?;
        if version == current.version {
            return Ok(Restore::InForce { version });
        }
        let signed = store::archive::get(&self.config.data_dir, app, version)
            .map_err(FlagsError::Store)?
            .ok_or_else(|| FlagsError::NotKept {
                app: app.to_string(),
                version,
            })?;
        let host = admit::Host {
            policy: &self.config.policy,
            limits: &self.config.limits,
            agent_id: &self.config.agent_id,
            labels: &self.labels,
        };
        let admitted = admit::readmit(host, &signed, now, Some(&current))?;
        Ok(Restore::Set {
            admitted,
            signed,
            release: release.clone(),
        })
    }

    /// Puts a prepared set back in force for the rollback `job_id`: `flags.restored` in the
    /// audit log first, then the store, then the OFREP endpoint. The highest version admitted
    /// stays the floor for the next push. Returns the version in force.
    ///
    /// # Errors
    ///
    /// [`FlagsError::Audit`] or [`FlagsError::Store`] (the set in force is then unchanged),
    /// or [`FlagsError::OlderVersion`] when a newer set was pushed since it was prepared.
    pub async fn restore(
        &self,
        restore: Restore,
        job_id: &str,
        now: i64,
    ) -> Result<u64, FlagsError> {
        let (admitted, signed, release) = match restore {
            Restore::InForce { version } => return Ok(version),
            Restore::Set {
                admitted,
                signed,
                release,
            } => (admitted, signed, release),
        };
        let app = admitted.app.clone();
        let Some(previous) = self.in_force(&app).and_then(|(_, f)| f) else {
            return Err(FlagsError::FlagsNotEnabled {
                app: app.to_string(),
            });
        };
        let kept = split::kept_after(
            &previous,
            &admitted.changes.changed,
            &admitted.changes.removed,
        );
        self.audit
            .append(restored_entry(&admitted, &previous, &release, job_id).with(
                "splits_dropped",
                json!(split::dropped(Some(&previous), &kept)),
            ))
            .await
            .map_err(FlagsError::Audit)?;
        let mut history = previous.history.clone();
        history.push(Seen {
            version: previous.version,
            digest: previous.digest.clone(),
        });
        let in_force = InForce {
            version: admitted.doc.version,
            digest: admitted.digest.to_string(),
            signed,
            set: admitted.set.clone(),
            signers: admitted.signer_names.clone(),
            admitted_at: now,
            ages: ages_of(&admitted, Some(&previous), now),
            history,
            floor: previous.floor(),
            releases: previous.releases.clone(),
            splits: kept,
        };
        let mut apps = self.lock();
        let Some(entry) = apps.get_mut(&app) else {
            return Err(FlagsError::FlagsNotEnabled {
                app: app.to_string(),
            });
        };
        // A push since the set was prepared wins: the restore is then refused, not applied.
        if entry.in_force.as_ref().map(|f| &f.digest) != Some(&previous.digest) {
            return Err(FlagsError::OlderVersion {
                version: in_force.version,
                current: entry.in_force.as_ref().map_or(0, InForce::floor),
            });
        }
        let version = in_force.version;
        split::forget_dropped(entry, &previous, &in_force.splits);
        self.put_in_force(entry, &app, in_force)?;
        Ok(version)
    }
}

/// A flag set a rollback will put back, found and re-checked by [`Flags::prepare_restore`].
#[derive(Debug)]
pub enum Restore {
    /// The set recorded for the release is the one in force: nothing to do.
    InForce {
        /// Its version.
        version: u64,
    },
    /// A set to put back.
    Set {
        /// It passed [`admit::readmit`].
        admitted: Box<admit::Admitted>,
        /// Its signed bytes, from the archive.
        signed: v1::SignedFlags,
        /// The release it went with.
        release: semver::Version,
    },
}

/// `flags.restored`: the rollback job, the release, the versions, who signed the set, and the
/// flags it adds, changes and removes against the set it replaces.
fn restored_entry(
    a: &admit::Admitted,
    previous: &InForce,
    release: &semver::Version,
    job_id: &str,
) -> Entry {
    Entry::new("flags.restored")
        .with("app", json!(a.app.to_string()))
        .with("job_id", json!(job_id))
        .with("release", json!(release.to_string()))
        .with("version", json!(a.doc.version))
        .with("previous_version", json!(previous.version))
        .with("floor", json!(previous.floor()))
        .with("digest", json!(a.digest.to_string()))
        .with("signers", json!(a.signer_names))
        .with("signer_key_ids", json!(a.signer_ids))
        .with("added", json!(a.changes.added))
        .with("changed", json!(a.changes.changed))
        .with("removed", json!(a.changes.removed))
}

fn ages_of(a: &admit::Admitted, previous: Option<&InForce>, now: i64) -> BTreeMap<String, Age> {
    a.set
        .flags
        .keys()
        .map(|k| {
            let age = previous
                .and_then(|p| p.ages.get(k).cloned())
                .unwrap_or(Age {
                    created_at: now,
                    created_version: a.doc.version,
                });
            (k.clone(), age)
        })
        .collect()
}

/// `flags.changed`: who signed, the versions, and the flags added, changed and removed;
/// for those not marked secret also their state and default variant, never a variant's value.
fn changed_entry(a: &admit::Admitted, previous: Option<&InForce>, peer: &str) -> Entry {
    let summary: serde_json::Map<String, Value> = a
        .changes
        .added
        .iter()
        .chain(&a.changes.changed)
        .filter_map(|k| a.set.flags.get(k).map(|f| (k, f)))
        .map(|(k, f)| {
            let v = if f.is_secret() {
                json!({"secret": true})
            } else {
                json!({
                    "state": match f.state {
                        gantry_flags::State::Enabled => "ENABLED",
                        gantry_flags::State::Disabled => "DISABLED",
                    },
                    "default_variant": f.default_variant,
                    "targeted": !matches!(f.targeting, gantry_flags::Targeting::None),
                })
            };
            (k.clone(), v)
        })
        .collect();
    Entry::new("flags.changed")
        .with("app", json!(a.app.to_string()))
        .with("version", json!(a.doc.version))
        .with("previous_version", json!(previous.map(|p| p.version)))
        .with("digest", json!(a.digest.to_string()))
        .with("signers", json!(a.signer_names))
        .with("signer_key_ids", json!(a.signer_ids))
        .with("kill_switch", json!(a.kill_switch))
        .with("added", json!(a.changes.added))
        .with("changed", json!(a.changes.changed))
        .with("removed", json!(a.changes.removed))
        .with("flags", Value::Object(summary))
        .with("reason", json!(a.doc.reason))
        .with("peer_fingerprint", json!(peer))
}

/// `flags.rejected`: the reason code, its explanation, and what was known of the set.
pub fn rejected_entry(
    reason_code: &str,
    e: &FlagsError,
    bytes: &[u8],
    sigs: &[SignatureIn],
    peer_fingerprint: &str,
) -> Entry {
    let (app, version) = match admit::claimed_app(bytes) {
        Some((a, v)) => (Some(a), Some(v)),
        None => (None, None),
    };
    Entry::new("flags.rejected")
        .with("reason", json!(reason_code))
        .with("detail", json!(crate::error::reason(e)))
        .with("app", json!(app))
        .with("version", json!(version))
        .with(
            "digest",
            json!(gantry_policy::job::Sha256Hex::of(bytes).to_string()),
        )
        .with(
            "claimed_key_ids",
            json!(
                sigs.iter()
                    .map(|s| s.key_id_hint.clone())
                    .collect::<Vec<_>>()
            ),
        )
        .with("peer_fingerprint", json!(peer_fingerprint))
}
