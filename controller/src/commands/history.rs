//! `gantry history --app APP`: the releases an app was deployed and rolled back to.
//!
//! The agent keeps no release history of its own beyond the current and previous version,
//! the releases still on disk and its last few jobs (all in `Status`); its audit log holds
//! every job. So the history is read from the log: each `job.accepted` of the app joined with
//! that job's first final entry (`job.succeeded`, `job.failed`, `job.rolled_back`,
//! `job.interrupted`), oldest first, then what `Status` says runs now.

use std::collections::HashMap;
use std::fmt::Write as _;

use gantry_client::Agent;
use gantry_proto::audit_chain::parse_head;
use serde_json::{Value, json};

use crate::cli::HistoryArgs;
use crate::commands::audit::fetch_all;
use crate::commands::status::{self, Align, StatusError, table};
use crate::conn;
use crate::exit::Exit;

/// One job of the app, as its audit entries tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was accepted (the entry's `ts`).
    pub accepted_ts: String,
    /// When it ended; empty while it runs (or when its end is not in the log).
    pub ended_ts: String,
    /// The job id.
    pub job_id: String,
    /// deploy, rollback, restart ...
    pub action: String,
    /// The release version (the target for a rollback); empty for none.
    pub version: String,
    /// The strategy; empty for none.
    pub strategy: String,
    /// succeeded, failed, rolled_back, interrupted; `running` when no end is logged.
    pub outcome: String,
    /// The end's reason.
    pub reason: String,
}

fn text(fields: &serde_json::Map<String, Value>, key: &str) -> String {
    match fields.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// The jobs of `app` in `lines` (the whole log, oldest first): releases only (deploy and
/// rollback) unless `all`.
pub fn entries(lines: &[String], app: &str, all: bool) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for line in lines {
        let Ok(head) = parse_head(line.as_bytes()) else {
            continue;
        };
        if text(&head.fields, "app") != app {
            continue;
        }
        let job_id = text(&head.fields, "job_id");
        let outcome = match head.event.as_str() {
            "job.accepted" => {
                let action = text(&head.fields, "action");
                if !all && !matches!(action.as_str(), "deploy" | "rollback") {
                    continue;
                }
                index.insert(job_id.clone(), out.len());
                out.push(Entry {
                    accepted_ts: head.ts.clone(),
                    ended_ts: String::new(),
                    job_id,
                    action,
                    version: text(&head.fields, "version"),
                    strategy: text(&head.fields, "strategy"),
                    outcome: "running".to_owned(),
                    reason: String::new(),
                });
                continue;
            }
            "job.succeeded" => "succeeded",
            "job.failed" => "failed",
            "job.rolled_back" => "rolled_back",
            "job.interrupted" => "interrupted",
            _ => continue,
        };
        // The first final entry counts: a later one for the same job (an interrupted job
        // recorded again at the next start) does not rewrite its outcome.
        if let Some(e) = index.get(&job_id).and_then(|&i| out.get_mut(i))
            && e.ended_ts.is_empty()
        {
            e.ended_ts = head.ts.clone();
            e.outcome = outcome.to_owned();
            e.reason = text(&head.fields, "reason");
        }
    }
    out
}

/// The history as a readable table, then what runs now.
pub fn history_text(
    app: &str,
    entries: &[Entry],
    now: Option<&gantry_proto::v1::AppStatus>,
) -> String {
    let mut out = format!("history of {app} (from the agent's audit log)\n");
    if entries.is_empty() {
        out.push_str("  no releases in the audit log\n");
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                vec![
                    e.accepted_ts.clone(),
                    e.job_id.clone(),
                    e.action.clone(),
                    dash(&e.version),
                    dash(&e.strategy),
                    e.outcome.clone(),
                    e.reason.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                ("ACCEPTED", Align::Left),
                ("JOB", Align::Left),
                ("ACTION", Align::Left),
                ("VERSION", Align::Left),
                ("STRATEGY", Align::Left),
                ("OUTCOME", Align::Left),
                ("REASON", Align::Left),
            ],
            &rows,
        );
    }
    if let Some(a) = now {
        let or = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        let _ = writeln!(out, "  current   {}", or(&a.version));
        let _ = writeln!(out, "  previous  {}", or(&a.previous_version));
        let _ = writeln!(out, "  on disk   {}", or(&a.releases_on_disk.join(", ")));
    }
    out
}

