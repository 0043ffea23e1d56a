//! The operators' way to a dialled-in agent: the service serves `/agents/<id>/gantry.v1.Agent/*`
//! and forwards each call, as it is (headers and streamed bodies, nothing decoded), to that
//! agent's session. The operator is checked like for any service call (`tls.client_names`);
//! the agent checks the signatures as over a direct connection, so the service adds no
//! authority. Calls that change something (Submit, Dispatch, UploadArtifact, PushFlags) are
//! recorded in the service's audit log with the operator's name.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use gantry_client::connect::PROXY_SERVICE;
use serde_json::Value;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::Service;

use super::operator::Operators;
use crate::audit::AuditLog;
use crate::sessions::{SessionError, Sessions};

/// The gRPC service whose methods are forwarded.
const AGENT_SERVICE: &str = "gantry.v1.Agent";

/// RPCs recorded when forwarded.
const RECORDED: [&str; 4] = ["Submit", "Dispatch", "UploadArtifact", "PushFlags"];

/// The forwarding service.
#[derive(Debug, Clone)]
pub struct AgentProxy {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) operators: Arc<Operators>,
    pub(crate) audit: Arc<AuditLog>,
}

impl NamedService for AgentProxy {
    const NAME: &'static str = PROXY_SERVICE;
}

/// `/agents/<id>/gantry.v1.Agent/<Method>` as `(id, method)`.
fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix('/')?
        .strip_prefix(PROXY_SERVICE)?
        .strip_prefix('/')?;
    let (id, rpc) = rest.split_once('/')?;
    let method = rpc.strip_prefix(AGENT_SERVICE)?.strip_prefix('/')?;
    (!id.is_empty() && !method.is_empty() && !method.contains('/')).then_some((id, method))
}

impl Service<http::Request<Body>> for AgentProxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await.unwrap_or_else(|s| s.into_http())) })
    }
}

impl AgentProxy {
    async fn forward(
        &self,
        mut req: http::Request<Body>,
    ) -> Result<http::Response<Body>, tonic::Status> {
        let operator = self.operator(&req)?;
        let (id, method) = route(req.uri().path()).ok_or_else(|| {
            tonic::Status::unimplemented(format!(
                "{}: not an Agent RPC path (/{PROXY_SERVICE}/<agent id>/{AGENT_SERVICE}/<method>)",
                req.uri().path()
            ))
        })?;
        let (id, method) = (id.to_owned(), method.to_owned());
        let channel = self.sessions.channel(&id).map_err(|e| match e {
            SessionError::Unknown(_) => tonic::Status::not_found(format!(
                "no agent {id} dials in to this service (a listening agent is reached at its own address)"
            )),
            SessionError::NotConnected(_) => {
                tonic::Status::unavailable(format!("agent {id} is not connected"))
            }
        })?;
        if RECORDED.contains(&method.as_str())
            && let Err(e) = self.audit.append(
                "agent.call_forwarded",
                &[
                    ("operator", Value::from(operator)),
                    ("agent", Value::from(id.clone())),
                    ("rpc", Value::from(method.clone())),
                ],
            )
        {
            return Err(tonic::Status::unavailable(format!(
                "the service's audit log cannot be written, so it forwards nothing that changes an agent: {e}"
            )));
        }
        let path = format!("/{AGENT_SERVICE}/{method}");
        *req.uri_mut() = path
            .parse()
            .map_err(|e| tonic::Status::internal(format!("{path}: {e}")))?;
        let mut channel = channel;
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(|e| unavailable(&id, &e))?;
        channel.call(req).await.map_err(|e| unavailable(&id, &e))
    }

    fn operator(&self, req: &http::Request<Body>) -> Result<String, tonic::Status> {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
        self.operators.name_of(leaf).ok_or_else(|| {
            tonic::Status::permission_denied(
                "the client certificate names no configured operator (tls.client_names)",
            )
        })
    }
}

fn unavailable(id: &str, e: &tonic::transport::Error) -> tonic::Status {
    tonic::Status::unavailable(format!(
        "agent {id}'s connection to the service failed: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn only_agent_rpc_paths_are_routed() {
        assert_eq!(
            route("/agents/web-7/gantry.v1.Agent/Submit"),
            Some(("web-7", "Submit"))
        );
        for bad in [
            "/agents/web-7/gantry.v1.Controller/ListAgents",
            "/agents//gantry.v1.Agent/Submit",
            "/agents/web-7/gantry.v1.Agent/",
            "/agents/web-7/gantry.v1.Agent/Submit/x",
            "/other/web-7/gantry.v1.Agent/Submit",
            "/agents/web-7",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }
}
