//! The records the service keeps: agents, rollouts and their hosts, leases, and the newest
//! audit checkpoint witnessed from each agent. Plain data, the same in every store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One agent of the inventory: where it is, what it reported in `Info`, whether it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent id (the DNS name in its certificate).
    pub id: String,
    /// host:port the service dials.
    pub addr: String,
    /// The software version it reported; empty until it answered once.
    pub version: String,
    /// The environment its config names; empty if none.
    pub environment: String,
    /// Its labels, as its config gives them.
    pub labels: BTreeMap<String, String>,
    /// Whether the last attempt to reach it succeeded.
    pub reachable: bool,
    /// Unix ms of the last successful `Info`; 0 when never.
    pub last_seen_ms: i64,
    /// Why the last attempt failed; empty when it succeeded.
    pub error: String,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Handed to the service, no ring started yet.
    Pending,
    /// A ring is deploying or baking.
    Running,
    /// An operator paused it: nothing new is dispatched until it is resumed.
    Paused,
    /// Rolling back per `on_failure` or an abort.
    RollingBack,
    /// Every ring passed.
    Succeeded,
    /// A ring failed and `on_failure` said halt.
    Halted,
    /// A ring failed (or an operator aborted) and the hosts were rolled back.
    RolledBack,
    /// An operator aborted it and nothing needed rolling back.
    Aborted,
}

impl RolloutState {
    /// True when nothing more will happen.
    pub fn is_final(self) -> bool {
        match self {
            RolloutState::Succeeded
            | RolloutState::Halted
            | RolloutState::RolledBack
            | RolloutState::Aborted => true,
            RolloutState::Pending
            | RolloutState::Running
            | RolloutState::Paused
            | RolloutState::RollingBack => false,
        }
    }

    /// The name status shows and the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Pending => "pending",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Halted => "halted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }
}

/// A rollout: the signed plan exactly as handed in, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The plan's `plan_id`.
    pub id: String,
    /// The protobuf encoding of the `SignedPlan` (its `plan` field holds the exact signed
    /// bytes, which are never re-encoded).
    pub signed_plan: Vec<u8>,
    /// Lowercase hex SHA-256 of the plan bytes.
    pub plan_sha256: String,
    /// Where it stands.
    pub state: RolloutState,
    /// The ring deploying, baking or rolling back (index into the plan's rings).
    pub ring: u32,
    /// Unix ms when the current ring's bake ends; 0 when not baking.
    pub bake_until_ms: i64,
    /// While rolling back: the lowest ring to roll back (rings `ring` down to this one).
    #[serde(default)]
    pub rollback_to: u32,
    /// While baking: what each host's gate counters showed since the bake began, by agent id,
    /// so a driver that resumes the bake (a restart, a takeover) counts on from there.
    #[serde(default)]
    pub bake_counts: BTreeMap<String, BakeCounts>,
    /// Why it is where it is (the failing host and its reason, who paused it ...).
    pub reason: String,
    /// The operator (client certificate name) who started it.
    pub started_by: String,
    /// Unix ms of creation.
    pub created_ms: i64,
    /// Unix ms of the last change.
    pub updated_ms: i64,
}

/// One host's gate counters over a ring's bake.
///
/// The agent's counters start again from 0 when it or the instance restarts, so the service
/// does not subtract a baseline: it adds up what each reading grew by, and a reading lower than
/// the last one counts in full (the counter was reset and everything on it is new).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BakeCounts {
    /// Instance restarts counted since the bake began.
    pub restarts: u64,
    /// Front-door connection errors counted since the bake began.
    pub conn_errors: u64,
    /// The restart counter as last read.
    pub last_restarts: u64,
    /// The connection-error counter as last read.
    pub last_conn_errors: u64,
}

impl BakeCounts {
    /// Counts from a first reading: nothing counted yet.
    pub fn first(restarts: u64, conn_errors: u64) -> Self {
        BakeCounts {
            restarts: 0,
            conn_errors: 0,
            last_restarts: restarts,
            last_conn_errors: conn_errors,
        }
    }

    /// Counts on with a later reading.
    #[must_use]
    pub fn read(self, restarts: u64, conn_errors: u64) -> Self {
        BakeCounts {
            restarts: self
                .restarts
                .saturating_add(grown(self.last_restarts, restarts)),
            conn_errors: self
                .conn_errors
                .saturating_add(grown(self.last_conn_errors, conn_errors)),
            last_restarts: restarts,
            last_conn_errors: conn_errors,
        }
    }
}