/// The history as one JSON object.
pub fn history_json(
    app: &str,
    entries: &[Entry],
    now: Option<&gantry_proto::v1::AppStatus>,
) -> Value {
    json!({
        "app": app,
        "current": now.map(|a| a.version.clone()),
        "previous": now.map(|a| a.previous_version.clone()),
        "releases_on_disk": now.map(|a| a.releases_on_disk.clone()),
        "history": entries.iter().map(|e| json!({
            "accepted": e.accepted_ts, "ended": e.ended_ts, "job_id": e.job_id,
            "action": e.action, "version": e.version, "strategy": e.strategy,
            "outcome": e.outcome, "reason": e.reason,
        })).collect::<Vec<_>>(),
    })
}

/// `gantry history`.
///
/// # Errors
///
/// [`StatusError`]: the connection flags, or talking to the agent.
pub async fn run(args: HistoryArgs) -> Result<Exit, StatusError> {
    let settings = conn::settings(&args.conn)?;
    let agent = Agent::connect(&settings).await?;
    let lines = fetch_all(&agent).await?;
    let found = entries(&lines, &args.app, args.all);
    let s = status::fetch(&agent, Some(&args.app)).await;
    let now = match &s {
        Ok(s) => s.apps.iter().find(|a| a.name == args.app),
        Err(e) => {
            eprintln!("note: cannot read what runs now: {e}");
            None
        }
    };
    if args.json {
        println!("{}", history_json(&args.app, &found, now));
    } else {
        print!("{}", history_text(&args.app, &found, now));
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, event: &str, rest: &str) -> String {
        format!(
            r#"{{"seq":{seq},"ts":"T{seq}","prev":"{}","event":"{event}"{rest}}}"#,
            gantry_proto::audit_chain::GENESIS_PREV
        )
    }

    #[test]
    fn releases_are_accepted_jobs_joined_with_their_first_end() {
        let lines = vec![
            line(1, "agent.started", ""),
            line(
                2,
                "job.accepted",
                r#","job_id":"j1","app":"web","action":"deploy","version":"1.0.0","strategy":"hot""#,
            ),
            line(
                3,
                "job.succeeded",
                r#","job_id":"j1","app":"web","action":"deploy","reason":"""#,
            ),
            line(
                4,
                "job.accepted",
                r#","job_id":"x","app":"api","action":"deploy","version":"9.0.0","strategy":"hot""#,
            ),
            line(
                5,
                "job.accepted",
                r#","job_id":"j2","app":"web","action":"restart","version":null,"strategy":null"#,
            ),
            line(
                6,
                "job.succeeded",
                r#","job_id":"j2","app":"web","action":"restart","reason":"""#,
            ),
            line(
                7,
                "job.accepted",
                r#","job_id":"j3","app":"web","action":"deploy","version":"1.1.0","strategy":"canary""#,
            ),
            line(
                8,
                "job.failed",
                r#","job_id":"j3","app":"web","action":"deploy","reason":"disk full""#,
            ),
            line(
                9,
                "job.interrupted",
                r#","job_id":"j3","app":"web","action":"deploy","reason":"restart""#,
            ),
            line(
                10,
                "job.accepted",
                r#","job_id":"j4","app":"web","action":"rollback","version":"1.0.0","strategy":null"#,
            ),
        ];
        let e = entries(&lines, "web", false);
        let got: Vec<(&str, &str, &str, &str)> = e
            .iter()
            .map(|e| {
                (
                    e.job_id.as_str(),
                    e.action.as_str(),
                    e.version.as_str(),
                    e.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("j1", "deploy", "1.0.0", "succeeded"),
                ("j3", "deploy", "1.1.0", "failed"),
                ("j4", "rollback", "1.0.0", "running"),
            ]
        );
        assert_eq!(e[1].reason, "disk full");
        assert_eq!(entries(&lines, "web", true).len(), 4);
        let text = history_text("web", &e, None);
        assert!(text.contains("j3"), "{text}");
        assert!(text.contains("canary"), "{text}");
        assert_eq!(
            history_json("web", &e, None)["history"][0]["version"],
            "1.0.0"
        );
    }
}
