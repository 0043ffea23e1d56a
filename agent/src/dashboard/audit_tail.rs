//! The dashboard's view of the audit log: the last [`TAIL_LEN`] entries with their public
//! fields only, and the deploy events among them (job accepted, traffic switched, weight set,
//! batch, promote, pause, breach, rollback, job end) for the charts' time axis.
//!
//! Fields are kept by name from a list ([`SHOWN_FIELDS`]) rather than dropped from one, so a
//! field added to an entry later (a job's `env`, say, whose values are configuration) stays
//! off the page until someone decides it belongs there.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::{Map, Value};

/// Entries the tail keeps.
pub const TAIL_LEN: usize = 500;
/// Deploy events kept (over every app).
pub const MAX_EVENTS: usize = 2000;

/// The fields of an entry the dashboard shows. Never `env` (configuration values, secret ones
/// as keyed hashes), `job_digest`, signer key ids or certificate fingerprints.
pub const SHOWN_FIELDS: &[&str] = &[
    "seq", "ts", "event", "job_id", "app", "action", "version", "strategy", "step", "detail",
    "reason", "verdict", "plan_id",
];

/// The `job.step` steps marked on the time axis, with their kind.
const MARKED_STEPS: &[(&str, &str)] = &[
    ("traffic.switched", "traffic"),
    ("canary.step", "weight"),
    ("batch.started", "batch"),
    ("batch.done", "batch"),
    ("preview.passed", "preview"),
    ("rollout.paused", "paused"),
    ("rollout.promoted", "promote"),
    ("analysis.failed", "breach"),
    ("watch.failed", "breach"),
    ("canary.aborted", "rollback"),
    ("rollback.done", "rollback"),
];

/// One deploy event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The audit entry's seq.
    pub seq: u64,
    /// The audit entry's time (RFC 3339, UTC).
    pub ts: String,
    /// The app.
    pub app: String,
    /// The job.
    pub job_id: String,
    /// `accepted`, `traffic`, `weight`, `batch`, `preview`, `paused`, `promote`, `breach`,
    /// `rollback` or `end`.
    pub kind: &'static str,
    /// What happened, for people.
    pub label: String,
}

/// The tail and the events.
#[derive(Debug, Default)]
pub struct AuditTail {
    entries: VecDeque<Value>,
    events: VecDeque<Event>,
    last_seq: u64,
}

impl AuditTail {
    /// Takes in one audit line; lines at or before the last seq seen are skipped (the start-up
    /// read and the live feed may overlap), as are lines that are not JSON objects.
    pub fn record(&mut self, seq: u64, line: &str) {
        if seq <= self.last_seq {
            return;
        }
        let Ok(Value::Object(entry)) = serde_json::from_str::<Value>(line) else {
            return;
        };
        self.last_seq = seq;
        let shown: Map<String, Value> = SHOWN_FIELDS
            .iter()
            .filter_map(|k| Some(((*k).to_owned(), entry.get(*k)?.clone())))
            .collect();
        if let Some(event) = event_of(seq, &shown) {
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(event);
        }
        if self.entries.len() == TAIL_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(Value::Object(shown));
    }

    /// The last seq taken in.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Entries after `after` (a seq), oldest first, at most `limit` (the newest ones).
    pub fn after(&self, after: u64, limit: usize) -> Vec<Value> {
        let newer: Vec<&Value> = self
            .entries
            .iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s > after))
            .collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).cloned().collect()
    }

    /// `app`'s deploy events, oldest first.
    pub fn events_of(&self, app: &str) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.app == app)
            .cloned()
            .collect()
    }
}

fn text<'a>(entry: &'a Map<String, Value>, key: &str) -> &'a str {
    entry.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The deploy event an entry marks, if any.
