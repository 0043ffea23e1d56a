//! The connection flags (`--agent`, `--agent-id`, `--ca`, `--cert`, `--cert-key`, or their
//! environment variables) to the client library's typed settings.

use gantry_client::{ConnSettings, witness};

use crate::cli::ConnArgs;
use crate::exit::Exit;

/// Why the connection flags do not say how to reach an agent.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// A connection flag is missing.
    #[error("missing --{flag} (or ${env}): needed to reach the agent")]
    MissingFlag {
        /// The flag, without dashes.
        flag: &'static str,
        /// The environment variable that can stand in for it.
        env: &'static str,
    },
}

impl ConnError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            ConnError::MissingFlag { .. } => Exit::Usage,
        }
    }
}

/// Takes the flags (or their environment variables), all of which are required; checkpoints
/// are witnessed in the state directory the environment names ([`witness::state_dir`]).
///
/// # Errors
///
/// [`ConnError::MissingFlag`] naming the first missing flag.
pub fn settings(args: &ConnArgs) -> Result<ConnSettings, ConnError> {
    fn need<T: Clone>(
        v: &Option<T>,
        flag: &'static str,
        env: &'static str,
    ) -> Result<T, ConnError> {
        v.clone().ok_or(ConnError::MissingFlag { flag, env })
    }
    Ok(ConnSettings {
        addr: need(&args.agent, "agent", "GANTRY_AGENT")?,
        agent_id: need(&args.agent_id, "agent-id", "GANTRY_AGENT_ID")?,
        ca: need(&args.ca, "ca", "GANTRY_CA")?,
        cert: need(&args.cert, "cert", "GANTRY_CERT")?,
        cert_key: need(&args.cert_key, "cert-key", "GANTRY_CERT_KEY")?,
        witness_dir: witness::state_dir().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_flags_name_flag_and_env() {
        let args = ConnArgs {
            agent: Some("127.0.0.1:1".into()),
            ..ConnArgs::default()
        };
        let e = settings(&args).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing --agent-id (or $GANTRY_AGENT_ID): needed to reach the agent"
        );
        assert_eq!(e.exit(), Exit::Usage);
    }
}
