//! Submitting a signed job and following its events to the end; re-attaching with `Watch` when
//! the stream drops, and witnessing the audit checkpoint the result carries.

use std::time::Duration;

use gantry_proto::keys::{KeyError, PublicKey};
use gantry_proto::v1::{
    AuditTailRequest, Checkpoint, InfoRequest, JobEvent, JobFinished, Outcome, SignedJob,
    WatchRequest, job_event,
};

use crate::clock;
use crate::connect::{Agent, ClientError};
use crate::fault::Fault;
use crate::witness::{self, WitnessAlarm, WitnessError, Witnessed};

/// How many times a dropped event stream is re-attached before giving up.
pub const REATTACH_ATTEMPTS: u32 = 5;

/// Why a job could not be handed over or followed to its end.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The agent refused or failed the call, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The job is not signed.
    #[error("job {job_id} has no signatures; sign it first: gantry job sign --key KEY FILE")]
    Unsigned {
        /// The job.
        job_id: String,
    },
    /// The event stream kept dropping.
    #[error(
        "lost the event stream of job {job_id} {attempts} times; the job may still be running (see: gantry job watch {job_id})"
    )]
    Lost {
        /// The job.
        job_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last cause.
        #[source]
        source: Option<ClientError>,
    },
}

impl FollowError {
    /// Whose side the failure is on.
    pub fn fault(&self) -> Fault {
        match self {
            FollowError::Client(e) => e.fault(),
            FollowError::Unsigned { .. } => Fault::Input,
            FollowError::Lost { .. } => Fault::Connection,
        }
    }
}

/// Hears a job's events while it is followed.
pub trait FollowObserver {
    /// One event, in order; an event seen before a re-attach is not repeated.
    fn event(&mut self, ev: &JobEvent);
    /// The stream dropped: re-attaching to `job_id` after `delay`, attempt `attempt` of
    /// [`REATTACH_ATTEMPTS`].
    fn reattaching(&mut self, job_id: &str, delay: Duration, attempt: u32);
}

/// A job followed to its end.
#[derive(Debug)]
pub struct Followed {
    /// How it ended (`Unspecified` for a value this build does not know).
    pub outcome: Outcome,
    /// Its finished event.
    pub finished: JobFinished,
    /// What became of the checkpoint the result carried.
    pub witness: WitnessOutcome,
}

/// What became of the checkpoint a job's result carried.
#[derive(Debug)]
pub enum WitnessOutcome {
    /// The result carried none.
    NoCheckpoint,
    /// It verifies and extends the witnessed one (or is the first under this key): kept.
    Kept {
        /// Its seq.
        seq: u64,
        /// The seq witnessed before, if any.
        previous: Option<u64>,
    },
    /// It could not be checked or stored: the job's result stands, the caller warns.
    NotWitnessed(NotWitnessed),
    /// It does not extend the witnessed checkpoint (or is not the agent's): the agent's log
    /// cannot be trusted. The old witness is kept.
    Alarm(WitnessAlarm),
}

/// A checkpoint that could not be kept as witness: the job's result stands, the caller warns.
#[derive(Debug)]
pub struct NotWitnessed {
    /// The checkpoint's seq.
    pub seq: u64,
    /// Why it was not kept.
    pub error: NotWitnessedCause,
}

