//! The mutual-TLS channel to the controller service; its certificate must name
//! `--server-name`.

use gantry_proto::v1::controller_client::ControllerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::FleetError;
use crate::fleet_cli::ServerConnArgs;

/// A connected service.
pub type Service = ControllerClient<Channel>;

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|source| FleetError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Connects with the flags (or their environment variables).
///
/// # Errors
/// [`FleetError`]: a missing flag, an unreadable file, no connection.
pub async fn connect(args: &ServerConnArgs) -> Result<Service, FleetError> {
    fn need<T: Clone>(
        v: &Option<T>,
        flag: &'static str,
        env: &'static str,
    ) -> Result<T, FleetError> {
        v.clone().ok_or(FleetError::MissingFlag { flag, env })
    }
    let addr = need(&args.server, "server", "GANTRY_SERVER")?;
    let ca = read("CA certificate", &need(&args.ca, "ca", "GANTRY_CA")?)?;
    let cert = read(
        "client certificate",
        &need(&args.cert, "cert", "GANTRY_CERT")?,
    )?;
    let key = read(
        "client key",
        &need(&args.cert_key, "cert-key", "GANTRY_CERT_KEY")?,
    )?;
    let bad = |reason: String| FleetError::Connect {
        addr: addr.clone(),
        reason,
    };
    gantry_client::connect::check_address(&addr).map_err(|e| bad(e.to_string()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(args.server_name.clone());
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| bad(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(gantry_client::connect::CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| bad(causes(&e)))?;
    Ok(ControllerClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
}

fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = c.source();
    }
    out
}

/// A failed call as a [`FleetError`]: the service judging the request, or failing.
pub fn status_error(op: &'static str, s: &tonic::Status) -> FleetError {
    use tonic::Code;
    match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted => FleetError::Refused {
            op,
            code: s.code(),
            message: s.message().to_owned(),
        },
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => FleetError::Failed {
            op,
            code: s.code(),
            message: if s.message().is_empty() {
                causes(s)
            } else {
                s.message().to_owned()
            },
        },
    }
}
