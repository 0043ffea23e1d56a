//! How job progress reaches the user: progress bars when stderr is a terminal, one JSON object
//! per event per line on stdout with `--json`, plain readable lines otherwise.
//!
//! With `--json`, stdout carries only events; notes for people go to stderr.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use gantry_client::follow::{FollowObserver, REATTACH_ATTEMPTS};
use gantry_client::witness::WitnessAlarm;
use gantry_proto::v1::{Action, JobEvent, JobFinished, JobStep, Outcome, Strategy, job_event};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use gantry_policy::job::{action_name, strategy_name};

/// Where and how events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--json`: JSON lines on stdout.
    Json,
    /// A terminal: progress bars on stderr, outcome on stdout.
    Tty,
    /// Neither: plain lines on stdout.
    Plain,
}

impl Mode {
    /// `--json` wins; otherwise bars only when stderr is a terminal.
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }
}

/// The name of an outcome.
pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Unspecified => "unspecified",
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled_back",
        Outcome::Interrupted => "interrupted",
    }
}

/// One event as the JSON object `--json` prints.
pub fn event_json(ev: &JobEvent) -> serde_json::Value {
    let mut obj = json!({"job_id": ev.job_id, "seq": ev.seq, "ts_ms": ev.ts_ms});
    let extra = match &ev.kind {
        Some(job_event::Kind::Accepted(a)) => json!({
            "type": "accepted",
            "app": a.app,
            "action": Action::try_from(a.action).map_or("unknown", action_name),
            "version": a.version,
            "strategy": Strategy::try_from(a.strategy).map_or("unknown", strategy_name),
            "job_digest": a.job_digest,
            "signer_key_ids": a.signer_key_ids,
        }),
        Some(job_event::Kind::Step(s)) => json!({
            "type": "step",
            "step": s.step,
            "message": s.message,
            "done": s.done,
            "total": s.total,
        }),
        Some(job_event::Kind::Finished(f)) => json!({
            "type": "finished",
            "outcome": Outcome::try_from(f.outcome).map_or("unknown", outcome_name),
            "reason": f.reason,
            "checkpoint": f.checkpoint.as_ref().map(|c| json!({"seq": c.seq, "line": c.line})),
        }),
        None => json!({"type": "unknown"}),
    };
    if let (Some(o), serde_json::Value::Object(e)) = (obj.as_object_mut(), extra) {
        o.extend(e);
    }
    obj
}

/// One event as a readable line (without the outcome summary).
pub fn event_text(ev: &JobEvent) -> String {
    match &ev.kind {
        Some(job_event::Kind::Accepted(a)) => {
            let action = Action::try_from(a.action).map_or("unknown", action_name);
            let what = if a.version.is_empty() {
                format!("{action} {}", a.app)
            } else {
                let strategy = Strategy::try_from(a.strategy).map_or("unknown", strategy_name);
                format!("{action} {} {} ({strategy})", a.app, a.version)
            };
            let signers: Vec<&str> = a.signer_key_ids.iter().map(|k| short(k)).collect();
            format!(
                "accepted job {}: {what}; digest {}; signed by {}",
                ev.job_id,
                short(&a.job_digest),
                signers.join(", ")
            )
        }
        Some(job_event::Kind::Step(s)) => {
            let progress = if s.total > 0 {
                format!(" [{}/{}]", s.done, s.total)
            } else {
                String::new()
            };
            let line = if s.message.is_empty() {
                format!("  {}{progress}", s.step)
            } else {
                format!("  {}: {}{progress}", s.step, s.message)
            };
            if is_pause(s) {
                format!("{line}\n  PAUSED: the rollout waits for a signed promote job")
            } else {
                line
            }
        }
        Some(job_event::Kind::Finished(f)) => {
            let outcome = Outcome::try_from(f.outcome).unwrap_or(Outcome::Unspecified);
            let verdict = match outcome {
                Outcome::Succeeded => "succeeded".to_owned(),
                Outcome::Failed => "FAILED".to_owned(),
                Outcome::RolledBack => "FAILED and was rolled back".to_owned(),
                Outcome::Interrupted => "was INTERRUPTED".to_owned(),
                Outcome::Unspecified => "ended with an unknown outcome".to_owned(),
            };
            if f.reason.is_empty() {
                format!("job {} {verdict}", ev.job_id)
            } else {
                format!("job {} {verdict}: {}", ev.job_id, f.reason)
            }
        }
        None => format!("  (event {} of an unknown kind)", ev.seq),
    }
}

