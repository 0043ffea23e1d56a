//! `gantry status`: what runs where on an agent, and its recent jobs.

use std::fmt::Write as _;
use std::io::IsTerminal;

use gantry_client::{Agent, ClientError};
use gantry_proto::v1::{
    Action, AppStatus, Backend, Outcome, StatusRequest, StatusResponse, Strategy,
};
use serde_json::json;

use crate::cli::StatusArgs;
use crate::conn::{self, ConnError};
use crate::exit::Exit;
use crate::flags;
use crate::output::outcome_name;
use gantry_policy::job::{action_name, strategy_name};

/// Why the agent's status could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The connection flags are incomplete.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] crate::flags::FlagError),
}

impl StatusError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            StatusError::Conn(e) => e.exit(),
            StatusError::Client(e) => e.fault().into(),
            StatusError::Flag(_) => Exit::Usage,
        }
    }
}

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
                "active_slot": a.active_slot,
                "rollout": live_rollout(a).unwrap_or_default(),
                "listen": a.listen,
                "releases_on_disk": a.releases_on_disk,
                "notes": a.notes,
                "instances": a.instances.iter().map(|i| json!({
                    "index": i.index, "slot": i.slot, "pid": i.pid, "port": i.port,
                    "version": i.version, "state": i.state, "restarts": i.restarts,
                })).collect::<Vec<_>>(),
                "backends": a.backends.iter().map(|b| json!({
                    "id": b.id, "addr": b.addr, "weight": b.weight, "draining": b.draining,
                    "active_connections": b.active_connections,
                    "total_connections": b.total_connections,
                    "connect_errors": b.connect_errors,
                    "bytes_in": b.bytes_in, "bytes_out": b.bytes_out,
                })).collect::<Vec<_>>(),
                "signals": super::status_signals::signals_json(&a.signals),
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

/// How a table column is aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left.
    Right,
}

