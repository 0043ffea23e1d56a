//! The mutual-TLS connection to one agent, and how its answers become typed errors.
//!
//! The agent's certificate must chain to the CA and name the agent id (the TLS server name), so
//! a redirected address cannot hand a job to an impostor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_proto::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::fault::Fault;

/// How long to wait for the TCP connection and TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message accepted from the agent (status answers and events are small).
const MAX_DECODE: usize = 16 * 1024 * 1024;

/// Why talking to the agent did not work.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
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
    #[error("invalid agent address {addr:?}: {reason} (expected host:port, e.g. 127.0.0.1:7443)")]
    BadAddress {
        /// The address given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client certificate and key cannot be used together (a key that is not the
    /// certificate's, or a file that is not what it should be).
    #[error(
        "cannot use client certificate {} with key {}: {reason}",
        cert.display(),
        key.display()
    )]
    BadIdentity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What TLS reported.
        reason: String,
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
    #[error("cannot reach agent at {addr}: {op} failed: {reason}")]
    Transport {
        /// The call.
        op: &'static str,
        /// The address.
        addr: String,
        /// The status code tonic reported.
        code: tonic::Code,
        /// What broke: the status message and its causes, as people read them (never the
        /// status's `Debug` form).
        reason: String,
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
    /// The agent took the call but failed on its side (its audit log or replay store cannot
    /// be written, an internal error): not a refusal of what was sent.
    #[error(
        "agent {agent_id} failed {op} on its side (it did not refuse it): {message} ({code:?})"
    )]
    AgentFailed {
        /// The call.
        op: &'static str,
        /// The agent.
        agent_id: String,
        /// The gRPC status code: `Unavailable`, `Internal`, `DataLoss` or `Unknown`.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
}

impl ClientError {
    /// Whose side the failure is on.
    pub fn fault(&self) -> Fault {
        match self {
            ClientError::ReadPem { .. }
            | ClientError::BadAddress { .. }
            | ClientError::BadIdentity { .. } => Fault::Input,
            ClientError::Connect { .. } | ClientError::Transport { .. } => Fault::Connection,
            ClientError::Rejected { .. } => Fault::Refused,
            ClientError::AgentFailed { .. } => Fault::AgentFailed,
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

/// Where an agent is, who it must be, the files that prove who we are, and where its witnessed
/// checkpoints are kept.
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
    /// The state directory where checkpoints from this agent are witnessed (see
    /// [`crate::witness`]); `None` when there is none, and then a job's checkpoint is not kept.
    pub witness_dir: Option<PathBuf>,
    /// Reach the agent through the controller service instead of at `addr` (an agent in
    /// dial-out mode listens on nothing); `None`: connect to `addr` directly.
    pub via: Option<Via>,
}

/// The controller service that forwards Agent RPCs to an agent dialled in to it: the CLI
/// connects to the service with the operator's certificate, the service's certificate must
/// name `server_name`, and each call's path names the agent (`/agents/<id>/gantry.v1.Agent/...`).
/// The bytes pass through unchanged: the agent checks the signatures as ever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The service's address, host:port.
    pub server: String,
    /// The name the service's certificate must carry.
    pub server_name: String,
}

/// The path prefix under which the service forwards Agent RPCs to agent `id`.
pub fn proxy_prefix(id: &str) -> String {
    format!("/{PROXY_SERVICE}/{id}")
}

/// The first path segment of proxied Agent RPCs on the service.
pub const PROXY_SERVICE: &str = "agents";

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
    /// [`crate::witness`]); `None` when there is none.
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
        // Through the service: its address and name, and the agent's id in each call's path.
        let (addr, name) = match &settings.via {
            Some(via) => (via.server.clone(), via.server_name.clone()),
            None => (settings.addr.clone(), settings.agent_id.clone()),
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(name);
        check_address(&addr)?;
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| ClientError::BadAddress {
                addr: addr.clone(),
                reason: causes(&e),
            })?
            .tls_config(tls)
            .map_err(|e| ClientError::BadIdentity {
                cert: settings.cert.clone(),
                key: settings.cert_key.clone(),
                reason: causes(&e),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                agent_id: settings.agent_id.clone(),
                source,
            })?;
        let (client, shown) = match &settings.via {
            Some(via) => {
                let origin = format!("https://{}{}", via.server, proxy_prefix(&settings.agent_id))
                    .parse::<tonic::transport::Uri>()
                    .map_err(|e| ClientError::BadAddress {
                        addr: settings.agent_id.clone(),
                        reason: format!("not usable as an agent id in a path: {e}"),
                    })?;
                (
                    AgentClient::with_origin(channel, origin),
                    format!(
                        "{} via the controller service {}",
                        settings.agent_id, via.server
                    ),
                )
            }
            None => (AgentClient::new(channel), settings.addr.clone()),
        };
        let client = client.max_decoding_message_size(MAX_DECODE);
        Ok(Self {
            client,
            addr: shown,
            agent_id: settings.agent_id.clone(),
            witness_dir: settings.witness_dir.clone(),
        })
    }

    /// Turns a failed call's status into a [`ClientError`].
    pub fn error(&self, op: &'static str, status: tonic::Status) -> ClientError {
        classify(op, &self.addr, &self.agent_id, status)
    }
}

/// Checks that `addr` is `host:port` with a port (`[v6]:port` for IPv6): without one the
/// connection would go to port 443 and fail as "connection refused".
///
/// # Errors
///
/// [`ClientError::BadAddress`] saying what is missing.
pub fn check_address(addr: &str) -> Result<(), ClientError> {
    let bad = |reason: &str| ClientError::BadAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    if addr.contains("://") {
        return Err(bad("give host:port without a scheme"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address goes in brackets, [::1]:7443"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad(&format!("{port:?} is not a port (1-65535)"))),
    }
}

/// The texts of `e` and its causes joined by `: `, each once (tonic's errors repeat their
/// cause's text).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !texts.iter().any(|t| t.contains(&text)) {
            texts.push(text);
        }
        source = cause.source();
    }
    texts.retain(|t| !t.is_empty());
    texts.join(": ")
}