/// True for a step that says a rollout waits for `gantry promote`: `rollout.paused`, or any
/// step whose message says it is waiting for promote.
pub fn is_pause(s: &JobStep) -> bool {
    s.step == "rollout.paused" || s.message.contains("waiting for promote")
}

/// What to run to go on from a paused rollout, unless the agent's message says it already.
pub fn pause_hint(message: &str, app: &str) -> Option<String> {
    if message.contains("gantry promote") {
        return None;
    }
    Some(format!(
        "  continue with: gantry promote --app {app}   (or give up: gantry abort --app {app})"
    ))
}

/// The first 12 characters of a hex id, enough for people.
pub fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Shows a job's events as they arrive.
#[derive(Debug)]
pub struct Events {
    mode: Mode,
    bar: Option<ProgressBar>,
    /// The app of the job shown (from its accepted event), for hints.
    app: Option<String>,
    /// The job's end, once shown.
    finished: Option<JobFinished>,
}

impl Events {
    /// Starts showing events in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            bar: None,
            app: None,
            finished: None,
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The job's end, once its finished event has been shown.
    pub fn finished(&self) -> Option<&JobFinished> {
        self.finished.as_ref()
    }

    /// A note for people: stderr with `--json` (stdout stays machine-readable), else stdout.
    pub fn note(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(bar), _) => bar.println(msg),
            (None, Mode::Json) => eprintln!("{msg}"),
            (None, Mode::Tty | Mode::Plain) => println!("{msg}"),
        }
    }

    /// A bar for uploading `size` bytes (hidden unless on a terminal).
    pub fn upload_bar(&self, size: u64) -> ProgressBar {
        if self.mode != Mode::Tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    }

    /// Shows one event.
    pub fn event(&mut self, ev: &JobEvent) {
        match &ev.kind {
            Some(job_event::Kind::Accepted(a)) => self.app = Some(a.app.clone()),
            Some(job_event::Kind::Finished(f)) => self.finished = Some(f.clone()),
            Some(job_event::Kind::Step(_)) | None => {}
        }
        match self.mode {
            Mode::Json => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", event_json(ev));
                let _ = out.flush();
            }
            Mode::Plain => {
                let line = self.text(ev);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Mode::Tty => self.tty_event(ev),
        }
    }

    /// [`event_text`], plus how to continue when a rollout pauses.
    pub fn text(&self, ev: &JobEvent) -> String {
        let mut line = event_text(ev);
        if let (Some(job_event::Kind::Step(s)), Some(app)) = (&ev.kind, &self.app)
            && is_pause(s)
            && let Some(hint) = pause_hint(&s.message, app)
        {
            line.push('\n');
            line.push_str(&hint);
        }
        line
    }

    fn tty_event(&mut self, ev: &JobEvent) {
        match &ev.kind {
            Some(job_event::Kind::Finished(_)) => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                println!("{}", event_text(ev));
            }
            Some(job_event::Kind::Step(s)) => {
                let text = self.text(ev);
                let bar = self.bar.get_or_insert_with(new_job_bar);
                bar.println(text);
                if s.total > 0 {
                    bar.set_length(u64::from(s.total));
                    bar.set_position(u64::from(s.done));
                }
                if is_pause(s) {
                    bar.set_message("PAUSED, waiting for gantry promote".to_owned());
                } else {
                    bar.set_message(s.step.clone());
                }
            }
            Some(job_event::Kind::Accepted(_)) | None => {
                let text = self.text(ev);
                let bar = self.bar.get_or_insert_with(new_job_bar);
                bar.println(text);
            }
        }
    }

    /// A witness alarm: the job's checkpoint does not extend the one this controller
    /// witnessed. A JSON object on stdout with `--json` (so CI sees it), and the alarm on
    /// stderr in every mode.
    pub fn witness_alarm(&mut self, alarm: &WitnessAlarm) {
        self.clear();
        if self.mode == Mode::Json {
            let obj = json!({
                "type": "witness_alarm",
                "error": alarm.to_string(),
                "witnessed_seq": alarm.witnessed_seq(),
                "exit_code": 1,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{obj}");
            let _ = out.flush();
        }
        eprintln!(
            "WITNESS ALARM: {alarm}\n  the agent's audit log does not move forward from what this \
             controller witnessed; the witnessed checkpoint is kept (check it: gantry audit verify)"
        );
    }

    /// Clears any bar (before printing an error, say).
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A followed job's events, shown as they arrive.
impl FollowObserver for Events {
    fn event(&mut self, ev: &JobEvent) {
        Events::event(self, ev);
    }

    fn reattaching(&mut self, job_id: &str, delay: Duration, attempt: u32) {
        self.note(&format!(
            "event stream of job {job_id} lost; re-attaching in {}ms (attempt {attempt} of {REATTACH_ATTEMPTS})",
            delay.as_millis()
        ));
    }
}

fn new_job_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg} {pos}/{len}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::v1::JobAccepted;

    #[test]
    fn json_events_carry_type_and_ids() {
        let ev = JobEvent {
            job_id: "j1".into(),
            seq: 2,
            ts_ms: 5,
            kind: Some(job_event::Kind::Step(JobStep {
                step: "health.passed".into(),
                message: "ok".into(),
                done: 1,
                total: 2,
            })),
        };
        let v = event_json(&ev);
        assert_eq!(v["type"], "step");
        assert_eq!(v["job_id"], "j1");
        assert_eq!(v["seq"], 2);
        assert_eq!(v["ts_ms"], 5);
        assert_eq!(v["step"], "health.passed");

        let acc = JobEvent {
            job_id: "j1".into(),
            seq: 1,
            ts_ms: 1,
            kind: Some(job_event::Kind::Accepted(JobAccepted {
                app: "web".into(),
                action: Action::Deploy as i32,
                version: "1.0.0".into(),
                strategy: Strategy::Hot as i32,
                job_digest: "ab".into(),
                signer_key_ids: vec!["k".into()],
            })),
        };
        assert_eq!(event_json(&acc)["action"], "deploy");
        assert!(event_text(&acc).contains("deploy web 1.0.0 (hot)"));

        let fin = JobEvent {
            job_id: "j1".into(),
            seq: 3,
            ts_ms: 9,
            kind: Some(job_event::Kind::Finished(JobFinished {
                outcome: Outcome::RolledBack as i32,
                reason: "unhealthy".into(),
                checkpoint: None,
            })),
        };
        assert_eq!(event_json(&fin)["outcome"], "rolled_back");
        assert_eq!(
            event_text(&fin),
            "job j1 FAILED and was rolled back: unhealthy"
        );
    }

    fn step(name: &str, message: &str, done: u32, total: u32) -> JobEvent {
        JobEvent {
            job_id: "j1".into(),
            seq: 4,
            ts_ms: 9,
            kind: Some(job_event::Kind::Step(JobStep {
                step: name.into(),
                message: message.into(),
                done,
                total,
            })),
        }
    }

    #[test]
    fn rollout_steps_and_unknown_steps_read_well() {
        assert_eq!(
            event_text(&step("batch.started", "instances 0-1 of 4", 1, 2)),
            "  batch.started: instances 0-1 of 4 [1/2]"
        );
        assert_eq!(
            event_text(&step("traffic.switched", "green 100%", 0, 0)),
            "  traffic.switched: green 100%"
        );
        assert_eq!(
            event_text(&step("something.new", "", 0, 0)),
            "  something.new"
        );
        assert_eq!(
            event_json(&step("canary.step", "weight 10%", 1, 3))["step"],
            "canary.step"
        );
    }

    #[test]
    fn a_paused_rollout_stands_out_and_says_how_to_continue() {
        let paused = step(
            "rollout.paused",
            "waiting for promote: run gantry promote --app web",
            1,
            3,
        );
        assert_eq!(
            event_text(&paused),
            "  rollout.paused: waiting for promote: run gantry promote --app web [1/3]\n  \
             PAUSED: the rollout waits for a signed promote job"
        );
        let mut ev = Events::new(Mode::Plain);
        ev.app = Some("web".into());
        // The agent's message names the command already: no second hint.
        assert_eq!(ev.text(&paused), event_text(&paused));
        // A terser message gets the commands added, with the app from the accepted event.
        let terse = step("rollout.paused", "waiting for promote", 0, 0);
        assert_eq!(
            ev.text(&terse),
            "  rollout.paused: waiting for promote\n  \
             PAUSED: the rollout waits for a signed promote job\n  \
             continue with: gantry promote --app web   (or give up: gantry abort --app web)"
        );
    }
}
