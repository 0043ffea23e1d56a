//! One client connection: pick a backend (trying the next on a refusal; when all refuse,
//! holding the client and trying again up to the table's hold timeout), then copy bytes both
//! ways, counted, until either side closes or the connection is cut.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::http::Observer;
use super::shared::{Shared, should_warn};
use crate::config::FrontDoorMode;
use crate::traffic::stats::Counters;

/// How often a held connection tries the backends again.
const HOLD_RETRY: Duration = Duration::from_millis(20);

impl Shared {
    pub(super) async fn serve(self: Arc<Self>, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        let mut tried: Vec<Arc<str>> = Vec::new();
        let arrived = Instant::now();
        // While held, refusals are retried without counting each again.
        let mut holding = false;
        let (upstream, target) = loop {
            let picked = {
                let mut routing = self.lock();
                let timeout = routing.table.connect_timeout();
                routing.pick(&tried).map(|t| (t, timeout))
            };
            let Some((target, timeout)) = picked else {
                let (hold, table_holds) = {
                    let routing = self.lock();
                    (routing.table.hold_timeout(), routing.table.holding)
                };
                // Every backend in rotation refused, or the table holds new connections while
                // none is in rotation (else an empty table routes nothing at once): hold the
                // client and try again, up to the table's hold timeout.
                if (!tried.is_empty() || table_holds) && arrived.elapsed() < hold {
                    if !holding {
                        holding = true;
                        Counters::bump(&self.held);
                    }
                    tried.clear();
                    tokio::select! {
                        () = tokio::time::sleep(HOLD_RETRY) => continue,
                        () = self.cut_all.cancelled() => {}
                    }
                }
                Counters::bump(&self.unrouted);
                if !tried.is_empty() && should_warn(&self.last_accept_warn) {
                    tracing::warn!(
                        "no backend accepted a connection (tried {}); closing it",
                        tried.len()
                    );
                }
                return;
            };
            let failure = match tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await
            {
                Ok(Ok(stream)) => break (stream, target),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {}", humantime::format_duration(timeout)),
            };
            if !holding {
                Counters::bump(&target.counters.connect_errors);
                if should_warn(&target.counters.last_warn_ms) {
                    tracing::warn!(
                        backend = %target.id,
                        addr = %target.addr,
                        "cannot connect to backend, trying another: {failure}"
                    );
                }
            }
            tried.push(target.id);
        };
        let _ = upstream.set_nodelay(true);
        let counters = Arc::clone(&target.counters);
        Counters::bump(&counters.total);
        Counters::bump(&counters.active);
        let _active = Active(Arc::clone(&counters));
        let http = (self.mode == FrontDoorMode::Http).then(|| {
            let (backend, cohort) = &target.http;
            Observer::new(Arc::clone(backend), Arc::clone(cohort))
        });
        let mut upstream = Counted {
            inner: upstream,
            counters: Arc::clone(&counters),
            http,
        };
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = result {
                    tracing::debug!(backend = %target.id, "connection ended: {e}");
                }
            }
            () = target.cut.cancelled() => Counters::bump(&counters.cut),
            () = self.cut_all.cancelled() => Counters::bump(&counters.cut),
        }
    }
}

/// Keeps a backend's `active` count while a connection is open, however it ends.
struct Active(Arc<Counters>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backend side of a connection, counting bytes as they pass so that long-lived
/// connections show up in the stats while they run, and in HTTP mode showing them to the
/// connection's [`Observer`].
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
    http: Option<Observer>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let read = &buf.filled()[before..];
            this.counters
                .bytes_out
                .fetch_add(read.len() as u64, Ordering::Relaxed);
            if let Some(http) = &mut this.http {
                http.backend_bytes(read);
            }
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.counters
                .bytes_in
                .fetch_add(n as u64, Ordering::Relaxed);
            if let Some(http) = &mut this.http {
                http.client_bytes(&buf[..n]);
            }
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
