//! Watchers of an app's OFREP event stream (`GET /ofrep/v1/events`): each one a real HTTP/1.1
//! connection through hyper's client, its server-sent events parsed as an `EventSource` does
//! and kept with the time they arrived.
//!
//! A watcher made with `reconnect` behaves like an `EventSource`: when the stream ends or the
//! connection fails, it connects again (every 100 ms) until it is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One event as an `EventSource` delivers it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its `id:`.
    pub id: String,
    /// Its `data:` lines, joined with `\n`, parsed as JSON (`Null` when they are not JSON).
    pub data: serde_json::Value,
    /// When it arrived.
    pub at: Instant,
    /// Which connection of its watcher (0 for the first) it came on.
    pub connection: usize,
}

impl Event {
    /// The `version` of its data.
    pub fn version(&self) -> Option<u64> {
        self.data["version"].as_u64()
    }
}

/// What one watcher saw.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<Event>,
    connections: usize,
    /// The last failure to connect or read, for messages.
    last_error: Option<String>,
}

/// Some watchers of one endpoint, on their own runtime; dropping it closes them all.
#[derive(Debug)]
pub struct Watchers {
    seen: Vec<Arc<Mutex<Seen>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Watchers {
    /// Starts `n` watchers of `http://addr/ofrep/v1/events`.
    ///
    /// # Errors
    ///
    /// When the runtime cannot be built.
    pub fn start(addr: SocketAddr, n: usize, reconnect: bool) -> anyhow::Result<Watchers> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot build the watchers' runtime")?;
        let seen: Vec<_> = (0..n)
            .map(|_| Arc::new(Mutex::new(Seen::default())))
            .collect();
        for s in &seen {
            runtime.spawn(watch(addr, Arc::clone(s), reconnect));
        }
        Ok(Watchers {
            seen,
            runtime: Some(runtime),
        })
    }

    /// How many watchers there are.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The events watcher `i` got so far.
    pub fn events(&self, i: usize) -> Vec<Event> {
        self.seen.get(i).map_or_else(Vec::new, |s| {
            s.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .events
                .clone()
        })
    }

    /// How many watchers got an event with `version` (and, with `from_connection`, on that
    /// connection or a later one).
    pub fn count_with(&self, version: u64, from_connection: usize) -> usize {
        (0..self.len())
            .filter(|&i| {
                self.events(i)
                    .iter()
                    .any(|e| e.version() == Some(version) && e.connection >= from_connection)
            })
            .count()
    }

    /// When each watcher first got an event with `version` (`None` for those that did not).
    pub fn arrivals(&self, version: u64) -> Vec<Option<Instant>> {
        (0..self.len())
            .map(|i| {
                self.events(i)
                    .iter()
                    .find(|e| e.version() == Some(version))
                    .map(|e| e.at)
            })
            .collect()
    }

    /// A summary for a failed assertion: per watcher, its connections, versions and last error.
    pub fn describe(&self) -> String {
        self.seen
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                let versions: Vec<_> = s.events.iter().filter_map(Event::version).collect();
                format!(
                    "watcher {i}: {} connection(s), versions {versions:?}, last error {:?}\n",
                    s.connections, s.last_error
                )
            })
            .collect()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn watch(addr: SocketAddr, seen: Arc<Mutex<Seen>>, reconnect: bool) {
    let mut connection = 0;
    loop {
        let result = stream_once(addr, &seen, connection).await;
        let why = match result {
            Ok(()) => "the stream ended".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_error = Some(why);
        if !reconnect {
            return;
        }
        connection += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One connection: reads events until the stream ends.
async fn stream_once(
    addr: SocketAddr,
    seen: &Mutex<Seen>,
    connection: usize,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/ofrep/v1/events")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(
        resp.status() == hyper::StatusCode::OK,
        "GET /ofrep/v1/events answered {}",
        resp.status()
    );
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .connections += 1;
    let mut body = resp.into_body();
    let mut buf = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&data));
        let at = Instant::now();
        let parsed = take_events(&mut buf);
        if !parsed.is_empty() {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .events
                .extend(parsed.into_iter().map(|(id, data)| Event {
                    id,
                    data,
                    at,
                    connection,
                }));
        }
    }
    Ok(())
}

/// Takes the complete events (ending in a blank line) off the front of `buf`: each one's `id`
/// and its `data` as JSON. Comments (`:`), `retry:` and `event:` lines are skipped, and blocks
/// without `data` (a heartbeat) give no event, as in an `EventSource`.
pub fn take_events(buf: &mut String) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut id = String::new();
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                v.trim_start().clone_into(&mut id);
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            let joined = data.join("\n");
            let json = serde_json::from_str(&joined).unwrap_or(serde_json::Value::Null);
            out.push((id, json));
        }
    }
    out
}