fn event_of(seq: u64, entry: &Map<String, Value>) -> Option<Event> {
    let (app, job_id) = (text(entry, "app"), text(entry, "job_id"));
    if app.is_empty() || job_id.is_empty() {
        return None;
    }
    let (kind, label) = match text(entry, "event") {
        "job.accepted" => {
            let mut label = format!("job {job_id} accepted: {}", text(entry, "action"));
            for key in ["version", "strategy"] {
                if !text(entry, key).is_empty() {
                    label.push(' ');
                    label.push_str(text(entry, key));
                }
            }
            ("accepted", label)
        }
        "job.step" => {
            let step = text(entry, "step");
            let (_, kind) = MARKED_STEPS.iter().find(|(s, _)| *s == step)?;
            (*kind, format!("{step}: {}", text(entry, "detail")))
        }
        end @ ("job.succeeded" | "job.failed" | "job.rolled_back" | "job.interrupted") => {
            let outcome = end.trim_start_matches("job.").replace('_', " ");
            let reason = text(entry, "reason");
            let label = if reason.is_empty() {
                format!("job {job_id} {outcome}")
            } else {
                format!("job {job_id} {outcome}: {reason}")
            };
            ("end", label)
        }
        _ => return None,
    };
    Some(Event {
        seq,
        ts: text(entry, "ts").to_owned(),
        app: app.to_owned(),
        job_id: job_id.to_owned(),
        kind,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(seq: u64, event: &str, extra: Value) -> String {
        let mut v =
            json!({"seq": seq, "ts": "2026-12-02T01:00:00.000Z", "prev": "00", "event": event});
        if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
            m.extend(x);
        }
        v.to_string()
    }

    #[test]
    fn entries_keep_their_public_fields_only() {
        let mut t = AuditTail::default();
        t.record(
            1,
            &line(
                1,
                "job.accepted",
                json!({"job_id": "j1", "app": "web", "action": "deploy", "version": "2.0.0",
                       "strategy": "canary", "env": {"DB_PASSWORD": "hash-of-it", "MODE": "blue"},
                       "job_digest": "abc", "signer_key_ids": ["k"], "peer_fingerprint": "fp"}),
            ),
        );
        let shown = t.after(0, 10);
        assert_eq!(shown.len(), 1);
        let text = shown[0].to_string();
        for hidden in ["env", "DB_PASSWORD", "blue", "job_digest", "fp", "prev"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        assert_eq!(shown[0]["job_id"], "j1");
        assert_eq!(shown[0]["seq"], 1);
        let events = t.events_of("web");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "accepted");
        assert_eq!(events[0].label, "job j1 accepted: deploy 2.0.0 canary");
    }

    #[test]
    fn deploy_steps_and_job_ends_are_events_and_other_steps_are_not() {
        let mut t = AuditTail::default();
        let step = |seq, step: &str| {
            line(
                seq,
                "job.step",
                json!({"job_id": "j1", "app": "web", "step": step, "detail": format!("d{seq}")}),
            )
        };
        t.record(1, &step(1, "instance.started"));
        t.record(2, &step(2, "traffic.switched"));
        t.record(3, &step(3, "canary.step"));
        t.record(4, &step(4, "analysis.failed"));
        t.record(
            5,
            &line(
                5,
                "job.rolled_back",
                json!({"job_id": "j1", "app": "web", "reason": "canary error rate 2.00%"}),
            ),
        );
        t.record(
            6,
            &line(6, "checkpoint", json!({"key_id": "k", "sig": "s"})),
        );
        let kinds: Vec<_> = t.events_of("web").iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["traffic", "weight", "breach", "end"]);
        assert_eq!(t.events_of("web")[0].label, "traffic.switched: d2");
        assert_eq!(
            t.events_of("web")[3].label,
            "job j1 rolled back: canary error rate 2.00%"
        );
        assert!(t.events_of("api").is_empty());
        assert_eq!(t.after(0, 100).len(), 6);
        assert_eq!(t.last_seq(), 6);
    }

    #[test]
    fn the_tail_is_bounded_ordered_and_skips_lines_already_seen() {
        let mut t = AuditTail::default();
        for seq in 1..=(TAIL_LEN as u64 + 20) {
            t.record(seq, &line(seq, "agent.started", json!({})));
        }
        t.record(
            3,
            &line(3, "job.accepted", json!({"job_id": "old", "app": "web"})),
        );
        t.record(9999, "not json");
        assert_eq!(t.after(0, usize::MAX).len(), TAIL_LEN);
        assert!(t.events_of("web").is_empty());
        let last = t.after(TAIL_LEN as u64 + 17, 10);
        let seqs: Vec<_> = last.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            [
                TAIL_LEN as u64 + 18,
                TAIL_LEN as u64 + 19,
                TAIL_LEN as u64 + 20
            ]
        );
        let newest = t.after(0, 2);
        assert_eq!(newest[1]["seq"], TAIL_LEN as u64 + 20);
        assert_eq!(newest.len(), 2);
    }
}
