//! The connection flags (`--agent`, `--agent-id`, `--ca`, `--cert`, `--cert-key`, or their
//! environment variables) to the client library's typed settings.

use gantry_client::connect::Via;
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
    /// With `--server`, `--agent` is the agent's id, and `--agent-id` names another.
    #[error(
        "with --server, --agent names the agent ({agent}); --agent-id says {agent_id}: give one id"
    )]
    Disagree {
        /// `--agent`.
        agent: String,
        /// `--agent-id`.
        agent_id: String,
    },
}

impl ConnError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            ConnError::MissingFlag { .. } | ConnError::Disagree { .. } => Exit::Usage,
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
    let agent = need(&args.agent, "agent", "GANTRY_AGENT")?;
    let (agent_id, via) = match &args.server {
        // Through the service: --agent is the agent's id (and --agent-id, if given, agrees).
        Some(server) => {
            let id = args.agent_id.clone().unwrap_or_else(|| agent.clone());
            if id != agent {
                return Err(ConnError::Disagree {
                    agent,
                    agent_id: id,
                });
            }
            let via = Via {
                server: server.clone(),
                server_name: args.server_name.clone(),
            };
            (id, Some(via))
        }
        None => (need(&args.agent_id, "agent-id", "GANTRY_AGENT_ID")?, None),
    };
    Ok(ConnSettings {
        addr: agent,
        agent_id,
        ca: need(&args.ca, "ca", "GANTRY_CA")?,
        cert: need(&args.cert, "cert", "GANTRY_CERT")?,
        cert_key: need(&args.cert_key, "cert-key", "GANTRY_CERT_KEY")?,
        witness_dir: witness::state_dir().ok(),
        via,
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

    #[test]
    fn with_server_the_agent_flag_is_the_agent_id() {
        let args = ConnArgs {
            agent: Some("web-7".into()),
            server: Some("127.0.0.1:7600".into()),
            server_name: "gantry-server".into(),
            ca: Some("ca.pem".into()),
            cert: Some("ops.pem".into()),
            cert_key: Some("ops.key".into()),
            ..ConnArgs::default()
        };
        let s = settings(&args).unwrap();
        assert_eq!(s.agent_id, "web-7");
        assert_eq!(
            s.via,
            Some(Via {
                server: "127.0.0.1:7600".into(),
                server_name: "gantry-server".into()
            })
        );
        let other = ConnArgs {
            agent_id: Some("web-8".into()),
            ..args
        };
        let e = settings(&other).unwrap_err();
        assert!(e.to_string().contains("give one id"), "{e}");
        assert_eq!(e.exit(), Exit::Usage);
    }
}
