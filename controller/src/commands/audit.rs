//! `gantry audit tail` and `gantry audit verify`: the agent's audit log, checked on this side.

use gantry_client::follow::{self, NotWitnessedCause};
use gantry_client::witness::{self, WitnessError};
use gantry_client::{Agent, ClientError};
use gantry_proto::audit_chain;
use gantry_proto::keys::{KeyError, PublicKey};
use gantry_proto::v1::{AuditLine, AuditTailRequest};
use tonic::Streaming;

use crate::cli::{AuditTailArgs, AuditVerifyArgs};
use crate::conn::{self, ConnError};
use crate::exit::Exit;
use crate::output::short;

/// Why the audit log could not be fetched or checked (a log that fails the check is not an
/// error: it is reported and ends with exit 1).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The connection flags are incomplete.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `--pubkey` could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The agent reported a public key that does not parse.
    #[error("the agent reported an invalid audit public key")]
    AgentKey(#[source] KeyError),
    /// The witness file could not be used.
    #[error(transparent)]
    Witness(#[from] WitnessError),
}

impl AuditError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            AuditError::Conn(e) => e.exit(),
            AuditError::Client(e) => e.fault().into(),
            AuditError::Key(_) | AuditError::Witness(_) => Exit::Usage,
            AuditError::AgentKey(_) => Exit::Rejected,
        }
    }
}

/// One audit line for people, as `gantry-agent audit tail` prints it:
/// `ts  #seq  event  key=value ...` (see [`gantry_proto::audit_line::format_human`]).
pub fn readable(line: &str) -> String {
    gantry_proto::audit_line::format_human(line)
}

/// `gantry audit tail`.
///
/// # Errors
///
/// [`AuditError`].
pub async fn tail(args: AuditTailArgs) -> Result<Exit, AuditError> {
    let settings = conn::settings(&args.conn)?;
    let agent = Agent::connect(&settings).await?;
    let req = AuditTailRequest {
        from_seq: 0,
        last: args.lines,
        follow: args.follow,
    };
    let mut stream = open_tail(&agent, req).await?;
    while let Some(line) = stream
        .message()
        .await
        .map_err(|s| agent.error("AuditTail", s))?
    {
        if args.json {
            println!("{}", line.line);
        } else {
            println!("{}", readable(&line.line));
        }
    }
    Ok(Exit::Success)
}

/// Opens the agent's `AuditTail` stream for `req`.
async fn open_tail(
    agent: &Agent,
    req: AuditTailRequest,
) -> Result<Streaming<AuditLine>, ClientError> {
    Ok(agent
        .client
        .clone()
        .audit_tail(req)
        .await
        .map_err(|s| agent.error("AuditTail", s))?
        .into_inner())
}

/// Every audit line from seq 1.
///
/// # Errors
///
/// [`ClientError`].
pub async fn fetch_all(agent: &Agent) -> Result<Vec<String>, ClientError> {
    fetch(agent, 1, 0).await
}

/// Raw lines from `from_seq` on, or (with `from_seq` 0) the last `last` lines.
///
/// # Errors
///
/// [`ClientError`].
pub async fn fetch(agent: &Agent, from_seq: u64, last: u32) -> Result<Vec<String>, ClientError> {
    gantry_client::follow::audit_lines(agent, from_seq, last).await
}

/// The result of verifying a log, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Chain, checkpoints and witness hold.
    Ok(String),
    /// The first problem.
    Failed(String),
}

/// Verifies fetched lines with `key`, then against the witnessed checkpoint if any.
pub fn verdict(
    lines: &[String],
    key: &PublicKey,
    witnessed: Option<&witness::Witnessed>,
) -> Verdict {
    let summary = match audit_chain::verify_lines(lines.iter().map(String::as_bytes), Some(key)) {
        Ok(s) => s,
        Err(e) => return Verdict::Failed(format!("audit log FAILED at seq {}: {}", e.seq, e.kind)),
    };
    let last_cp = summary
        .last_checkpoint_seq
        .map_or_else(|| "none yet".to_owned(), |s| format!("last at seq {s}"));
    let mut text = format!(
        "ok: {} entries, last seq {}, {} checkpoints ({last_cp})",
        summary.entries, summary.last_seq, summary.checkpoints
    );
    if summary.unsealed_after_checkpoint > 0 {
        text.push_str(&format!(
            "\n{} entries after the last checkpoint are not yet sealed by a signature",
            summary.unsealed_after_checkpoint
        ));
    }
    match witnessed {
        Some(w) => {
            let compared = format!("agent {}, key {}", w.agent_id, short(&w.key_id));
            if let Err(e) = audit_chain::check_witness(lines.iter().map(String::as_bytes), w.seq, &w.line) {
                return Verdict::Failed(format!("audit log FAILED at seq {}: {} (witnessed checkpoint at seq {}; {compared})", e.seq, e.kind, w.seq));
            }
            text.push_str(&format!("\nwitness: the log extends the checkpoint at seq {} this controller witnessed ({compared})", w.seq));
        }
        None => text.push_str(&format!("\nwitness: none kept for this agent under key {} yet (one is kept after each job this controller runs)", short(key.key_id().as_str()))),
    }
    Verdict::Ok(text)
}

/// `gantry audit verify`.
///
/// # Errors
///
/// [`AuditError`]; a log that fails verification is exit 1, not an error.
pub async fn verify(args: AuditVerifyArgs) -> Result<Exit, AuditError> {
    let settings = conn::settings(&args.conn)?;
    let key = match &args.pubkey {
        Some(p) => Some(PublicKey::read_pem_file(p)?),
        None => None,
    };
    let state_dir = settings
        .witness_dir
        .as_deref()
        .ok_or(WitnessError::NoStateDir)?;
    let agent = Agent::connect(&settings).await?;
    let key = match key {
        Some(k) => k,
        None => {
            let k = follow::agent_key(&agent).await.map_err(|e| match e {
                NotWitnessedCause::Store(e) => AuditError::Witness(e),
                NotWitnessedCause::Client(e) => AuditError::Client(e),
                NotWitnessedCause::AgentKey(e) => AuditError::AgentKey(e),
            })?;
            eprintln!(
                "checking checkpoints against the key the agent reports (key id {}); pass --pubkey FILE to use a key you trust",
                k.key_id()
            );
            k
        }
    };
    // Keyed by agent id and key: another agent of the same name (every quickstart agent is
    // `quickstart-agent`) signs with another key, and its witness says nothing about this log.
    let witnessed = witness::load(state_dir, &settings.agent_id, &key.key_id())?;
    if witnessed.is_none() {
        let others = witness::other_keys(state_dir, &settings.agent_id, &key.key_id())?;
        if !others.is_empty() {
            let others: Vec<&str> = others.iter().map(|k| short(k)).collect();
            eprintln!(
                "note: this controller witnessed agent {} under other keys ({}): another agent \
                 with the same id, or this agent's key changed; not compared",
                settings.agent_id,
                others.join(", ")
            );
        }
    }
    let lines = fetch_all(&agent).await?;
    match verdict(&lines, &key, witnessed.as_ref()) {
        Verdict::Ok(text) => {
            println!("{text}");
            Ok(Exit::Success)
        }
        Verdict::Failed(text) => {
            println!("{text}");
            Ok(Exit::JobFailed)
        }
    }
}
