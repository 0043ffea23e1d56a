//! `gantry status`: what runs where on an agent, and its recent jobs.

use std::fmt::Write as _;

use gantry_proto::v1::{Action, Outcome, StatusRequest, StatusResponse, Strategy};
use serde_json::json;

use crate::cli::StatusArgs;
use crate::client::{Agent, ConnSettings};
use crate::commands::job::spec::{action_name, strategy_name};
use crate::exit::{CliError, Exit};
use crate::output::outcome_name;

/// The agent's answer as JSON.
pub fn status_json(s: &StatusResponse) -> serde_json::Value {
    let apps: Vec<_> = s
        .apps
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "version": a.version,
                "previous_version": a.previous_version,
                "strategy": Strategy::try_from(a.strategy).map_or("unknown", strategy_name),
                "active_job_id": a.active_job_id,
                "releases_on_disk": a.releases_on_disk,
                "instances": a.instances.iter().map(|i| json!({
                    "index": i.index, "pid": i.pid, "port": i.port, "version": i.version,
                    "state": i.state, "restarts": i.restarts,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let jobs: Vec<_> = s
        .recent_jobs
        .iter()
        .map(|j| {
            json!({
                "job_id": j.job_id, "app": j.app,
                "action": Action::try_from(j.action).map_or("unknown", action_name),
                "version": j.version,
                "outcome": Outcome::try_from(j.outcome).map_or("unknown", outcome_name),
                "reason": j.reason, "finished_ms": j.finished_ms,
            })
        })
        .collect();
    json!({"agent_id": s.agent_id, "audit_error": s.audit_error, "apps": apps, "recent_jobs": jobs})
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// The agent's answer as readable tables.
pub fn status_text(s: &StatusResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "agent {}", s.agent_id);
    if !s.audit_error.is_empty() {
        let _ = writeln!(
            out,
            "AUDIT LOG UNAVAILABLE, jobs are refused: {}",
            s.audit_error
        );
    }
    if s.apps.is_empty() {
        let _ = writeln!(out, "\nno apps");
    }
    for a in &s.apps {
        let _ = writeln!(out, "\napp {}", a.name);
        let _ = writeln!(
            out,
            "  version   {}",
            if a.version.is_empty() {
                "(nothing deployed)"
            } else {
                &a.version
            }
        );
        let _ = writeln!(out, "  previous  {}", or_dash(&a.previous_version));
        if a.strategy != Strategy::Unspecified as i32 {
            let _ = writeln!(
                out,
                "  strategy  {}",
                Strategy::try_from(a.strategy).map_or("unknown", strategy_name)
            );
        }
        let _ = writeln!(
            out,
            "  releases  {}",
            if a.releases_on_disk.is_empty() {
                "-".to_owned()
            } else {
                a.releases_on_disk.join(", ")
            }
        );
        let _ = writeln!(out, "  active    {}", or_dash(&a.active_job_id));
        if a.instances.is_empty() {
            let _ = writeln!(out, "  instances none");
        } else {
            let _ = writeln!(
                out,
                "  {:<5} {:>8} {:>6} {:<12} {:<10} {:>8}",
                "INST", "PID", "PORT", "VERSION", "STATE", "RESTARTS"
            );
            for i in &a.instances {
                let pid = if i.pid == 0 {
                    "-".to_owned()
                } else {
                    i.pid.to_string()
                };
                let _ = writeln!(
                    out,
                    "  {:<5} {:>8} {:>6} {:<12} {:<10} {:>8}",
                    i.index,
                    pid,
                    i.port,
                    or_dash(&i.version),
                    or_dash(&i.state),
                    i.restarts
                );
            }
        }
    }
    if !s.recent_jobs.is_empty() {
        let _ = writeln!(out, "\nrecent jobs");
        let _ = writeln!(
            out,
            "  {:<20} {:<40} {:<12} {:<9} {:<10} {:<12} REASON",
            "FINISHED", "JOB", "APP", "ACTION", "VERSION", "OUTCOME"
        );
        for j in &s.recent_jobs {
            let when = if j.finished_ms > 0 {
                crate::flags::format_unix(j.finished_ms / 1000)
            } else {
                "running".to_owned()
            };
            let _ = writeln!(
                out,
                "  {:<20} {:<40} {:<12} {:<9} {:<10} {:<12} {}",
                when,
                j.job_id,
                j.app,
                Action::try_from(j.action).map_or("unknown", action_name),
                or_dash(&j.version),
                Outcome::try_from(j.outcome).map_or("unknown", outcome_name),
                j.reason
            );
        }
    }
    out
}

/// Fetches the agent's status.
///
/// # Errors
///
/// [`crate::client::ClientError`].
pub async fn fetch(
    agent: &Agent,
    app: Option<&str>,
) -> Result<StatusResponse, crate::client::ClientError> {
    agent
        .client
        .clone()
        .status(StatusRequest {
            app: app.unwrap_or_default().to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| agent.error("Status", s))
}

/// `gantry status`.
///
/// # Errors
///
/// [`CliError`].
pub async fn run(args: StatusArgs) -> Result<Exit, CliError> {
    let settings = ConnSettings::from_args(&args.conn)?;
    let agent = Agent::connect(&settings).await?;
    let s = fetch(&agent, args.app.as_deref()).await?;
    if args.json {
        println!("{}", status_json(&s));
    } else {
        print!("{}", status_text(&s));
    }
    Ok(Exit::Success)
}
