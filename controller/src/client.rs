//! The mutual-TLS connection to one agent, and how its answers become typed errors.
//!
//! The agent's certificate must chain to `--ca` and name `--agent-id` (the TLS server name), so
//! a redirected address cannot hand a job to an impostor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_proto::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::ConnArgs;
use crate::exit::Exit;

/// How long to wait for the TCP connection and TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message accepted from the agent (status answers and events are small).
const MAX_DECODE: usize = 16 * 1024 * 1024;

/// Why talking to the agent did not work.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A connection flag is missing.
    #[error("missing --{flag} (or ${env}): needed to reach the agent")]
    MissingFlag {
        /// The flag, without dashes.
        flag: &'static str,
        /// The environment variable that can stand in for it.
        env: &'static str,
    },
    /// A PEM file could not be read.
    #[error("cannot read {what} {}", path.display())]
    ReadPem {
        /// What the file is ("CA certificate" ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The address is not host:port.
    #[error("invalid agent address {addr:?} (expected host:port)")]
    BadAddress {
        /// The address given.
        addr: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TCP connection or TLS handshake failed.
    #[error("cannot reach agent at {addr} (agent id {agent_id})")]
    Connect {
        /// The address.
        addr: String,
        /// The agent id its certificate must name.
        agent_id: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The connection broke during a call.
    #[error("cannot reach agent at {addr}: {op} failed: {}", status.message())]
    Transport {
        /// The call.
        op: &'static str,
        /// The address.
        addr: String,
        /// What tonic reported.
        #[source]
        status: tonic::Status,
    },
    /// The agent answered the call with an error.
    #[error("agent {agent_id} refused {op}: {message} ({code:?})")]
    Rejected {
        /// The call.
        op: &'static str,
        /// The agent.
        agent_id: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
}

impl ClientError {
    /// The exit code this error ends `gantry` with.
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::MissingFlag { .. }
            | ClientError::ReadPem { .. }
            | ClientError::BadAddress { .. }
            | ClientError::Connect { .. }
            | ClientError::Transport { .. } => Exit::Usage,
            ClientError::Rejected { .. } => Exit::Rejected,
        }
    }

    /// True when the connection broke (the call may be retried on a new connection).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::Transport { .. } | ClientError::Connect { .. }
        )
    }
}

/// Validated connection settings.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// host:port.
    pub addr: String,
    /// The name the agent's certificate must carry.
    pub agent_id: String,
    /// CA certificate file.
    pub ca: PathBuf,
    /// Client certificate file.
    pub cert: PathBuf,
    /// Client key file.
    pub cert_key: PathBuf,
}

impl ConnSettings {
    /// Takes the flags (or their environment variables), all of which are required.
    ///
    /// # Errors
    ///
    /// [`ClientError::MissingFlag`] naming the first missing flag.
    pub fn from_args(args: &ConnArgs) -> Result<Self, ClientError> {
        fn need<T: Clone>(
            v: &Option<T>,
            flag: &'static str,
            env: &'static str,
        ) -> Result<T, ClientError> {
            v.clone().ok_or(ClientError::MissingFlag { flag, env })
        }
        Ok(Self {
            addr: need(&args.agent, "agent", "GANTRY_AGENT")?,
            agent_id: need(&args.agent_id, "agent-id", "GANTRY_AGENT_ID")?,
            ca: need(&args.ca, "ca", "GANTRY_CA")?,
            cert: need(&args.cert, "cert", "GANTRY_CERT")?,
            cert_key: need(&args.cert_key, "cert-key", "GANTRY_CERT_KEY")?,
        })
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadPem {
        what,
        path: path.to_owned(),
        source,
    })
}

/// A connected agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The generated client.
    pub client: AgentClient<Channel>,
    /// Where it is.
    pub addr: String,
    /// Who it is (checked against its certificate).
    pub agent_id: String,
    /// The state directory where checkpoints from this agent are witnessed (see
    /// [`crate::witness`]); `None` when the environment names none.
    pub witness_dir: Option<PathBuf>,
}

impl Agent {
    /// Connects with mutual TLS; the agent's certificate must name `settings.agent_id`.
    ///
    /// # Errors
    ///
    /// [`ClientError`]: unreadable PEM files, a bad address, or no connection.
    pub async fn connect(settings: &ConnSettings) -> Result<Self, ClientError> {
        let ca = read_pem("CA certificate", &settings.ca)?;
        let cert = read_pem("client certificate", &settings.cert)?;
        let key = read_pem("client key", &settings.cert_key)?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(settings.agent_id.clone());
        let endpoint = Endpoint::from_shared(format!("https://{}", settings.addr))
            .and_then(|e| e.tls_config(tls))
            .map_err(|source| ClientError::BadAddress {
                addr: settings.addr.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: settings.addr.clone(),
                agent_id: settings.agent_id.clone(),
                source,
            })?;
        let client = AgentClient::new(channel).max_decoding_message_size(MAX_DECODE);
        Ok(Self {
            client,
            addr: settings.addr.clone(),
            agent_id: settings.agent_id.clone(),
            witness_dir: crate::witness::state_dir().ok(),
        })
    }

    /// Turns a failed call's status into a [`ClientError`].
    pub fn error(&self, op: &'static str, status: tonic::Status) -> ClientError {
        classify(op, &self.addr, &self.agent_id, status)
    }
}

/// Whether a status came from the agent (a refusal) or from a broken connection.
///
/// tonic attaches a `source` to statuses it makes from transport errors (I/O, HTTP/2 resets);
/// a status the agent sent arrives in trailers without one.
pub fn classify(
    op: &'static str,
    addr: &str,
    agent_id: &str,
    status: tonic::Status,
) -> ClientError {
    use tonic::Code;
    let transport = || ClientError::Transport {
        op,
        addr: addr.to_owned(),
        status: status.clone(),
    };
    if std::error::Error::source(&status).is_some() {
        return transport();
    }
    match status.code() {
        Code::Cancelled | Code::DeadlineExceeded => transport(),
        Code::Ok
        | Code::Unknown
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => ClientError::Rejected {
            op,
            agent_id: agent_id.to_owned(),
            code: status.code(),
            message: status.message().to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_statuses_are_rejections_exit_3() {
        for code in [
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::FailedPrecondition,
            tonic::Code::AlreadyExists,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::ResourceExhausted,
            tonic::Code::Aborted,
            tonic::Code::OutOfRange,
            tonic::Code::Unavailable,
        ] {
            let e = classify(
                "Submit",
                "127.0.0.1:1",
                "a1",
                tonic::Status::new(code, "no"),
            );
            assert_eq!(e.exit(), Exit::Rejected, "{code:?}");
            assert!(e.to_string().contains("agent a1 refused Submit: no"), "{e}");
        }
    }

    #[test]
    fn statuses_with_a_transport_cause_are_exit_2() {
        let mut status = tonic::Status::unavailable("connection reset");
        status.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        let e = classify("Submit", "127.0.0.1:1", "a1", status);
        assert_eq!(e.exit(), Exit::Usage);
        assert!(
            e.to_string()
                .starts_with("cannot reach agent at 127.0.0.1:1"),
            "{e}"
        );
    }

    #[test]
    fn missing_flags_name_flag_and_env() {
        let args = ConnArgs {
            agent: Some("127.0.0.1:1".into()),
            ..ConnArgs::default()
        };
        let e = ConnSettings::from_args(&args).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing --agent-id (or $GANTRY_AGENT_ID): needed to reach the agent"
        );
        assert_eq!(e.exit(), Exit::Usage);
    }
}