/// Why a checkpoint could not be checked or kept.
#[derive(Debug, thiserror::Error)]
pub enum NotWitnessedCause {
    /// The witness store could not be used.
    #[error(transparent)]
    Store(#[from] WitnessError),
    /// The agent's key or its audit lines could not be fetched for the check.
    #[error("cannot fetch what the witness check needs")]
    Client(#[from] ClientError),
    /// The agent reported a public key that does not parse.
    #[error("the agent reported an invalid audit public key")]
    AgentKey(#[source] KeyError),
}

/// Submits a signed job and follows it to its end.
///
/// Before the agent has accepted the job, a broken connection is retried by resubmitting the
/// identical bytes (the agent treats that as re-attaching); after, by `Watch`. Events already
/// seen are skipped by `seq`.
///
/// # Errors
///
/// [`FollowError`]: no signature, a refusal or failure on the agent's side, or a connection
/// that keeps failing.
pub async fn submit_and_follow(
    agent: &Agent,
    signed: &SignedJob,
    job_id: &str,
    observer: &mut impl FollowObserver,
) -> Result<Followed, FollowError> {
    if signed.signatures.is_empty() {
        return Err(FollowError::Unsigned {
            job_id: job_id.to_owned(),
        });
    }
    match follow(agent, job_id, Some(signed), observer, Until::Finished).await? {
        Ended::Finished(f) => Ok(f),
        Ended::Accepted { .. } => unreachable_accepted(job_id),
    }
}

/// Where a detached submit left the job.
#[derive(Debug)]
pub enum Detached {
    /// The agent accepted it and runs it on its own.
    Accepted {
        /// The job's id (as the agent names it).
        job_id: String,
    },
    /// It had already ended (the identical bytes were submitted before).
    Finished(Followed),
}

/// Submits a signed job and returns once the agent has accepted it (or says it already
/// ended); the job goes on without the caller.
///
/// # Errors
///
/// [`FollowError`], as [`submit_and_follow`].
pub async fn submit_detached(
    agent: &Agent,
    signed: &SignedJob,
    job_id: &str,
    observer: &mut impl FollowObserver,
) -> Result<Detached, FollowError> {
    if signed.signatures.is_empty() {
        return Err(FollowError::Unsigned {
            job_id: job_id.to_owned(),
        });
    }
    Ok(
        match follow(agent, job_id, Some(signed), observer, Until::Accepted).await? {
            Ended::Finished(f) => Detached::Finished(f),
            Ended::Accepted { job_id } => Detached::Accepted { job_id },
        },
    )
}

/// `follow` with [`Until::Finished`] returns nothing else; kept out of the `match` arms as a
/// typed error rather than a panic.
fn unreachable_accepted<T>(job_id: &str) -> Result<T, FollowError> {
    Err(FollowError::Lost {
        job_id: job_id.to_owned(),
        attempts: 0,
        source: None,
    })
}

/// Follows a job by id (`Watch`) to its end.
///
/// # Errors
///
/// [`FollowError`]: an unknown job, or a connection that keeps failing.
pub async fn watch(
    agent: &Agent,
    job_id: &str,
    observer: &mut impl FollowObserver,
) -> Result<Followed, FollowError> {
    match follow(agent, job_id, None, observer, Until::Finished).await? {
        Ended::Finished(f) => Ok(f),
        Ended::Accepted { .. } => unreachable_accepted(job_id),
    }
}

/// How far to follow a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Until the agent accepted it.
    Accepted,
    /// To its end.
    Finished,
}

/// Where following stopped.
enum Ended {
    Accepted { job_id: String },
    Finished(Followed),
}

async fn follow(
    agent: &Agent,
    job_id: &str,
    submit: Option<&SignedJob>,
    observer: &mut impl FollowObserver,
    until: Until,
) -> Result<Ended, FollowError> {
    let mut job_id = job_id.to_owned();
    let mut progress = Progress::default();
    let mut accepted = submit.is_none();
    let mut last_error: Option<ClientError> = None;
    loop {
        if progress.failures > 0 {
            if progress.exhausted() {
                return Err(FollowError::Lost {
                    job_id: job_id.to_owned(),
                    attempts: progress.failures - 1,
                    source: last_error,
                });
            }
            let delay = progress.delay();
            observer.reattaching(&job_id, delay, progress.failures);
            tokio::time::sleep(delay).await;
        }
        let (op, call) = match submit {
            Some(signed) if !accepted => {
                ("Submit", agent.client.clone().submit(signed.clone()).await)
            }
            _ => (
                "Watch",
                agent
                    .client
                    .clone()
                    .watch(WatchRequest {
                        job_id: job_id.to_owned(),
                    })
                    .await,
            ),
        };
        let mut stream = match call {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = agent.error(op, status);
                if e.is_transport() {
                    progress.failed();
                    last_error = Some(e);
                    continue;
                }
                return Err(e.into());
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    if progress.take(&ev) == Take::Seen {
                        continue;
                    }
                    if !ev.job_id.is_empty() && ev.job_id != job_id {
                        job_id = ev.job_id.clone();
                    }
                    let is_accepted = matches!(ev.kind, Some(job_event::Kind::Accepted(_)));
                    accepted |= is_accepted;
                    observer.event(&ev);
                    if let Some(job_event::Kind::Finished(f)) = ev.kind {
                        return Ok(Ended::Finished(finished(agent, f).await));
                    }
                    if is_accepted && until == Until::Accepted {
                        return Ok(Ended::Accepted { job_id });
                    }
                }
                Ok(None) => {
                    progress.failed();
                    last_error = None;
                    break;
                }
                Err(status) => {
                    let e = agent.error(op, status);
                    if !e.is_transport() {
                        return Err(e.into());
                    }
                    progress.failed();
                    last_error = Some(e);
                    break;
                }
            }
        }
    }
}

