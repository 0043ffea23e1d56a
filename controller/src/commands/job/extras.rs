//! What a deploy carries besides its artifact: release notes and signed gate evidence
//! (`--notes`, `--evidence`), read and checked before they go into the job.

use std::path::Path;

use gantry_proto::attest::Envelope;

use crate::cli::JobSpecArgs;
use crate::flags::FlagError;

/// The notes' text and each evidence file's bytes, as the job will carry them.
///
/// # Errors
///
/// [`FlagError`] for `--notes` (unreadable, not UTF-8) or `--evidence` (unreadable, not a
/// signed gate statement, or about another artifact than `artifact_sha256`).
pub fn read(
    spec: &JobSpecArgs,
    artifact_sha256: &str,
) -> Result<(String, Vec<Vec<u8>>), FlagError> {
    let notes = match &spec.notes {
        Some(path) => read_notes(path)?,
        None => String::new(),
    };
    let mut evidence = Vec::new();
    for path in &spec.evidence {
        evidence.push(read_evidence(path, artifact_sha256)?);
    }
    Ok((notes, evidence))
}

fn read_notes(path: &Path) -> Result<String, FlagError> {
    let bytes = std::fs::read(path)
        .map_err(|e| FlagError::new("--notes", format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| FlagError::new("--notes", format!("{} is not UTF-8 text", path.display())))
}

fn read_evidence(path: &Path, artifact_sha256: &str) -> Result<Vec<u8>, FlagError> {
    let bad = |why: String| FlagError::new("--evidence", format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let statement = Envelope::parse(&bytes)
        .and_then(|e| e.statement())
        .map_err(|e| bad(gantry_policy::error_chain(&e)))?;
    if !statement.subject_sha256().any(|d| d == artifact_sha256) {
        return Err(bad(format!(
            "it is evidence for artifact {}, this job deploys {artifact_sha256}",
            statement.subject_sha256().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(bytes)
}
