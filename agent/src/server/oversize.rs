//! Refusals the transport makes before a handler runs, recorded like every other rejection.
//!
//! One decode limit covers every RPC of the service (artifact chunks need 1 MiB), so a job
//! between `limits.max_job_bytes` and that limit reaches admission, which refuses it as
//! `too_large` with its audit entry. A `Submit` or `Dispatch` above the decode limit never
//! reaches a handler: tonic's codec answers `OUT_OF_RANGE` (trailers only) without reading it.
//! This layer sees that answer on its way out and records the refusal (`job.rejected`,
//! reason `too_large`, with the peer's certificate fingerprint), charged to the certificate's
//! rejection budget like any other, so that every refused submit leaves its audit entry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::AgentService;
use super::throttle::ClientCertificate;

/// The RPCs whose oversized requests are job refusals.
const WATCHED: [&str; 2] = ["/gantry.v1.Agent/Submit", "/gantry.v1.Agent/Dispatch"];

/// gRPC status code 11.
const OUT_OF_RANGE: &str = "11";

/// Wraps the gRPC router; see the module docs.
#[derive(Clone)]
pub struct OversizeLayer {
    service: AgentService,
    decode_limit: usize,
}

impl OversizeLayer {
    /// Records through `service`; `decode_limit` is the service's, named in the entry.
    pub fn new(service: AgentService, decode_limit: usize) -> Self {
        Self {
            service,
            decode_limit,
        }
    }
}

impl<S> tower::Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`OversizeLayer`] makes.
#[derive(Clone)]
pub struct Oversize<S> {
    inner: S,
    layer: OversizeLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Oversize<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let rpc = watched_rpc(req.uri().path());
        // Only the watched RPCs pay for the certificate's fingerprint and the layer's clone.
        let watched = rpc.map(|rpc| {
            let fingerprint = req
                .extensions()
                .get::<ClientCertificate>()
                .map(|c| c.fingerprint.to_string())
                .unwrap_or_default();
            (rpc, fingerprint, self.layer.clone())
        });
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            if let Some((rpc, fingerprint, layer)) = watched
                && refused_as_too_large(response.headers())
            {
                layer
                    .service
                    .record_oversized(rpc, layer.decode_limit, fingerprint)
                    .await;
            }
            Ok(response)
        })
    }
}

/// The watched RPC a request path names, if any.
fn watched_rpc(path: &str) -> Option<&'static str> {
    WATCHED.into_iter().find(|p| *p == path)
}

/// Whether a response is the codec's trailers-only `OUT_OF_RANGE`.
fn refused_as_too_large(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == OUT_OF_RANGE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_submit_and_dispatch_are_watched() {
        assert_eq!(
            watched_rpc("/gantry.v1.Agent/Submit"),
            Some("/gantry.v1.Agent/Submit")
        );
        assert_eq!(
            watched_rpc("/gantry.v1.Agent/Dispatch"),
            Some("/gantry.v1.Agent/Dispatch")
        );
        assert_eq!(watched_rpc("/gantry.v1.Agent/UploadArtifact"), None);
        assert_eq!(watched_rpc("/gantry.v1.Agent/Status"), None);
    }

    #[test]
    fn only_out_of_range_in_the_headers_counts() {
        let mut h = http::HeaderMap::new();
        assert!(!refused_as_too_large(&h));
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        assert!(refused_as_too_large(&h));
        h.insert("grpc-status", http::HeaderValue::from_static("1"));
        assert!(!refused_as_too_large(&h));
        h.insert("grpc-status", http::HeaderValue::from_static("110"));
        assert!(!refused_as_too_large(&h));
    }
}