/// What to do with one event of a followed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Show it: it is new, or it ends the job.
    Show,
    /// Skip it: shown before a re-attach.
    Seen,
}

/// Where following a job stands: the last event shown, and the failures since it.
///
/// An agent restarted mid-job numbers the job's events afresh (its `finished` event may carry
/// seq 1 after the controller saw 7), so a `finished` event always ends the follow whatever its
/// seq; and only a new event counts as progress, so a stream that keeps dropping after
/// replaying old events still reaches [`REATTACH_ATTEMPTS`].
#[derive(Debug, Default)]
struct Progress {
    last_seq: u64,
    /// Consecutive failures without a new event.
    failures: u32,
}

impl Progress {
    fn take(&mut self, ev: &JobEvent) -> Take {
        let ends = matches!(ev.kind, Some(job_event::Kind::Finished(_)));
        if !ends && self.last_seq > 0 && ev.seq <= self.last_seq {
            return Take::Seen;
        }
        self.last_seq = self.last_seq.max(ev.seq);
        self.failures = 0;
        Take::Show
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    fn exhausted(&self) -> bool {
        self.failures > REATTACH_ATTEMPTS
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(250 * (1 << self.failures.min(5)))
    }
}

/// A finished event: witnesses its checkpoint.
async fn finished(agent: &Agent, f: JobFinished) -> Followed {
    let witness = match &f.checkpoint {
        None => WitnessOutcome::NoCheckpoint,
        Some(cp) => match witness_checkpoint(agent, cp).await {
            Ok(Ok(previous)) => WitnessOutcome::Kept {
                seq: cp.seq,
                previous,
            },
            Ok(Err(alarm)) => WitnessOutcome::Alarm(alarm),
            Err(error) => WitnessOutcome::NotWitnessed(NotWitnessed { seq: cp.seq, error }),
        },
    };
    Followed {
        outcome: Outcome::try_from(f.outcome).unwrap_or(Outcome::Unspecified),
        finished: f,
        witness,
    }
}

/// The agent's audit-signing key, as it reports it.
///
/// # Errors
///
/// [`NotWitnessedCause`]: the call failed or the key does not parse.
pub async fn agent_key(agent: &Agent) -> Result<PublicKey, NotWitnessedCause> {
    let info = agent
        .client
        .clone()
        .info(InfoRequest {})
        .await
        .map_err(|s| agent.error("Info", s))?
        .into_inner();
    PublicKey::from_spki_pem(&info.public_key_pem).map_err(NotWitnessedCause::AgentKey)
}

/// The agent's raw audit lines from `from_seq` to the end, or (with `from_seq` 0) its last
/// `last` lines.
///
/// # Errors
///
/// [`ClientError`] when the agent cannot be reached or refuses the tail.
pub async fn audit_lines(
    agent: &Agent,
    from_seq: u64,
    last: u32,
) -> Result<Vec<String>, ClientError> {
    let mut stream = agent
        .client
        .clone()
        .audit_tail(AuditTailRequest {
            from_seq,
            last,
            follow: false,
        })
        .await
        .map_err(|s| agent.error("AuditTail", s))?
        .into_inner();
    let mut lines = Vec::new();
    while let Some(l) = stream
        .message()
        .await
        .map_err(|s| agent.error("AuditTail", s))?
    {
        lines.push(l.line);
    }
    Ok(lines)
}

/// Checks `cp` against the witness of this agent and its key and keeps it if it moves the
/// witness forward: `Ok(Ok(previous seq))` when kept, `Ok(Err(alarm))` when it does not extend
/// the witnessed chain (the old witness stays), `Err` when the check could not be made.
async fn witness_checkpoint(
    agent: &Agent,
    cp: &Checkpoint,
) -> Result<Result<Option<u64>, WitnessAlarm>, NotWitnessedCause> {
    let dir = agent
        .witness_dir
        .as_deref()
        .ok_or(WitnessError::NoStateDir)?;
    let key = agent_key(agent).await?;
    if let Err(alarm) = witness::check_checkpoint(cp.seq, &cp.line, &key) {
        return Ok(Err(alarm));
    }
    let key_id = key.key_id();
    let old = witness::load(dir, &agent.agent_id, &key_id)?;
    if let Some(old) = &old {
        if old.seq == cp.seq && old.line == cp.line {
            return Ok(Ok(Some(old.seq)));
        }
        let lines = if cp.seq < old.seq {
            Vec::new()
        } else {
            audit_lines(agent, old.seq, 0).await?
        };
        if let Err(alarm) = witness::check_extends(old, cp.seq, &cp.line, &lines, &key) {
            return Ok(Err(alarm));
        }
    }
    witness::store(
        dir,
        &Witnessed {
            agent_id: agent.agent_id.clone(),
            key_id: key_id.to_string(),
            seq: cp.seq,
            line: cp.line.clone(),
            received_ms: clock::now_ms(),
        },
    )?;
    Ok(Ok(old.map(|o| o.seq)))
}

#[cfg(test)]
mod tests {
    use gantry_proto::v1::JobStep;

