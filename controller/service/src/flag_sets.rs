//! Flag sets across the fleet (docs/flags.md "Across the fleet"): an operator hands the service
//! a signed flag set; the service keeps the newest version per app in its store and pushes it
//! to every agent of the inventory the document targets (by id, or by all of its labels as the
//! agents report them), records each agent's answer, and tries again, every retry period,
//! each agent it could not reach and each agent that joins the targets later.
//!
//! The service holds no flag key and checks only the document's form: each agent admits the
//! set under its own policy (signatures, roles, quorum, version, window), and a refusal is
//! recorded as the agent gave it and not tried again. A document past its `expires_at` is not
//! pushed any more: the agents still unreached are recorded `expired`.

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_proto::v1::{FlagDelivery, FlagSet, FleetFlags, SignedFlags};
use prost::Message;
use serde_json::Value;

use crate::agents::{FlagPush, PushOutcome};
use crate::audit::{AuditError, AuditLog};
use crate::store::{
    AgentRecord, DeliveryState, FlagDeliveryRecord, FlagSetRecord, Published, Store, StoreError,
};

/// Why a flag set cannot be distributed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlagSetError {
    /// The bytes are not a signed flag set.
    #[error("not a signed flag set: {0}")]
    Decode(String),
    /// A field of the document is missing or wrong.
    #[error("flag set {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The flag definition is not one an agent would admit.
    #[error("flag definition of app {app}: {reason}")]
    Definition {
        /// The app.
        app: String,
        /// What is wrong.
        reason: String,
    },
    /// Nobody signed it.
    #[error("flag set of app {0} carries no signature")]
    Unsigned(String),
    /// Its validity ended already.
    #[error("flag set of app {app} version {version} expired at {expires_at} (Unix seconds)")]
    Expired {
        /// The app.
        app: String,
        /// The version.
        version: u64,
        /// When it expired.
        expires_at: i64,
    },
    /// The service distributes no flag set for the app.
    #[error("the service distributes no flag set for app {0}")]
    NoSuchApp(String),
    /// The store failed, or the version is not above the one kept.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The service's audit log cannot record it.
    #[error("the service cannot record it: {0}")]
    Audit(#[from] AuditError),
}

/// Checks a signed flag set's form at `now_s` (Unix seconds): it decodes, names an app, a
/// version and targets, its definition parses, it carries a signature and has not expired.
///
/// # Errors
/// [`FlagSetError`] naming what is wrong.
pub fn check(signed: &SignedFlags, now_s: i64) -> Result<FlagSet, FlagSetError> {
    let doc = FlagSet::decode(signed.flags.as_slice())
        .map_err(|e| FlagSetError::Decode(e.to_string()))?;
    let invalid = |field, reason: &str| FlagSetError::Invalid {
        field,
        reason: reason.to_owned(),
    };
    if doc.app.is_empty() {
        return Err(invalid("app", "is empty"));
    }
    if doc.version == 0 {
        return Err(invalid("version", "is 0 (versions start at 1)"));
    }
    if doc.agent_ids.is_empty() && doc.labels.is_empty() {
        return Err(invalid(
            "targets",
            "names no agent id and no label: it would reach no agent",
        ));
    }
    let set = gantry_flags::FlagSet::parse(&doc.definition_json).map_err(|e| {
        FlagSetError::Definition {
            app: doc.app.clone(),
            reason: e.to_string(),
        }
    })?;
    if let Some((flag, e)) = set.problems().first() {
        return Err(FlagSetError::Definition {
            app: doc.app.clone(),
            reason: format!("targeting of flag {flag:?}: {e}"),
        });
    }
    if signed.signatures.is_empty() {
        return Err(FlagSetError::Unsigned(doc.app));
    }
    if doc.expires_at <= now_s {
        return Err(FlagSetError::Expired {
            app: doc.app,
            version: doc.version,
            expires_at: doc.expires_at,
        });
    }
    Ok(doc)
}

/// The agents of `inventory` that `doc` targets, as the agents judge it themselves: listed by
/// id, or carrying every one of its labels.
pub fn targets<'a>(doc: &FlagSet, inventory: &'a [AgentRecord]) -> Vec<&'a AgentRecord> {
    inventory
        .iter()
        .filter(|a| {
            doc.agent_ids.contains(&a.id)
                || (!doc.labels.is_empty()
                    && doc.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
        })
        .collect()
}