/// What a counter grew by from `last` to `now`; all of `now` when it was reset in between.
fn grown(last: u64, now: u64) -> u64 {
    if now >= last { now - last } else { now }
}

/// What the service last asked one host to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAction {
    /// Deploy the plan's release.
    Deploy,
    /// Return to what the plan replaced.
    Rollback,
}

/// Where one host's step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStep {
    /// Not dispatched yet.
    Pending,
    /// Dispatched; the agent's job runs (or is being attached to again).
    Running,
    /// The job ended succeeded.
    Succeeded,
    /// The job failed, was refused, or the host did not answer before its deadline.
    Failed,
    /// The service stopped while the job ran; it is resumed from the agent's own status.
    Interrupted,
}

impl HostStep {
    /// The name status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStep::Pending => "pending",
            HostStep::Running => "running",
            HostStep::Succeeded => "succeeded",
            HostStep::Failed => "failed",
            HostStep::Interrupted => "interrupted",
        }
    }
}

/// One host of one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The rollout.
    pub rollout_id: String,
    /// The agent.
    pub agent_id: String,
    /// The ring it belongs to.
    pub ring: u32,
    /// What it was last asked.
    pub action: HostAction,
    /// How that stands.
    pub step: HostStep,
    /// The deterministic job id of that action (`fleet::job_id`).
    pub job_id: String,
    /// Why it failed, or the last step the agent reported.
    pub reason: String,
    /// Unix ms of the last change.
    pub updated_ms: i64,
}

/// Who drives a rollout, and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The rollout.
    pub rollout_id: String,
    /// The replica holding it.
    pub holder: String,
    /// Only grows; every dispatch carries it and the agents refuse a lower one.
    pub epoch: u64,
    /// Unix ms after which another replica may take it.
    pub expires_ms: i64,
}

/// The newest signed audit checkpoint witnessed from one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The agent.
    pub agent_id: String,
    /// The agent's audit key id.
    pub key_id: String,
    /// The checkpoint's seq.
    pub seq: u64,
    /// Its exact line.
    pub line: String,
}

/// What an operator asked of a rollout, waiting for its driver to act on it. Written by any
/// replica (not fenced: the one holding the lease applies it and clears it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Stop dispatching after the steps in flight.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Stop dispatching and roll back per the current ring's `on_failure`.
    Abort,
}

impl Control {
    /// The name the CLI and the audit log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Abort => "abort",
        }
    }
}

/// A pending operator request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The rollout.
    pub rollout_id: String,
    /// What was asked.
    pub control: Control,
    /// Who asked (client certificate name).
    pub by: String,
    /// Unix ms when.
    pub at_ms: i64,
}

/// The flag set the service distributes for one app: the newest version handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSetRecord {
    /// The app.
    pub app: String,
    /// The document's version (only grows per app).
    pub version: u64,
    /// The `SignedFlags` protobuf as handed in, hex.
    pub signed_hex: String,
    /// Lowercase hex SHA-256 of the document's bytes.
    pub digest: String,
    /// When it was handed in, Unix ms.
    pub published_ms: i64,
    /// The operator who handed it in.
    pub published_by: String,
}

/// Where a delivery of a flag set to one agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The agent admitted the version, or had it in force already.
    Applied,
    /// The agent refused it: not tried again.
    Refused,
    /// Not delivered yet: tried again.
    Pending,
    /// The document's validity ended before the agent could be reached: not tried again.
    Expired,
}

impl DeliveryState {
    /// The name on the wire and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Applied => "applied",
            DeliveryState::Refused => "refused",
            DeliveryState::Pending => "pending",
            DeliveryState::Expired => "expired",
        }
    }
}

/// One agent's delivery of an app's flag set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagDeliveryRecord {
    /// The app.
    pub app: String,
    /// The agent.
    pub agent_id: String,
    /// The version this state is about.
    pub version: u64,
    /// Where it stands.
    pub state: DeliveryState,
    /// The agent's refusal, or why it could not be reached; empty when applied.
    pub detail: String,
    /// When this state was reached, Unix ms.
    pub at_ms: i64,
    /// Attempts at this version.
    pub attempts: u32,
}
