//! `gantry quickstart`.

use crate::cli::QuickstartArgs;
use crate::exit::Exit;

/// Why quickstart stopped.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    /// A step failed.
    #[error("quickstart failed at: {step}")]
    Step {
        /// The step.
        step: String,
    },
}

impl QuickstartError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            QuickstartError::Step { .. } => Exit::JobFailed,
        }
    }
}

/// `gantry quickstart`.
///
/// # Errors
///
/// [`QuickstartError`].
pub fn run(_args: &QuickstartArgs) -> Result<Exit, QuickstartError> {
    Err(QuickstartError::Step {
        step: "not written yet".into(),
    })
}