/// A table indented by two spaces, each column as wide as its widest cell; the last column
/// is not padded (so a long free-text last column does not push trailing spaces).
pub(crate) fn table(out: &mut String, columns: &[(&str, Align)], rows: &[Vec<String>]) {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, (head, _))| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .chain(std::iter::once(head.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::from(" ");
        for (c, ((_, align), cell)) in columns.iter().zip(cells).enumerate() {
            let w = widths[c];
            text.push(' ');
            let last = c + 1 == columns.len();
            match (align, last) {
                (Align::Left, true) => text.push_str(cell),
                (Align::Left, false) => {
                    let _ = write!(text, "{cell:<w$}");
                }
                (Align::Right, _) => {
                    let _ = write!(text, "{cell:>w$}");
                }
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    let heads: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    line(out, &heads);
    for r in rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(out, &cells);
    }
}

/// The agent's rollout text while a job runs. The agent keeps the last rollout's words after
/// the job ends (a finished canary still read "canary 1.1.0: 50%" deploys later), so without
/// an active job they are not shown.
pub fn live_rollout(a: &AppStatus) -> Option<&str> {
    (!a.rollout.is_empty() && !a.active_job_id.is_empty()).then_some(a.rollout.as_str())
}

/// Whether the app's backends can be serving: an instance runs, or a job is changing them. A
/// stopped app's front door still reports its last route table.
pub fn serves(a: &AppStatus) -> bool {
    !a.active_job_id.is_empty() || a.instances.iter().any(|i| i.state != "stopped")
}

/// The rollout line: the agent's words, with the command to continue when it waits for one.
pub fn rollout_text(app: &str, rollout: &str) -> String {
    if rollout.contains("waiting for promote") && !rollout.contains("gantry promote") {
        format!(
            "{rollout} (continue: gantry promote --app {app}; give up: gantry abort --app {app})"
        )
    } else {
        rollout.to_owned()
    }
}

fn instances_table(out: &mut String, a: &AppStatus) {
    // The SLOT column only for apps with slots (a front door).
    let slots = a.instances.iter().any(|i| !i.slot.is_empty());
    let rows: Vec<Vec<String>> = a
        .instances
        .iter()
        .map(|i| {
            let mut row = vec![i.index.to_string()];
            if slots {
                row.push(or_dash(&i.slot).to_owned());
            }
            row.extend([
                if i.pid == 0 {
                    "-".to_owned()
                } else {
                    i.pid.to_string()
                },
                i.port.to_string(),
                or_dash(&i.version).to_owned(),
                or_dash(&i.state).to_owned(),
                i.restarts.to_string(),
            ]);
            row
        })
        .collect();
    let mut columns = vec![("INST", Align::Left)];
    if slots {
        columns.push(("SLOT", Align::Left));
    }
    columns.extend([
        ("PID", Align::Right),
        ("PORT", Align::Right),
        ("VERSION", Align::Left),
        ("STATE", Align::Left),
        ("RESTARTS", Align::Right),
    ]);
    table(out, &columns, &rows);
}

/// A backend's share of new connections: its weight over the sum of the weights of the
/// backends not draining, as a whole percent; `-` when it gets none.
pub fn share(b: &Backend, all: &[Backend]) -> String {
    let total: u64 = all
        .iter()
        .filter(|x| !x.draining)
        .map(|x| u64::from(x.weight))
        .sum();
    if b.draining || b.weight == 0 || total == 0 {
        return "-".to_owned();
    }
    let tenths = u64::from(b.weight) * 1000 / total;
    if tenths.is_multiple_of(10) {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

fn backends_table(out: &mut String, a: &AppStatus) {
    let rows: Vec<Vec<String>> = a
        .backends
        .iter()
        .map(|b| {
            vec![
                or_dash(&b.id).to_owned(),
                or_dash(&b.addr).to_owned(),
                b.weight.to_string(),
                share(b, &a.backends),
                if b.draining { "draining" } else { "-" }.to_owned(),
                b.active_connections.to_string(),
                b.total_connections.to_string(),
                b.connect_errors.to_string(),
                flags::format_bytes(b.bytes_in),
                flags::format_bytes(b.bytes_out),
            ]
        })
        .collect();
    table(
        out,
        &[
            ("BACKEND", Align::Left),
            ("ADDR", Align::Left),
            ("WEIGHT", Align::Right),
            ("SHARE", Align::Right),
            ("DRAIN", Align::Left),
            ("ACTIVE", Align::Right),
            ("TOTAL", Align::Right),
            ("ERRORS", Align::Right),
            ("IN", Align::Right),
            ("OUT", Align::Right),
        ],
        &rows,
    );
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
        if !a.active_slot.is_empty() {
            let _ = writeln!(out, "  slot      {} (serving)", a.active_slot);
        }
        if let Some(rollout) = live_rollout(a) {
            let _ = writeln!(out, "  rollout   {}", rollout_text(&a.name, rollout));
        }
        if !a.listen.is_empty() {
            let _ = writeln!(out, "  listen    {} (front door)", a.listen);
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
        if !a.notes.is_empty() {
            let _ = writeln!(out, "  notes");
            for line in a.notes.lines() {
                let _ = writeln!(out, "    | {line}");
            }
        }
        if a.instances.is_empty() {
            let _ = writeln!(out, "  instances none");
        } else {
            instances_table(&mut out, a);
        }
        super::status_signals::signals_table(&mut out, &a.signals);
        if !a.backends.is_empty() && serves(a) {
            backends_table(&mut out, a);
        } else if !a.backends.is_empty() {
            let _ = writeln!(
                out,
                "  backends  none serving (nothing runs; the route table still names {})",
                a.backends.len()
            );
        } else if !a.listen.is_empty() {
            let _ = writeln!(out, "  backends  none");
        }
    }
    if !s.recent_jobs.is_empty() {
        let _ = writeln!(out, "\nrecent jobs");
        let rows: Vec<Vec<String>> = s
            .recent_jobs
            .iter()
            .map(|j| {
                let when = if j.finished_ms > 0 {
                    flags::format_unix(j.finished_ms / 1000)
                } else {
                    "running".to_owned()
                };
                vec![
                    when,
                    j.job_id.clone(),
                    j.app.clone(),
                    Action::try_from(j.action)
                        .map_or("unknown", action_name)
                        .to_owned(),
                    or_dash(&j.version).to_owned(),
                    Outcome::try_from(j.outcome)
                        .map_or("unknown", outcome_name)
                        .to_owned(),
                    j.reason.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                ("FINISHED", Align::Left),
                ("JOB", Align::Left),
                ("APP", Align::Left),
                ("ACTION", Align::Left),
                ("VERSION", Align::Left),
                ("OUTCOME", Align::Left),
                ("REASON", Align::Left),
            ],
            &rows,
        );
    }
    out
}

/// Fetches the agent's status.
///
/// # Errors
///
/// [`ClientError`].
pub async fn fetch(agent: &Agent, app: Option<&str>) -> Result<StatusResponse, ClientError> {
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
/// [`StatusError`].
pub async fn run(args: StatusArgs) -> Result<Exit, StatusError> {
    let settings = conn::settings(&args.conn)?;
    let interval = flags::duration("--interval", &args.interval)?;
    let agent = Agent::connect(&settings).await?;
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0u32;
    loop {
        let s = fetch(&agent, args.app.as_deref()).await?;
        if args.json {
            println!("{}", status_json(&s));
        } else {
            if args.watch && tty {
                // Clear the screen and home the cursor, as watch(1) does.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", status_text(&s));
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|n| shown >= n) {
            return Ok(Exit::Success);
        }
        if !args.json && !tty {
            println!("---");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Success),
        }
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