/// Lowercase hex SHA-256 of a document's bytes.
fn digest(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The kept record's signed document and its decoded flag set.
fn open(record: &FlagSetRecord) -> Result<(SignedFlags, FlagSet), FlagSetError> {
    let corrupt = |reason: String| {
        FlagSetError::Store(StoreError::Corrupt {
            what: "flag set",
            key: record.app.clone(),
            reason,
        })
    };
    let bytes = hex::decode(&record.signed_hex).map_err(|e| corrupt(e.to_string()))?;
    let signed = SignedFlags::decode(bytes.as_slice()).map_err(|e| corrupt(e.to_string()))?;
    let doc = FlagSet::decode(signed.flags.as_slice()).map_err(|e| corrupt(e.to_string()))?;
    Ok((signed, doc))
}

/// What publishing and delivering need: the store, the agents, the audit log.
pub struct Distributor<S, P> {
    store: Arc<S>,
    pusher: Arc<P>,
    audit: Arc<AuditLog>,
}

impl<S, P> Clone for Distributor<S, P> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            pusher: Arc::clone(&self.pusher),
            audit: Arc::clone(&self.audit),
        }
    }
}

impl<S: Store, P: FlagPush> Distributor<S, P> {
    /// A distributor over the service's store, agents and audit log.
    pub fn new(store: Arc<S>, pusher: Arc<P>, audit: Arc<AuditLog>) -> Self {
        Self {
            store,
            pusher,
            audit,
        }
    }

    /// Takes a signed flag set handed in by operator `by` at `now_ms`: checks it, records
    /// `flags.published` and keeps it, then pushes it to the agents it targets and returns
    /// where each stands. Handing in the same document again pushes nothing new. A document
    /// refused here is recorded as `flags.refused`.
    ///
    /// # Errors
    /// [`FlagSetError`]: the form, a version not above the kept one, the store, the log.
    pub async fn publish(
        &self,
        signed: SignedFlags,
        by: &str,
        now_ms: i64,
    ) -> Result<FleetFlags, FlagSetError> {
        let doc = match check(&signed, now_ms.div_euclid(1000)) {
            Ok(doc) => doc,
            Err(e) => return Err(self.refused(&signed, by, e)),
        };
        let record = FlagSetRecord {
            app: doc.app.clone(),
            version: doc.version,
            signed_hex: hex::encode(signed.encode_to_vec()),
            digest: digest(&signed.flags),
            published_ms: now_ms,
            published_by: by.to_owned(),
        };
        let kept = self.store.flag_set(&doc.app).await?;
        match crate::store::judge_publication(kept.as_ref(), &record) {
            Ok(true) => {}
            // The same document again: nothing new to record or push.
            Ok(false) => return self.status(&doc.app).await,
            Err(e) => return Err(self.refused(&signed, by, e.into())),
        }
        // Other signatures over the kept document: the agents that refused it may admit it now.
        let resigned = kept.is_some_and(|k| k.version == record.version);
        let inventory = self.store.agents().await?;
        let aimed: Vec<Value> = targets(&doc, &inventory)
            .iter()
            .map(|a| a.id.clone().into())
            .collect();
        // Recorded before it is kept: a publication the log cannot hold is refused.
        self.audit.append(
            "flags.published",
            &[
                ("app", doc.app.clone().into()),
                ("version", doc.version.into()),
                ("digest", record.digest.clone().into()),
                ("by", by.into()),
                ("agent_ids", doc.agent_ids.clone().into()),
                (
                    "labels",
                    doc.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                ),
                ("targets", aimed.into()),
                ("reason", doc.reason.clone().into()),
            ],
        )?;
        let published = match self.store.publish_flags(record.clone()).await {
            Ok(p) => p,
            Err(e) => return Err(self.refused(&signed, by, e.into())),
        };
        if published == Published::New {
            self.deliver(&record, now_ms, resigned).await?;
        }
        self.status(&doc.app).await
    }

