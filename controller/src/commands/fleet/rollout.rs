//! `rollout start|status|pause|resume|abort` against the controller service.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use gantry_proto::v1::{
    ArtifactChunk, ArtifactRef, ControlRolloutRequest, GetRolloutRequest, HostStatus, Plan,
    RolloutControl, RolloutStatus, StartRolloutRequest,
};
use serde_json::{Value, json};

use super::FleetError;
use super::connect::{Service, connect, status_error};
use crate::commands::rollout::{PlanFile, RolloutError};
use crate::commands::status_signals::{signals_json, signals_table};
use crate::exit::Exit;
use crate::fleet_cli::{RolloutIdArgs, RolloutStartArgs, RolloutStatusArgs};

/// Artifact upload chunk size.
const CHUNK: usize = 256 * 1024;

/// Final states that are not success.
fn ended_badly(state: &str) -> bool {
    matches!(state, "halted" | "rolled_back" | "aborted")
}

/// Whether a rollout in `state` has ended, well or not.
pub fn is_final(state: &str) -> bool {
    state == "succeeded" || ended_badly(state)
}

/// A rollout as JSON.
pub fn status_json(s: &RolloutStatus) -> Value {
    json!({
        "rollout": s.rollout_id,
        "app": s.app,
        "version": s.version,
        "state": s.state,
        "ring": s.ring,
        "reason": s.reason,
        "bake_left_ms": s.bake_left_ms,
        "started_by": s.started_by,
        "leader": s.leader,
        "epoch": s.epoch,
        "plan_sha256": s.plan_sha256,
        "pending_control": s.pending_control,
        "rings": s.rings.iter().map(|r| json!({
            "index": r.index,
            "name": r.name,
            "hosts": r.hosts.iter().map(|h| json!({
                "agent_id": h.agent_id,
                "action": h.action,
                "step": h.step,
                "job_id": h.job_id,
                "reason": h.reason,
                "signals": signals_json(&h.signals),
                "signals_error": (!h.signals_error.is_empty()).then_some(&h.signals_error),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A rollout as people read it.
pub fn status_text(s: &RolloutStatus) -> String {
    let mut out = format!(
        "rollout {}: {} {} — {} (ring {} of {})\n",
        s.rollout_id,
        s.app,
        s.version,
        s.state,
        s.ring,
        s.rings.len()
    );
    if !s.reason.is_empty() {
        out.push_str(&format!("  {}\n", s.reason));
    }
    if !s.leader.is_empty() {
        out.push_str(&format!("  driven by {} (epoch {})\n", s.leader, s.epoch));
    }
    if s.bake_left_ms > 0 {
        out.push_str(&format!(
            "  baking: {}s left\n",
            (s.bake_left_ms + 999) / 1000
        ));
    }
    if !s.pending_control.is_empty() {
        out.push_str(&format!("  {} requested\n", s.pending_control));
    }
    for r in &s.rings {
        out.push_str(&format!("  ring {} {}:", r.index, r.name));
        if r.hosts.is_empty() {
            out.push_str(" not started\n");
            continue;
        }
        out.push('\n');
        for h in &r.hosts {
            out.push_str(&format!(
                "    {:<16} {:<8} {}",
                h.agent_id, h.action, h.step
            ));
            if !h.reason.is_empty() {
                out.push_str(&format!(" — {}", h.reason));
            }
            out.push('\n');
            host_signals(&mut out, h);
        }
    }
    out
}

/// The host's golden signals as its agent reported them for this call, indented under the
/// host's line; or why they could not be read.
fn host_signals(out: &mut String, h: &HostStatus) {
    if !h.signals_error.is_empty() {
        out.push_str(&format!("      signals unavailable: {}\n", h.signals_error));
        return;
    }
    let mut table = String::new();
    signals_table(&mut table, &h.signals);
    for line in table.lines() {
        out.push_str(&format!("    {line}\n"));
    }
}

/// `j` ([`status_json`]) without what changes at every poll (the bake countdown, the live
/// signals), for `--watch` to print a status only when it changed.
fn without_live(mut j: Value) -> Value {
    if let Some(o) = j.as_object_mut() {
        o.remove("bake_left_ms");
    }
    if let Some(rings) = j["rings"].as_array_mut() {
        for host in rings
            .iter_mut()
            .filter_map(|r| r["hosts"].as_array_mut())
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            host.remove("signals");
            host.remove("signals_error");
        }
    }
    j
}

/// The plan file, read as `rollout show` reads it ([`PlanFile::read`]).
fn read_plan(path: &Path) -> Result<PlanFile, FleetError> {
    PlanFile::read(path).map_err(|e| match e {
        RolloutError::Read { source, .. } => FleetError::Read {
            what: "plan file",
            path: path.to_owned(),
            source,
        },
        other => FleetError::BadPlan {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

async fn upload(svc: &mut Service, path: &Path, plan: &Plan) -> Result<(), FleetError> {
    let read = |source| FleetError::Read {
        what: "artifact",
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(read)?;
    let release = plan.release.clone().unwrap_or_default();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    if sha != release.artifact_sha256 || bytes.len() as u64 != release.artifact_size {
        return Err(FleetError::BadPlan {
            path: path.to_owned(),
            reason: format!(
                "the artifact is sha256:{sha} ({} bytes) but the plan names sha256:{} ({} bytes)",
                bytes.len(),
                release.artifact_sha256,
                release.artifact_size
            ),
        });
    }
    let mut chunks = Vec::new();
    let mut meta = Some(ArtifactRef {
        sha256: sha,
        size: bytes.len() as u64,
    });
    for part in bytes.chunks(CHUNK) {
        chunks.push(ArtifactChunk {
            meta: meta.take(),
            data: part.to_vec(),
            offset: 0,
        });
    }
    if let Some(m) = meta {
        chunks.push(ArtifactChunk {
            meta: Some(m),
            data: Vec::new(),
            offset: 0,
        });
    }
    svc.upload_artifact(tokio_stream::iter(chunks))
        .await
        .map_err(|s| status_error("UploadArtifact", &s))?;
    Ok(())
}

/// `rollout start PLAN [--artifact FILE]`.
///
/// # Errors
/// [`FleetError`].
pub async fn start(args: RolloutStartArgs) -> Result<Exit, FleetError> {
    let PlanFile { signed, plan } = read_plan(&args.plan)?;
    let mut svc = connect(&args.conn).await?;
    if let Some(artifact) = &args.artifact {
        upload(&mut svc, artifact, &plan).await?;
    }
    let status = svc
        .start_rollout(StartRolloutRequest { plan: Some(signed) })
        .await
        .map_err(|s| status_error("StartRollout", &s))?
        .into_inner();
    if args.json {
        println!("{}", status_json(&status));
    } else {
        println!(
            "rollout {} started ({} rings); follow it: gantry rollout status {} --watch",
            status.rollout_id,
            status.rings.len(),
            status.rollout_id
        );
    }
    Ok(Exit::Success)
}

/// `rollout status ID [--watch] [--json]`.
///
/// # Errors
/// [`FleetError`].
pub async fn status(args: RolloutStatusArgs) -> Result<Exit, FleetError> {
    let mut svc = connect(&args.conn).await?;
    let get = |svc: &mut Service| {
        let mut svc = svc.clone();
        let id = args.id.clone();
        async move {
            svc.get_rollout(GetRolloutRequest { rollout_id: id })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| status_error("GetRollout", &s))
        }
    };
    let exit_for = |s: &RolloutStatus| {
        if ended_badly(&s.state) {
            Exit::JobFailed
        } else {
            Exit::Success
        }
    };
    if !args.watch {
        let s = get(&mut svc).await?;
        if args.json {
            println!("{}", status_json(&s));
        } else {
            print!("{}", status_text(&s));
        }
        return Ok(exit_for(&s));
    }
    let live = !args.json && std::io::stdout().is_terminal();
    let mut last: Option<Value> = None;
    loop {
        let s = get(&mut svc).await?;
        // The bake countdown and the signals change every poll; only a live view shows them
        // each time.
        let j = without_live(status_json(&s));
        if live {
            print!("\x1b[2J\x1b[H{}", status_text(&s));
        } else if last.as_ref() != Some(&j) {
            if args.json {
                println!("{}", status_json(&s));
            } else {
                print!("{}", status_text(&s));
            }
        }
        last = Some(j);
        if is_final(&s.state) {
            return Ok(exit_for(&s));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `rollout pause|resume|abort ID`.
///
/// # Errors
/// [`FleetError`].
pub async fn control(args: RolloutIdArgs, control: RolloutControl) -> Result<Exit, FleetError> {
    let mut svc = connect(&args.conn).await?;
    let s = svc
        .control_rollout(ControlRolloutRequest {
            rollout_id: args.id.clone(),
            control: control.into(),
        })
        .await
        .map_err(|s| status_error("ControlRollout", &s))?
        .into_inner();
    if args.json {
        println!("{}", status_json(&s));
    } else {
        let what = match control {
            RolloutControl::Pause => "pause",
            RolloutControl::Resume => "resume",
            RolloutControl::Abort => "abort",
            RolloutControl::Unspecified => "control",
        };
        println!(
            "{what} of rollout {} requested; the service applies it at the next step (gantry rollout status {})",
            s.rollout_id, s.rollout_id
        );
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use gantry_proto::v1::{CohortSignals, RingStatus};

    use super::*;
    use crate::commands::fleet::FleetError;

    fn sample() -> RolloutStatus {
        RolloutStatus {
            rollout_id: "rel-2".into(),
            app: "web".into(),
            version: "2.0.0".into(),
            state: "rolled_back".into(),
            ring: 1,
            reason: "ring 1 (early) failed: host web-3: health check failed".into(),
            leader: "ctl-1".into(),
            epoch: 3,
            rings: vec![
                RingStatus {
                    index: 0,
                    name: "canary".into(),
                    hosts: vec![
                        HostStatus {
                            agent_id: "web-1".into(),
                            action: "deploy".into(),
                            step: "succeeded".into(),
                            signals: vec![CohortSignals {
                                cohort: "stable".into(),
                                window_ms: 60_000,
                                requests: 400,
                                responses: 400,
                                errors: 2,
                                error_rate: 0.005,
                                p95_latency_ms: 50,
                                instances: 2,
                                cpu_percent: 12.0,
                                memory_bytes: 8 << 20,
                                ..CohortSignals::default()
                            }],
                            ..HostStatus::default()
                        },
                        HostStatus {
                            agent_id: "web-2".into(),
                            action: "deploy".into(),
                            step: "succeeded".into(),
                            signals_error: "no answer within 2s".into(),
                            ..HostStatus::default()
                        },
                    ],
                },
                RingStatus {
                    index: 1,
                    name: "early".into(),
                    hosts: vec![],
                },
            ],
            ..RolloutStatus::default()
        }
    }

    #[test]
    fn status_names_the_state_the_failing_host_and_each_ring() {
        let text = status_text(&sample());
        assert!(
            text.starts_with("rollout rel-2: web 2.0.0 — rolled_back (ring 1 of 2)\n"),
            "{text}"
        );
        assert!(text.contains("host web-3: health check failed"), "{text}");
        assert!(text.contains("driven by ctl-1 (epoch 3)"), "{text}");
        assert!(text.contains("ring 0 canary:\n    web-1"), "{text}");
        assert!(text.contains("ring 1 early: not started"), "{text}");
        assert!(text.contains("      signals\n"), "{text}");
        assert!(
            text.contains("0.50%") && text.contains("<= 50 ms") && text.contains("stable"),
            "{text}"
        );
        assert!(
            text.contains("    web-2            deploy   succeeded\n      signals unavailable: no answer within 2s\n"),
            "{text}"
        );
        let j = status_json(&sample());
        assert_eq!(j["state"], "rolled_back");
        assert_eq!(j["rings"][0]["hosts"][0]["agent_id"], "web-1");
        assert_eq!(j["rings"][0]["hosts"][0]["signals"][0]["errors"], 2);
        assert_eq!(j["rings"][0]["hosts"][0]["signals_error"], Value::Null);
        assert_eq!(
            j["rings"][0]["hosts"][1]["signals_error"],
            "no answer within 2s"
        );
        let quiet = without_live(j);
        assert_eq!(quiet["rings"][0]["hosts"][0].get("signals"), None);
        assert_eq!(quiet.get("bake_left_ms"), None);
        assert!(ended_badly("rolled_back") && ended_badly("halted") && ended_badly("aborted"));
        assert!(!ended_badly("succeeded") && is_final("succeeded") && !is_final("paused"));
    }

    #[test]
    fn refusals_of_who_you_are_exit_3_and_input_errors_exit_2() {
        let status = |code| {
            crate::commands::fleet::connect::status_error("X", &tonic::Status::new(code, "no"))
        };
        assert_eq!(status(tonic::Code::PermissionDenied).exit(), Exit::Rejected);
        assert_eq!(status(tonic::Code::AlreadyExists).exit(), Exit::Usage);
        assert_eq!(status(tonic::Code::Unavailable).exit(), Exit::Usage);
        let missing = FleetError::MissingFlag {
            flag: "server",
            env: "GANTRY_SERVER",
        };
        assert_eq!(missing.exit(), Exit::Usage);
        assert_eq!(
            missing.to_string(),
            "missing --server (or $GANTRY_SERVER): needed to reach the controller service"
        );
    }
}
