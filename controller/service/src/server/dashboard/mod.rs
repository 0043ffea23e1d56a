//! The service's read-only dashboard (`[dashboard] listen`, loopback by default): one page,
//! its script and style built into the binary, showing the rollouts with their rings and hosts
//! (each host's step, job and last reported step, its agent's reachability), the bake time
//! left, the inventory and the service's audit tail, and each host's golden signals as its agent
//! reports them now (for unfinished rollouts and the newest one). It reads the store, the audit
//! log and the agents' status, and changes nothing.
//!
//! `http.rs` answers the requests; `view.rs` turns records into the page's JSON.

mod http;
mod view;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::store::Store;

/// What the dashboard reads.
pub struct Dashboard<S> {
    /// The service's store (rollouts, hosts, leases, inventory).
    pub store: Arc<S>,
    /// The service's audit log directory.
    pub audit_dir: PathBuf,
    /// The agents, asked for the live golden signals of the hosts of unfinished rollouts and
    /// of the newest one; `None`: no signals.
    pub dialer: Option<Arc<crate::dial::Dialer>>,
}

/// Largest request head the dashboard reads (hyper's smallest buffer): a browser's GET fits.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves the dashboard on `listener` for as long as the task runs (the service aborts it
/// when the gRPC server stops).
pub async fn serve<S: Store>(listener: TcpListener, dashboard: Dashboard<S>) {
    let dashboard = Arc::new(dashboard);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("dashboard listener: cannot accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let dashboard = Arc::clone(&dashboard);
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let dashboard = Arc::clone(&dashboard);
                    async move {
                        let resp = http::answer(
                            &dashboard,
                            req.method(),
                            req.uri().path(),
                            req.uri().query(),
                        )
                        .await;
                        Ok::<_, Infallible>(resp)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("dashboard connection ended: {e}");
            }
        });
    }
}
