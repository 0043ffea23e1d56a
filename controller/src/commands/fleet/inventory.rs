//! `fleet ls` and `fleet audit verify|tail`.

use gantry_proto::v1::{
    AuditTailRequest, FleetAuditTailRequest, ListAgentsRequest, VerifyFleetAuditRequest,
};
use serde_json::json;

use super::FleetError;
use super::connect::{connect, status_error};
use crate::exit::Exit;
use crate::fleet_cli::{FleetLsArgs, FleetTailArgs};

/// `fleet ls`.
///
/// # Errors
/// [`FleetError`].
pub async fn ls(args: FleetLsArgs) -> Result<Exit, FleetError> {
    let mut svc = connect(&args.conn).await?;
    let agents = svc
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|s| status_error("ListAgents", &s))?
        .into_inner()
        .agents;
    for a in &agents {
        let mut labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        if args.json {
            println!(
                "{}",
                json!({
                    "agent_id": a.agent_id, "addr": a.addr, "version": a.version,
                    "environment": a.environment, "labels": a.labels, "reachable": a.reachable,
                    "last_seen_ms": a.last_seen_ms, "error": a.error,
                    "checkpoint_seq": a.checkpoint_seq, "mode": a.mode,
                    "connected": a.connected, "connected_since_ms": a.connected_since_ms,
                    "rtt_us": a.rtt_us,
                })
            );
        } else {
            println!(
                "{:<16} {:<21} {:<8} {:<12} {:<24} {} checkpoint {} {}{}",
                a.agent_id,
                a.addr,
                if a.version.is_empty() {
                    "-"
                } else {
                    &a.version
                },
                if a.environment.is_empty() {
                    "-"
                } else {
                    &a.environment
                },
                labels.join(","),
                if a.reachable {
                    "reachable"
                } else {
                    "UNREACHABLE"
                },
                a.checkpoint_seq,
                link_text(a, gantry_client::clock::now_ms()),
                if a.error.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", a.error)
                },
            );
        }
    }
    Ok(Exit::Success)
}

/// The connection columns: mode, state, last seen and round-trip time.
fn link_text(a: &gantry_proto::v1::FleetAgent, now_ms: i64) -> String {
    let seen = if a.last_seen_ms > 0 {
        let ago = now_ms.saturating_sub(a.last_seen_ms).max(0);
        format!("{:.1}s ago", ago as f64 / 1000.0)
    } else {
        "never".to_owned()
    };
    let rtt = if a.rtt_us > 0 {
        format!("{:.2}ms", a.rtt_us as f64 / 1000.0)
    } else {
        "-".to_owned()
    };
    let mode = if a.mode.is_empty() { "listen" } else { &a.mode };
    let state = if a.connected {
        "connected"
    } else {
        "DISCONNECTED"
    };
    format!("mode {mode} {state} seen {seen} rtt {rtt}")
}

/// `fleet audit verify`: 0 when every agent's log verifies, 1 otherwise.
///
/// # Errors
/// [`FleetError`].
pub async fn verify(args: FleetLsArgs) -> Result<Exit, FleetError> {
    let mut svc = connect(&args.conn).await?;
    let verdicts = svc
        .verify_fleet_audit(VerifyFleetAuditRequest {})
        .await
        .map_err(|s| status_error("VerifyFleetAudit", &s))?
        .into_inner()
        .agents;
    let mut all_ok = true;
    for v in &verdicts {
        all_ok &= v.ok;
        if args.json {
            println!(
                "{}",
                json!({"agent_id": v.agent_id, "ok": v.ok, "entries": v.entries,
                       "witnessed_seq": v.witnessed_seq, "error": v.error})
            );
        } else if v.ok {
            println!(
                "{}: ok, {} entries, witnessed checkpoint seq {} present",
                v.agent_id, v.entries, v.witnessed_seq
            );
        } else {
            println!("{}: FAILED: {}", v.agent_id, v.error);
        }
    }
    if !args.json {
        println!(
            "fleet audit: {} of {} agents verify",
            verdicts.iter().filter(|v| v.ok).count(),
            verdicts.len()
        );
    }
    Ok(if all_ok {
        Exit::Success
    } else {
        Exit::JobFailed
    })
}

/// `fleet audit tail [-f]`: the agents' logs interleaved (or the service's own).
///
/// # Errors
/// [`FleetError`].
pub async fn tail(args: FleetTailArgs) -> Result<Exit, FleetError> {
    if !args.service {
        return tail_agents(args).await;
    }
    let mut svc = connect(&args.conn).await?;
    let mut stream = svc
        .service_audit_tail(AuditTailRequest {
            from_seq: 0,
            last: args.last,
            follow: args.follow,
        })
        .await
        .map_err(|s| status_error("ServiceAuditTail", &s))?
        .into_inner();
    while let Some(line) = stream
        .message()
        .await
        .map_err(|s| status_error("ServiceAuditTail", &s))?
    {
        if args.json {
            println!("{}", line.line);
        } else {
            println!("{}", gantry_proto::audit_line::format_human(&line.line));
        }
    }
    Ok(Exit::Success)
}

async fn tail_agents(args: FleetTailArgs) -> Result<Exit, FleetError> {
    let mut svc = connect(&args.conn).await?;
    let mut stream = svc
        .fleet_audit_tail(FleetAuditTailRequest {
            last: args.last,
            follow: args.follow,
        })
        .await
        .map_err(|s| status_error("FleetAuditTail", &s))?
        .into_inner();
    let mut bad = false;
    while let Some(l) = stream
        .message()
        .await
        .map_err(|s| status_error("FleetAuditTail", &s))?
    {
        bad |= !l.error.is_empty();
        if args.json {
            let entry: serde_json::Value =
                serde_json::from_str(&l.line).unwrap_or(serde_json::Value::Null);
            println!(
                "{}",
                json!({"agent_id": l.agent_id, "seq": l.seq, "entry": entry, "error": l.error})
            );
        } else if l.line.is_empty() {
            println!("{:<16} !! {}", l.agent_id, l.error);
        } else if l.error.is_empty() {
            println!(
                "{:<16} {}",
                l.agent_id,
                gantry_proto::audit_line::format_human(&l.line)
            );
        } else {
            println!(
                "{:<16} {}  !! {}",
                l.agent_id,
                gantry_proto::audit_line::format_human(&l.line),
                l.error
            );
        }
    }
    Ok(if bad { Exit::JobFailed } else { Exit::Success })
}
