//! Whose side a failure is on: what a caller needs to decide between "fix the input", "try
//! again later", "the agent said no" and "the agent broke".

/// Whose side a failure is on. Every error of this crate has a `fault()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller's input: an unreadable file, a bad address, an artifact that is not the one
    /// the job names, a job with no signature.
    Input,
    /// The connection: the agent could not be reached, or the connection broke and kept
    /// breaking.
    Connection,
    /// The agent refused the request (admission, policy, a request it judges invalid).
    Refused,
    /// The agent took the request but failed on its side (its audit log or replay store could
    /// not be written, an internal error, lost data): not a refusal, and it may pass later.
    AgentFailed,
}
