//! The dashboard's JSON: rollouts as `rollout status` shows them (the same
//! [`rollout_status`]), with each host's agent from the inventory beside it; the inventory;
//! and the public fields of the service's audit entries.

use std::collections::HashMap;
use std::sync::Arc;

use gantry_client::signals::signals_json;
use gantry_proto::v1::RolloutStatus;
use serde_json::{Map, Value, json};

use super::super::live_signals;
use super::super::status::rollout_status;
use crate::dial::Dialer;
use crate::store::{AgentRecord, Store, StoreError};

/// Rollouts an answer carries, newest first.
pub const MAX_ROLLOUTS: usize = 20;

/// The fields of a service audit entry the page shows (every field the service writes today
/// is an id, a name, a number or a reason; a field added later stays off the page until it is
/// listed here).
pub const SHOWN_FIELDS: &[&str] = &[
    "seq",
    "ts",
    "event",
    "rollout",
    "ring",
    "name",
    "agent_id",
    "action",
    "job",
    "epoch",
    "reason",
    "by",
    "bake_ms",
    "on_failure",
    "replica",
    "version",
];

fn agent_json(a: &AgentRecord) -> Value {
    json!({
        "id": a.id,
        "addr": a.addr,
        "version": a.version,
        "environment": a.environment,
        "labels": a.labels,
        "reachable": a.reachable,
        "last_seen_ms": a.last_seen_ms,
        "error": a.error,
    })
}

fn status_json(r: &RolloutStatus, agents: &HashMap<&str, &AgentRecord>) -> Value {
    let rings: Vec<Value> = r
        .rings
        .iter()
        .map(|ring| {
            let hosts: Vec<Value> = ring
                .hosts
                .iter()
                .map(|h| {
                    let agent = agents.get(h.agent_id.as_str());
                    json!({
                        "agent_id": h.agent_id,
                        "action": h.action,
                        "step": h.step,
                        "job_id": h.job_id,
                        "reason": h.reason,
                        "updated_ms": h.updated_ms,
                        "reachable": agent.map(|a| a.reachable),
                        "agent_version": agent.map(|a| a.version.clone()),
                        "signals": signals_json(&h.signals),
                        "signals_error": (!h.signals_error.is_empty()).then_some(&h.signals_error),
                    })
                })
                .collect();
            json!({ "index": ring.index, "name": ring.name, "hosts": hosts })
        })
        .collect();
    json!({
        "rollout_id": r.rollout_id,
        "app": r.app,
        "version": r.version,
        "state": r.state,
        "ring": r.ring,
        "reason": r.reason,
        "bake_left_ms": r.bake_left_ms,
        "started_by": r.started_by,
        "created_ms": r.created_ms,
        "updated_ms": r.updated_ms,
        "leader": r.leader,
        "epoch": r.epoch,
        "pending_control": r.pending_control,
        "rings": rings,
    })
}

/// The newest [`MAX_ROLLOUTS`] rollouts with their rings and hosts; with `dialer`, the hosts
/// of the unfinished ones and of the newest carry their agents' live signals.
///
/// # Errors
/// The store's.
pub async fn rollouts<S: Store>(
    store: &S,
    dialer: Option<&Arc<Dialer>>,
) -> Result<Value, StoreError> {
    let mut records = store.rollouts().await?;
    records.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    records.truncate(MAX_ROLLOUTS);
    let inventory = store.agents().await?;
    let agents: HashMap<&str, &AgentRecord> =
        inventory.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let hosts = store.hosts(&r.id).await?;
        let lease = store.lease(&r.id).await?;
        let control = store.control(&r.id).await?;
        let mut status = rollout_status(r, &hosts, lease.as_ref(), control.as_ref());
        if let Some(dialer) = dialer
            && (i == 0 || !r.state.is_final())
        {
            live_signals::fill(dialer, inventory.clone(), &mut status).await;
        }
        out.push(status_json(&status, &agents));
    }
    Ok(json!({ "rollouts": out }))
}

/// The inventory.
///
/// # Errors
/// The store's.
pub async fn agents<S: Store>(store: &S) -> Result<Value, StoreError> {
    let agents: Vec<Value> = store.agents().await?.iter().map(agent_json).collect();
    Ok(json!({ "agents": agents }))
}

/// Every app's flag set the service distributes, with each targeted agent's delivery.
pub async fn flags<S: Store>(store: &S) -> Result<Value, crate::flag_sets::FlagSetError> {
    let sets: Vec<Value> = crate::flag_sets::every_status(store)
        .await?
        .iter()
        .map(|f| {
            json!({
                "app": f.app,
                "version": f.version,
                "digest": f.digest,
                "published_by": f.published_by,
                "published_ms": f.published_ms,
                "deliveries": f.deliveries.iter().map(|d| json!({
                    "agent_id": d.agent_id,
                    "state": d.state,
                    "version": d.version,
                    "attempts": d.attempts,
                    "detail": d.detail,
                    "at_ms": d.at_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "flags": sets }))
}

/// The public fields of the entries after seq `after`, the newest `limit` of them.
pub fn audit(lines: &[String], after: u64, limit: usize) -> Value {
    let newer: Vec<Value> = lines
        .iter()
        .filter_map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        })
        .filter(|m| {
            m.get("seq")
                .and_then(Value::as_u64)
                .is_some_and(|s| s > after)
        })
        .map(|m| {
            let shown: Map<String, Value> = SHOWN_FIELDS
                .iter()
                .filter_map(|k| Some(((*k).to_owned(), m.get(*k)?.clone())))
                .collect();
            Value::Object(shown)
        })
        .collect();
    let skip = newer.len().saturating_sub(limit);
    json!({ "entries": newer.into_iter().skip(skip).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_view_keeps_listed_fields_of_entries_after_the_seq() {
        let lines: Vec<String> = (1..=5)
            .map(|seq| {
                json!({"seq": seq, "ts": "t", "prev": "p", "event": "host.dispatched",
                       "rollout": "r1", "agent_id": "web-1", "sig": "s", "extra": "x"})
                .to_string()
            })
            .chain(["torn".to_owned()])
            .collect();
        let v = audit(&lines, 2, 2);
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["seq"], 4);
        assert_eq!(entries[1]["seq"], 5);
        assert_eq!(entries[1]["rollout"], "r1");
        for hidden in ["prev", "sig", "extra"] {
            assert!(entries[1].get(hidden).is_none(), "{hidden}");
        }
        assert_eq!(audit(&lines, 5, 10)["entries"].as_array().unwrap().len(), 0);
    }
}
