//! `gantry fleet policy`: per agent, the effective policy it reports and whether that report
//! is the config its own signed audit log says it started with, plus the plans it admitted.
//!
//! The check: the agent's audit chain verifies (signatures, and the checkpoint the service
//! witnessed from it, in [`crate::dial::Dialer::verified_audit`]); the newest `agent.started`
//! entry records a `config_digest`; the `Policy` answer names that same digest, in its field and
//! inside its JSON (`config.digest`). An agent that reports a policy other than the one it runs
//! would have to have started with it, in a log the service has witnessed.

use gantry_proto::v1::{AcceptedPlan, AgentPolicyReview, PolicyDocument};
use serde_json::{Map, Value};

/// The review of one agent from what it answered: its `Policy` document and its verified audit
/// lines with their entry count (or why either could not be had).
pub fn review(
    agent_id: &str,
    doc: Result<PolicyDocument, String>,
    audit: Result<(Vec<String>, u64), String>,
) -> AgentPolicyReview {
    let mut out = AgentPolicyReview {
        agent_id: agent_id.to_owned(),
        ..AgentPolicyReview::default()
    };
    let doc = match doc {
        Ok(d) => d,
        Err(e) => {
            out.error = format!("cannot read its policy: {e}");
            return out;
        }
    };
    out.policy_json.clone_from(&doc.json);
    out.config_digest.clone_from(&doc.config_digest);
    let (lines, entries) = match audit {
        Ok(a) => a,
        Err(e) => {
            out.error = format!("its audit log cannot vouch for the policy: {e}");
            return out;
        }
    };
    out.entries = entries;
    let mut started: Option<String> = None;
    for line in &lines {
        let Ok(entry) = serde_json::from_str::<Map<String, Value>>(line) else {
            continue;
        };
        match entry.get("event").and_then(Value::as_str) {
            Some("agent.started") => {
                started = entry
                    .get("config_digest")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            Some("job.accepted") => {
                if let Some(plan) = accepted_plan(&entry) {
                    out.plans.push(plan);
                }
            }
            _ => {}
        }
    }
    out.error = digest_problem(&doc, started.as_deref()).unwrap_or_default();
    out.digest_ok = out.error.is_empty();
    out
}

/// What is wrong with the reported policy's digest, or `None` when everything agrees.
fn digest_problem(doc: &PolicyDocument, started: Option<&str>) -> Option<String> {
    let Some(started) = started else {
        return Some("its audit log has no agent.started entry with a config_digest".to_owned());
    };
    if doc.config_digest != started {
        return Some(format!(
            "it reports config sha256:{} but its audit log says it started with sha256:{started}",
            doc.config_digest
        ));
    }
    let inner = serde_json::from_str::<Value>(&doc.json).ok().and_then(|v| {
        v.pointer("/config/digest")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match inner {
        Some(d) if d == started => None,
        Some(d) => Some(format!(
            "its policy document names config sha256:{d}, not sha256:{started}"
        )),
        None => {
            Some("its policy document is not gantry.policy.v1 JSON with config.digest".to_owned())
        }
    }
}

/// The plan facts of a fleet dispatch's `job.accepted` entry; `None` for a plain job.
fn accepted_plan(entry: &Map<String, Value>) -> Option<AcceptedPlan> {
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let number = |k: &str| entry.get(k).and_then(Value::as_u64).unwrap_or_default();
    let plan_id = entry.get("plan_id").and_then(Value::as_str)?.to_owned();
    Some(AcceptedPlan {
        plan_id,
        plan_digest: text("plan_digest"),
        ring: u32::try_from(number("ring")).unwrap_or(u32::MAX),
        ring_name: text("ring_name"),
        epoch: number("epoch"),
        dispatch_action: text("dispatch_action"),
        job_id: text("job_id"),
        app: text("app"),
        accepted_at: text("ts"),
        seq: number("seq"),
        plan_signer_key_ids: entry
            .get("plan_signer_key_ids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730";
    const OTHER: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn doc(digest: &str, inner: &str) -> PolicyDocument {
        PolicyDocument {
            json: format!(r#"{{"format":"gantry.policy.v1","config":{{"digest":"{inner}"}}}}"#),
            config_digest: digest.to_owned(),
        }
    }

    fn started(digest: &str) -> String {
        format!(r#"{{"seq":1,"event":"agent.started","config_digest":"{digest}"}}"#)
    }

    const ACCEPTED: &str = r#"{"seq":7,"ts":"2026-12-02T02:00:00Z","event":"job.accepted","job_id":"plan-abc-deploy","app":"web","plan_id":"rel-1","plan_digest":"ff","ring":1,"ring_name":"canary","epoch":3,"dispatch_action":"deploy","plan_signer_key_ids":["k1","k2"]}"#;
    const PLAIN_JOB: &str = r#"{"seq":5,"event":"job.accepted","job_id":"j-1","app":"web"}"#;

    #[test]
    fn agreeing_digests_pass_and_only_dispatched_jobs_are_plans() {
        let lines = vec![started(D), PLAIN_JOB.to_owned(), ACCEPTED.to_owned()];
        let r = review("web-1", Ok(doc(D, D)), Ok((lines, 3)));
        assert!(r.digest_ok, "{}", r.error);
        assert_eq!(r.error, "");
        assert_eq!(r.entries, 3);
        assert_eq!(r.config_digest, D);
        assert_eq!(r.plans.len(), 1);
        let p = &r.plans[0];
        assert_eq!(
            (p.plan_id.as_str(), p.ring, p.ring_name.as_str(), p.epoch),
            ("rel-1", 1, "canary", 3)
        );
        assert_eq!(
            (
                p.job_id.as_str(),
                p.app.as_str(),
                p.dispatch_action.as_str()
            ),
            ("plan-abc-deploy", "web", "deploy")
        );
        assert_eq!((p.seq, p.accepted_at.as_str()), (7, "2026-12-02T02:00:00Z"));
        assert_eq!(p.plan_signer_key_ids, ["k1", "k2"]);
        assert_eq!(p.plan_digest, "ff");
    }

    #[test]
    fn the_newest_start_counts() {
        let lines = vec![started(OTHER), started(D)];
        assert!(review("a", Ok(doc(D, D)), Ok((lines, 2))).digest_ok);
        let lines = vec![started(D), started(OTHER)];
        let r = review("a", Ok(doc(D, D)), Ok((lines, 2)));
        assert!(!r.digest_ok);
        assert_eq!(
            r.error,
            format!(
                "it reports config sha256:{D} but its audit log says it started with sha256:{OTHER}"
            )
        );
    }

    #[test]
    fn a_policy_document_naming_another_config_fails() {
        let r = review("a", Ok(doc(D, OTHER)), Ok((vec![started(D)], 1)));
        assert!(!r.digest_ok);
        assert_eq!(
            r.error,
            format!("its policy document names config sha256:{OTHER}, not sha256:{D}")
        );
        let bad = PolicyDocument {
            json: "not json".to_owned(),
            config_digest: D.to_owned(),
        };
        let r = review("a", Ok(bad), Ok((vec![started(D)], 1)));
        assert!(!r.digest_ok);
        assert!(r.error.contains("not gantry.policy.v1 JSON"), "{}", r.error);
    }

    #[test]
    fn no_start_entry_or_no_answer_is_not_ok() {
        let r = review("a", Ok(doc(D, D)), Ok((vec![PLAIN_JOB.to_owned()], 1)));
        assert!(!r.digest_ok);
        assert_eq!(
            r.error,
            "its audit log has no agent.started entry with a config_digest"
        );
        let r = review("a", Err("connection refused".to_owned()), Ok((vec![], 0)));
        assert!(!r.digest_ok);
        assert_eq!(r.error, "cannot read its policy: connection refused");
        assert_eq!(r.policy_json, "");
        let r = review(
            "a",
            Ok(doc(D, D)),
            Err("the chain does not verify: seq 3".to_owned()),
        );
        assert!(!r.digest_ok);
        assert_eq!(
            r.error,
            "its audit log cannot vouch for the policy: the chain does not verify: seq 3"
        );
        assert_eq!(r.config_digest, D, "what it reported is still shown");
    }
}