/// Whether a status came from a broken connection, from the agent refusing the call, or from
/// the agent failing on its side.
///
/// tonic attaches a `source` to statuses it makes from transport errors (I/O, HTTP/2 resets);
/// a status the agent sent arrives in trailers without one. Of the agent's statuses,
/// `Unavailable`, `Internal`, `DataLoss` and `Unknown` say it could not do its part (a full
/// disk under its audit log, say), not that it judged the request and said no.
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
        code: status.code(),
        reason: match std::error::Error::source(&status) {
            Some(cause) if status.message().is_empty() => causes(cause),
            Some(cause) => {
                let cause = causes(cause);
                if status.message().contains(&cause) {
                    status.message().to_owned()
                } else {
                    format!("{}: {cause}", status.message())
                }
            }
            None if status.message().is_empty() => format!("{:?}", status.code()),
            None => status.message().to_owned(),
        },
    };
    if std::error::Error::source(&status).is_some() {
        return transport();
    }
    match status.code() {
        Code::Cancelled | Code::DeadlineExceeded => transport(),
        Code::Unknown | Code::Internal | Code::Unavailable | Code::DataLoss => {
            ClientError::AgentFailed {
                op,
                agent_id: agent_id.to_owned(),
                code: status.code(),
                message: status.message().to_owned(),
            }
        }
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
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
    fn admission_statuses_are_refusals() {
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
        ] {
            let e = classify(
                "Submit",
                "127.0.0.1:1",
                "a1",
                tonic::Status::new(code, "no"),
            );
            assert_eq!(e.fault(), Fault::Refused, "{code:?}");
            assert!(e.to_string().contains("agent a1 refused Submit: no"), "{e}");
        }
    }

    /// One status code the agent sends when it cannot do its part: a failure on its side,
    /// named as such, with the agent's message; never a refusal.
    fn assert_agent_failed(code: tonic::Code) {
        let e = classify(
            "Submit",
            "127.0.0.1:1",
            "a1",
            tonic::Status::new(code, "audit log unavailable: No space left on device"),
        );
        assert!(
            matches!(e, ClientError::AgentFailed { .. }),
            "{code:?}: {e:?}"
        );
        assert_eq!(e.fault(), Fault::AgentFailed, "{code:?}");
        let text = e.to_string();
        assert_eq!(
            text,
            format!(
                "agent a1 failed Submit on its side (it did not refuse it): \
                 audit log unavailable: No space left on device ({code:?})"
            )
        );
        assert!(!text.contains("refused Submit"), "{text}");
    }

    #[test]
    fn unavailable_is_a_failure_on_the_agents_side_not_a_refusal() {
        assert_agent_failed(tonic::Code::Unavailable);
    }

    #[test]
    fn internal_is_a_failure_on_the_agents_side_not_a_refusal() {
        assert_agent_failed(tonic::Code::Internal);
    }

    #[test]
    fn data_loss_is_a_failure_on_the_agents_side_not_a_refusal() {
        assert_agent_failed(tonic::Code::DataLoss);
    }

    #[test]
    fn unknown_is_a_failure_on_the_agents_side_not_a_refusal() {
        assert_agent_failed(tonic::Code::Unknown);
    }

    /// Issue 10 item 9: `GANTRY_AGENT=localhost` read "connection refused" (port 443).
    #[test]
    fn an_address_without_a_port_is_named_as_such() {
        for (addr, says) in [
            ("localhost", "no port"),
            ("localhost:", "is not a port"),
            ("localhost:http", "is not a port"),
            ("::1:7443", "in brackets"),
            ("https://h:1", "without a scheme"),
            (":7443", "no host"),
        ] {
            let e = check_address(addr).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(says), "{addr}: {text}");
            assert!(text.contains("expected host:port"), "{addr}: {text}");
            assert_eq!(e.fault(), Fault::Input);
        }
        for ok in [
            "127.0.0.1:7443",
            "localhost:1",
            "[::1]:7443",
            "agent.example:443",
        ] {
            check_address(ok).unwrap();
        }
    }

    /// Issue 10 item 9: a lost event stream printed tonic's `Debug` output.
    #[test]
    fn a_broken_stream_reads_as_its_cause_not_as_a_status_dump() {
        let mut status = tonic::Status::unknown("error reading a body from connection");
        status.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset by peer",
        )));
        let e = classify("Watch", "127.0.0.1:1", "a1", status);
        assert_eq!(
            e.to_string(),
            "cannot reach agent at 127.0.0.1:1: Watch failed: error reading a body from \
             connection: connection reset by peer"
        );
        let mut chain = Vec::new();
        let mut cur: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cur {
            chain.push(c.to_string());
            cur = c.source();
        }
        for text in chain {
            assert!(!text.contains("metadata"), "{text}");
            assert!(!text.contains("MetadataMap"), "{text}");
        }
    }

    #[test]
    fn statuses_with_a_transport_cause_are_connection_failures() {
        let mut status = tonic::Status::unavailable("connection reset");
        status.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        let e = classify("Submit", "127.0.0.1:1", "a1", status);
        assert_eq!(e.fault(), Fault::Connection);
        assert!(e.is_transport());
        assert!(
            e.to_string()
                .starts_with("cannot reach agent at 127.0.0.1:1"),
            "{e}"
        );
    }
}