    /// Records a refused publication and hands the error back.
    fn refused(&self, signed: &SignedFlags, by: &str, e: FlagSetError) -> FlagSetError {
        let doc = FlagSet::decode(signed.flags.as_slice()).unwrap_or_default();
        let written = self.audit.append(
            "flags.refused",
            &[
                ("app", doc.app.into()),
                ("version", doc.version.into()),
                ("by", by.into()),
                ("reason", e.to_string().into()),
            ],
        );
        match written {
            Ok(_) => e,
            Err(audit) => FlagSetError::Audit(audit),
        }
    }

    /// Pushes `record` to each agent it targets that does not hold this version yet and was
    /// not refused it (with `retry_refused`, also those that refused it), concurrently, and
    /// records each answer (an audit entry when the state changes). Returns how many agents
    /// were tried.
    ///
    /// # Errors
    /// [`FlagSetError`]: the store or the log failed.
    pub async fn deliver(
        &self,
        record: &FlagSetRecord,
        now_ms: i64,
        retry_refused: bool,
    ) -> Result<usize, FlagSetError> {
        let (signed, doc) = open(record)?;
        let inventory = self.store.agents().await?;
        let kept = deliveries_by_agent(self.store.as_ref(), &record.app).await?;
        let expired = doc.expires_at <= now_ms.div_euclid(1000);
        let mut tries = tokio::task::JoinSet::new();
        let mut tried = 0;
        for agent in targets(&doc, &inventory) {
            let before = kept.get(&agent.id).cloned();
            let due = before.as_ref().is_none_or(|d| {
                d.version < record.version
                    || d.state == DeliveryState::Pending
                    || (retry_refused && d.state == DeliveryState::Refused)
            });
            if !due {
                continue;
            }
            tried += 1;
            if expired {
                let detail = format!(
                    "the document expired at {} (Unix seconds) before the agent could be reached; sign a new version",
                    doc.expires_at
                );
                let d = delivery(
                    record,
                    before.as_ref(),
                    &agent.id,
                    DeliveryState::Expired,
                    detail,
                    now_ms,
                    0,
                );
                self.record(before.as_ref(), d).await?;
                continue;
            }
            let pusher = Arc::clone(&self.pusher);
            let agent = agent.clone();
            let signed = signed.clone();
            tries.spawn(async move {
                let outcome = pusher.push_flags(&agent, signed).await;
                (agent.id, outcome)
            });
        }
        while let Some(joined) = tries.join_next().await {
            let (agent_id, outcome) = match joined {
                Ok(answer) => answer,
                // Nothing recorded: the agent stays due and is tried at the next pass.
                Err(e) => {
                    tracing::warn!(app = %record.app, error = %e, "a flag push task failed");
                    continue;
                }
            };
            let before = kept.get(&agent_id);
            let (state, detail) = match outcome {
                PushOutcome::Applied { unchanged: false } => {
                    (DeliveryState::Applied, String::new())
                }
                PushOutcome::Applied { unchanged: true } => (
                    DeliveryState::Applied,
                    "it was in force there already".to_owned(),
                ),
                PushOutcome::Refused(why) => (DeliveryState::Refused, why),
                PushOutcome::Unreachable(why) => (DeliveryState::Pending, why),
            };
            let d = delivery(record, before, &agent_id, state, detail, now_ms, 1);
            self.record(before, d).await?;
        }
        Ok(tried)
    }

    /// Keeps a delivery; the audit log hears of it when its state or version changed.
    async fn record(
        &self,
        before: Option<&FlagDeliveryRecord>,
        d: FlagDeliveryRecord,
    ) -> Result<(), FlagSetError> {
        let changed = before.is_none_or(|b| b.version != d.version || b.state != d.state);
        if changed {
            self.audit.append(
                "flags.delivered",
                &[
                    ("app", d.app.clone().into()),
                    ("version", d.version.into()),
                    ("agent_id", d.agent_id.clone().into()),
                    ("state", d.state.as_str().into()),
                    ("detail", d.detail.clone().into()),
                ],
            )?;
        }
        self.store.put_delivery(d).await?;
        Ok(())
    }

