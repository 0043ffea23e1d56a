//! What the engine needs from the agents, as a trait: run a dispatch to its end, read a
//! host's health, make sure it holds the artifact, read its `Info`; and what the flag
//! distribution needs ([`FlagPush`]). [`crate::dial`] implements them over mutual TLS with
//! gantry-client; the tests use a fake fleet.

use std::collections::BTreeMap;
use std::future::Future;

use gantry_proto::v1::{Checkpoint, DispatchRequest, JobEvent, SignedFlags};

use crate::store::{AgentRecord, CheckpointRecord};

/// How one dispatch ended, as far as the service could see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The agent's job ended succeeded.
    Succeeded,
    /// The agent's job ended failed or rolled back (the agent reverted itself), with its
    /// reason.
    Failed(String),
    /// The agent refused the dispatch (admission), with its reason.
    Refused(String),
    /// The agent could not be reached or the stream broke; worth a retry until the host's
    /// deadline.
    Unreachable(String),
}

/// The end of a run: its outcome and the checkpoint the result carried, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// How it ended.
    pub outcome: RunOutcome,
    /// The agent's signed audit checkpoint after the job.
    pub checkpoint: Option<Checkpoint>,
}

/// A host's health as one `Status` call shows it, for the ring's gates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostHealth {
    /// The release the app runs.
    pub version: String,
    /// Every instance of the app is running.
    pub running: bool,
    /// Instance restarts, summed.
    pub restarts: u64,
    /// Front-door connection errors, summed over backends.
    pub conn_errors: u64,
}

/// What `Info` tells of an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// Its software version.
    pub version: String,
    /// The environment its config names.
    pub environment: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Hears a dispatched job's events (the service logs them; tests count them).
pub trait RunObserver: Send {
    /// One event of the job.
    fn event(&mut self, agent_id: &str, ev: &JobEvent);
}

/// An observer that hears nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl RunObserver for Quiet {
    fn event(&mut self, _agent_id: &str, _ev: &JobEvent) {}
}

/// The agents, as the engine uses them.
pub trait Agents: Send + Sync + 'static {
    /// Sends a dispatch and follows the job to its end (resending the same plan and job is an
    /// attach on the agent, never a second run).
    fn run(
        &self,
        agent: &AgentRecord,
        request: DispatchRequest,
        observer: &mut (dyn RunObserver + '_),
    ) -> impl Future<Output = RunResult> + Send;

    /// The health of `app` on the agent.
    fn health(
        &self,
        agent: &AgentRecord,
        app: &str,
    ) -> impl Future<Output = Result<HostHealth, String>> + Send;

    /// Makes sure the agent holds the artifact (uploads it from the service's store unless
    /// it says it has it).
    fn ensure_artifact(
        &self,
        agent: &AgentRecord,
        sha256: &str,
        size: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The agent's `Info`.
    fn info(&self, agent: &AgentRecord) -> impl Future<Output = Result<AgentFacts, String>> + Send;
}

/// Reads an agent's audit log once its chain, checkpoints under the agent's key and the
/// witnessed checkpoint verify: [`crate::dial::Dialer`] in the service.
pub trait AuditSource: Send + Sync {
    /// The agent's verified audit lines, in order.
    ///
    /// # Errors
    /// Why the log could not be read or does not verify.
    fn verified_lines(
        &self,
        agent: &AgentRecord,
        witnessed: Option<&CheckpointRecord>,
    ) -> impl Future<Output = Result<Vec<String>, String>> + Send;
}

/// How one push of a flag set to an agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The agent admitted it; `unchanged` when it had these bytes in force already.
    Applied {
        /// It was in force already.
        unchanged: bool,
    },
    /// The agent refused it (admission), with its reason.
    Refused(String),
    /// The agent could not be reached, or the call failed on its side; worth a retry.
    Unreachable(String),
}

/// Pushes signed flag sets to agents ([`crate::flag_sets`]).
pub trait FlagPush: Send + Sync + 'static {
    /// Sends `signed` to the agent's `PushFlags`.
    fn push_flags(
        &self,
        agent: &AgentRecord,
        signed: SignedFlags,
    ) -> impl Future<Output = PushOutcome> + Send;
}