    use super::*;

    fn step(seq: u64) -> JobEvent {
        JobEvent {
            job_id: "j1".into(),
            seq,
            ts_ms: 0,
            kind: Some(job_event::Kind::Step(JobStep::default())),
        }
    }

    fn finished_event(seq: u64) -> JobEvent {
        JobEvent {
            job_id: "j1".into(),
            seq,
            ts_ms: 0,
            kind: Some(job_event::Kind::Finished(JobFinished {
                outcome: Outcome::Interrupted as i32,
                ..JobFinished::default()
            })),
        }
    }

    /// Issue 10 item 4b: the agent restarted mid-job sends the job's one `finished` event as
    /// seq 1; it ends the follow instead of being skipped as seen.
    #[test]
    fn a_finished_event_numbered_afresh_after_a_restart_ends_the_follow() {
        let mut p = Progress::default();
        for seq in 1..=7 {
            assert_eq!(p.take(&step(seq)), Take::Show);
        }
        assert_eq!(p.take(&step(3)), Take::Seen);
        assert_eq!(p.take(&finished_event(1)), Take::Show);
    }

    /// Issue 10 item 4b: replayed events are not progress, so a stream that replays them and
    /// drops again still runs out of attempts.
    #[test]
    fn replayed_events_do_not_reset_the_retry_limit() {
        let mut p = Progress::default();
        for seq in 1..=4 {
            p.take(&step(seq));
        }
        let mut rounds = 0;
        while !p.exhausted() {
            p.failed();
            for seq in 1..=4 {
                assert_eq!(p.take(&step(seq)), Take::Seen);
            }
            rounds += 1;
            assert!(
                rounds <= REATTACH_ATTEMPTS + 1,
                "the retry limit never held"
            );
        }
        assert_eq!(rounds, REATTACH_ATTEMPTS + 1);
        // A new event is progress: the count starts again.
        assert_eq!(p.take(&step(5)), Take::Show);
        assert!(!p.exhausted());
        assert_eq!(p.failures, 0);
    }
}