    /// One pass over every app's flag set: delivers each to the agents still due.
    pub async fn sync_once(&self, now_ms: i64) {
        let sets = match self.store.flag_sets().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list flag sets");
                return;
            }
        };
        for set in sets {
            match self.deliver(&set, now_ms, false).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(app = %set.app, version = set.version, agents = n, "flag set delivered")
                }
                Err(e) => {
                    tracing::warn!(app = %set.app, error = %e, "cannot deliver flag set");
                }
            }
        }
    }

    /// Runs [`Self::sync_once`] every `every`, forever.
    pub async fn run(self, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.sync_once(gantry_client::clock::now_ms()).await;
        }
    }

    /// The flag set kept for `app` and where each targeted agent stands ([`status`]).
    ///
    /// # Errors
    /// [`FlagSetError::NoSuchApp`], or the store failed.
    pub async fn status(&self, app: &str) -> Result<FleetFlags, FlagSetError> {
        status(self.store.as_ref(), app).await
    }
}

/// The flag set `store` keeps for `app` and where each agent it targets now stands.
///
/// # Errors
/// [`FlagSetError::NoSuchApp`], or the store failed.
pub async fn status<S: Store>(store: &S, app: &str) -> Result<FleetFlags, FlagSetError> {
    let record = store
        .flag_set(app)
        .await?
        .ok_or_else(|| FlagSetError::NoSuchApp(app.to_owned()))?;
    let (signed, doc) = open(&record)?;
    let inventory = store.agents().await?;
    let kept = deliveries_by_agent(store, app).await?;
    let deliveries = targets(&doc, &inventory)
        .into_iter()
        .map(|a| delivery_of(&record, &a.id, kept.get(&a.id)))
        .collect();
    Ok(FleetFlags {
        app: record.app.clone(),
        version: record.version,
        signed: Some(signed),
        digest: record.digest.clone(),
        published_ms: record.published_ms,
        published_by: record.published_by.clone(),
        deliveries,
    })
}

/// The deliveries of `app`'s flag set, by agent id.
async fn deliveries_by_agent<S: Store>(
    store: &S,
    app: &str,
) -> Result<BTreeMap<String, FlagDeliveryRecord>, StoreError> {
    Ok(store
        .deliveries(app)
        .await?
        .into_iter()
        .map(|d| (d.agent_id.clone(), d))
        .collect())
}

/// One agent's delivery of `record` reaching `state` at `at_ms`, after `tried` more attempts
/// than `before` counted at this version.
fn delivery(
    record: &FlagSetRecord,
    before: Option<&FlagDeliveryRecord>,
    agent_id: &str,
    state: DeliveryState,
    detail: String,
    at_ms: i64,
    tried: u32,
) -> FlagDeliveryRecord {
    let attempts = before
        .filter(|d| d.version == record.version)
        .map_or(0, |d| d.attempts)
        .saturating_add(tried);
    FlagDeliveryRecord {
        app: record.app.clone(),
        agent_id: agent_id.to_owned(),
        version: record.version,
        state,
        detail,
        at_ms,
        attempts,
    }
}

/// [`status`] of every app the store keeps a flag set for, by app.
///
/// # Errors
/// The store failed.
pub async fn every_status<S: Store>(store: &S) -> Result<Vec<FleetFlags>, FlagSetError> {
    let mut out = Vec::new();
    for set in store.flag_sets().await? {
        out.push(status(store, &set.app).await?);
    }
    Ok(out)
}

/// One targeted agent's delivery on the wire: an older version's state reads as pending for
/// the set kept now.
fn delivery_of(
    record: &FlagSetRecord,
    agent_id: &str,
    kept: Option<&FlagDeliveryRecord>,
) -> FlagDelivery {
    match kept {
        Some(d) if d.version == record.version => FlagDelivery {
            agent_id: agent_id.to_owned(),
            state: d.state.as_str().to_owned(),
            version: d.version,
            detail: d.detail.clone(),
            at_ms: d.at_ms,
            attempts: d.attempts,
        },
        Some(d) => FlagDelivery {
            agent_id: agent_id.to_owned(),
            state: DeliveryState::Pending.as_str().to_owned(),
            version: record.version,
            detail: format!(
                "not delivered yet (version {} was {} there)",
                d.version,
                d.state.as_str()
            ),
            at_ms: record.published_ms,
            attempts: 0,
        },
        None => FlagDelivery {
            agent_id: agent_id.to_owned(),
            state: DeliveryState::Pending.as_str().to_owned(),
            version: record.version,
            detail: "not delivered yet".to_owned(),
            at_ms: record.published_ms,
            attempts: 0,
        },
    }
}

#[cfg(test)]
#[path = "flag_sets_tests.rs"]
mod tests;
