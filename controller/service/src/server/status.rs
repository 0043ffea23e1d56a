//! Records to the wire: a rollout with its rings and hosts, an agent of the inventory; and the
//! store's, plan's and flag set's errors to gRPC statuses (one exhaustive match each).

use gantry_client::clock::now_ms;
use gantry_proto::v1::{FleetAgent, HostStatus, RingStatus, RolloutStatus};

use crate::flag_sets::FlagSetError;
use crate::plan::{LoadedPlan, PlanError};
use crate::sessions::LinkState;
use crate::store::{
    AgentRecord, CheckpointRecord, ControlRequest, HostAction, HostRecord, Lease, RolloutRecord,
    StoreError,
};

/// A rollout as `rollout status` shows it.
pub fn rollout_status(
    r: &RolloutRecord,
    hosts: &[HostRecord],
    lease: Option<&Lease>,
    control: Option<&ControlRequest>,
) -> RolloutStatus {
    let plan = LoadedPlan::decode(&r.signed_plan).ok();
    let rings = plan
        .as_ref()
        .map(|p| {
            p.plan
                .rings
                .iter()
                .enumerate()
                .map(|(i, ring)| {
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    RingStatus {
                        index,
                        name: ring.name.clone(),
                        hosts: hosts
                            .iter()
                            .filter(|h| h.ring == index)
                            .map(|h| HostStatus {
                                agent_id: h.agent_id.clone(),
                                action: match h.action {
                                    HostAction::Deploy => "deploy".into(),
                                    HostAction::Rollback => "rollback".into(),
                                },
                                step: h.step.as_str().into(),
                                job_id: h.job_id.clone(),
                                reason: h.reason.clone(),
                                updated_ms: h.updated_ms,
                                // Live data, filled in by GetRollout alone.
                                signals: Vec::new(),
                                signals_error: String::new(),
                            })
                            .collect(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let release = plan
        .as_ref()
        .and_then(|p| p.plan.release.clone())
        .unwrap_or_default();
    RolloutStatus {
        rollout_id: r.id.clone(),
        app: plan
            .as_ref()
            .map(|p| p.plan.app.clone())
            .unwrap_or_default(),
        version: release.version,
        state: r.state.as_str().into(),
        ring: r.ring,
        reason: r.reason.clone(),
        bake_left_ms: if r.bake_until_ms > 0 && !r.state.is_final() {
            (r.bake_until_ms - now_ms()).max(0)
        } else {
            0
        },
        started_by: r.started_by.clone(),
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        rings,
        leader: lease.map(|l| l.holder.clone()).unwrap_or_default(),
        epoch: lease.map_or(0, |l| l.epoch),
        plan_sha256: r.plan_sha256.clone(),
        pending_control: control
            .map(|c| c.control.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// An agent as `fleet ls` shows it; `link` is its dial-in session's state when it dials in.
pub fn fleet_agent(
    a: &AgentRecord,
    cp: Option<&CheckpointRecord>,
    link: Option<&LinkState>,
) -> FleetAgent {
    let mut out = FleetAgent {
        agent_id: a.id.clone(),
        addr: a.addr.clone(),
        version: a.version.clone(),
        environment: a.environment.clone(),
        labels: a.labels.clone().into_iter().collect(),
        reachable: a.reachable,
        last_seen_ms: a.last_seen_ms,
        error: a.error.clone(),
        checkpoint_seq: cp.map_or(0, |c| c.seq),
        mode: "listen".to_owned(),
        connected: a.reachable,
        connected_since_ms: 0,
        rtt_us: 0,
    };
    if let Some(l) = link {
        out.mode = "dial".to_owned();
        out.connected = l.connected;
        out.reachable = l.connected;
        out.connected_since_ms = l.connected_since_ms;
        out.rtt_us = l.rtt_us;
        out.last_seen_ms = out.last_seen_ms.max(l.last_seen_ms);
        if l.connected {
            out.addr = format!("{} (dialled in)", l.peer);
            out.error.clear();
        } else {
            out.addr = "(dials in)".to_owned();
            if out.error.is_empty() || a.reachable {
                out.error = "not connected".to_owned();
            }
        }
    }
    out
}

/// A store failure as a gRPC status.
pub fn store_status(e: &StoreError) -> tonic::Status {
    match e {
        StoreError::Exists(_) => tonic::Status::already_exists(e.to_string()),
        StoreError::NotFound(_) => tonic::Status::not_found(e.to_string()),
        StoreError::Fenced { .. } => tonic::Status::aborted(e.to_string()),
        StoreError::FlagsSuperseded { .. } => tonic::Status::failed_precondition(e.to_string()),
        StoreError::Locked { .. }
        | StoreError::Embedded { .. }
        | StoreError::Postgres(_)
        | StoreError::SchemaTooNew { .. }
        | StoreError::Corrupt { .. } => tonic::Status::unavailable(e.to_string()),
    }
}

/// A plan that cannot be run, as a gRPC status.
pub fn plan_status(e: &PlanError) -> tonic::Status {
    match e {
        PlanError::Decode(_) | PlanError::Invalid { .. } => {
            tonic::Status::invalid_argument(e.to_string())
        }
        PlanError::Unsigned(_) => tonic::Status::failed_precondition(e.to_string()),
    }
}

/// A flag set that cannot be distributed, as a gRPC status.
pub fn flag_set_status(e: &FlagSetError) -> tonic::Status {
    let text = e.to_string();
    match e {
        FlagSetError::Decode(_)
        | FlagSetError::Invalid { .. }
        | FlagSetError::Definition { .. } => tonic::Status::invalid_argument(text),
        FlagSetError::Unsigned(_) | FlagSetError::Expired { .. } => {
            tonic::Status::failed_precondition(text)
        }
        FlagSetError::NoSuchApp(_) => tonic::Status::not_found(text),
        FlagSetError::Store(e) => store_status(e),
        FlagSetError::Audit(_) => tonic::Status::unavailable(format!("refused: {text}")),
    }
}
