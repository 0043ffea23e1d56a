//! A load generator: steady HTTP/1.1 `GET /` traffic through an app's front door, counting
//! every failed request and which versions answered.
//!
//! Clients are threads. Most open a NEW TCP connection per request (`Connection: close`), so
//! every request is routed anew by the front door; a few keep one connection alive across
//! requests, the way browsers and HTTP client pools do.
//!
//! A request fails when it gets no complete `200` answer with the sample app's banner
//! (`<app> <version> instance <n>`) within the timeout: refused or reset connections, early
//! EOF, timeouts, other status codes, a malformed answer.
//!
//! One exception, the same one every HTTP client makes (RFC 9110 §9.2.2, idempotent
//! requests): when a *reused* keep-alive connection turns out to be closed by the server
//! before a single byte of the answer arrived (the server closed an idle connection while
//! the request was on its way), the request is sent again once on a new connection. Such
//! retries are counted in [`LoadReport::retried`], never hidden; a retry that fails too is a
//! failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How many failure messages a report keeps.
const KEPT_ERRORS: usize = 12;

/// What load to send where.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The front door's address (loopback).
    pub addr: SocketAddr,
    /// Requests per second over all clients.
    pub rate: u32,
    /// Clients opening a new connection per request.
    pub fresh_clients: usize,
    /// Clients keeping one connection alive across requests.
    pub keepalive_clients: usize,
    /// Hard stop, however long the test takes.
    pub max_duration: Duration,
    /// Hard stop on the number of requests sent.
    pub max_requests: u64,
    /// Connect + answer timeout of one request.
    pub timeout: Duration,
}

impl LoadOptions {
    /// 100 requests per second from 6 new-connection and 2 keep-alive clients, for at most
    /// 30 s and 3000 requests, 5 s per request.
    pub fn new(addr: SocketAddr) -> LoadOptions {
        LoadOptions {
            addr,
            rate: 100,
            fresh_clients: 6,
            keepalive_clients: 2,
            max_duration: Duration::from_secs(30),
            max_requests: 3000,
            timeout: Duration::from_secs(5),
        }
    }
}

/// One successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// When the request was sent, since the load started.
    pub at: Duration,
    /// The version in the banner.
    pub version: String,
    /// Whether it went over a new connection (routed anew by the front door).
    pub fresh: bool,
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// How long it ran.
    pub elapsed: Duration,
    /// Requests sent (a retry is not counted again).
    pub sent: u64,
    /// Requests answered `200` with a banner.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Failed requests whose answer still carried a banner (an HTTP error status from a
    /// running instance, e.g. a canary answering 500), per version in the banner.
    pub failed_by_version: BTreeMap<String, u64>,
    /// The first few failures: when, which client, what happened.
    pub errors: Vec<String>,
    /// Answers per version.
    pub versions: BTreeMap<String, u64>,
    /// Every successful answer, in completion order.
    pub answers: Vec<Answer>,
    /// Keep-alive requests resent once on a new connection because the server had closed
    /// the reused one before answering (see the module docs).
    pub retried: u64,
    /// Keep-alive connections found closed by the server between requests and reopened.
    pub reconnects: u64,
    /// Whether the load stopped by itself ([`LoadOptions::max_duration`] or
    /// [`LoadOptions::max_requests`]) before [`Load::stop`].
    pub hit_limit: bool,
}

impl LoadReport {
    /// Answers per version among requests sent at or after `since`; only those over new
    /// connections when `fresh_only`.
    pub fn versions_since(&self, since: Duration, fresh_only: bool) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for a in self
            .answers
            .iter()
            .filter(|a| a.at >= since && (a.fresh || !fresh_only))
        {
            *out.entry(a.version.clone()).or_insert(0) += 1;
        }
        out
    }

    /// One paragraph: counts, versions and the first errors.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "load: {} sent, {} ok, {} failed ({:?} with a banner), {} retried, {} reconnects in \
             {:.1?}{}; versions {:?}",
            self.sent,
            self.ok,
            self.failed,
            self.failed_by_version,
            self.retried,
            self.reconnects,
            self.elapsed,
            if self.hit_limit {
                " (hit its limit)"
            } else {
                ""
            },
            self.versions
        );
        for e in &self.errors {
            let _ = write!(s, "\n  {e}");
        }
        s
    }

    /// Failed requests not explained by an error status of `version` (those of every other
    /// version, and every failure without an answer).
    pub fn failed_except(&self, version: &str) -> u64 {
        self.failed - self.failed_by_version.get(version).copied().unwrap_or(0)
    }

    /// Panics with the summary unless no request failed and some succeeded.
    #[track_caller]
    pub fn assert_no_failures(&self) {
        assert!(
            self.failed == 0 && self.ok > 0,
            "requests failed through the front door\n{}",
            self.summary()
        );
    }
}

#[derive(Debug, Default)]
struct Tally {
    report: LoadReport,
}

impl Tally {
    fn record(&mut self, sent_at: Duration, client: &str, result: Result<Outcome, Failure>) {
        self.report.sent += 1;
        match result {
            Ok(o) => {
                self.report.ok += 1;
                self.report.retried += u64::from(o.retried);
                self.report.reconnects += u64::from(o.reconnected);
                *self.report.versions.entry(o.version.clone()).or_insert(0) += 1;
                self.report.answers.push(Answer {
                    at: sent_at,
                    version: o.version,
                    fresh: o.fresh,
                });
            }
            Err(Failure { message, version }) => {
                self.report.failed += 1;
                if let Some(v) = version {
                    *self.report.failed_by_version.entry(v).or_insert(0) += 1;
                }
                if self.report.errors.len() < KEPT_ERRORS {
                    self.report
                        .errors
                        .push(format!("at {sent_at:.3?}, {client}: {message}"));
                }
            }
        }
    }
}

/// A failed request, and the version whose banner its answer carried, if any.
struct Failure {
    message: String,
    version: Option<String>,
}

impl Failure {
    fn of(e: ReadError) -> Failure {
        Failure {
            message: e.message,
            version: e.version,
        }
    }
}

struct Outcome {
    version: String,
    fresh: bool,
    retried: bool,
    reconnected: bool,
}

/// Load running in the background. [`Load::stop`] ends it and returns the report.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    /// Starts the clients.
    pub fn start(opts: LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let started = Instant::now();
        let clients = (opts.fresh_clients + opts.keepalive_clients).max(1);
        let per_client = f64::from(opts.rate.max(1)) / clients as f64;
        let interval = Duration::from_secs_f64(1.0 / per_client);
        let threads = (0..clients)
            .map(|i| {
                let keepalive = i >= opts.fresh_clients;
                let (stop, tally, opts) = (Arc::clone(&stop), Arc::clone(&tally), opts.clone());
                // Spread the clients' first requests over one interval.
                let offset = interval.mul_f64(i as f64 / clients as f64);
                thread::spawn(move || {
                    let name = if keepalive {
                        format!("keep-alive client {i}")
                    } else {
                        format!("client {i}")
                    };
                    let mut conn: Option<KeepAlive> = None;
                    let mut n: u32 = 0;
                    loop {
                        let due = started + offset + interval * n;
                        n += 1;
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let at = started.elapsed();
                        {
                            let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
                            if at >= opts.max_duration || t.report.sent >= opts.max_requests {
                                t.report.hit_limit = true;
                                break;
                            }
                        }
                        let result = if keepalive {
                            keepalive_request(&mut conn, &opts)
                        } else {
                            fresh_request(&opts)
                        };
                        tally
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .record(at, &name, result);
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
            started,
        }
    }

    /// Time since the load started, on the clock of [`Answer::at`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The report so far.
    pub fn snapshot(&self) -> LoadReport {
        let t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let mut r = t.report.clone();
        r.elapsed = self.started.elapsed();
        r
    }

    /// Waits until `n` more requests have succeeded than now.
    ///
    /// # Errors
    ///
    /// When that takes longer than `deadline` (with the report so far).
    pub fn wait_for_more(&self, n: u64, deadline: Duration) -> anyhow::Result<()> {
        let target = self.snapshot().ok + n;
        let end = Instant::now() + deadline;
        loop {
            let r = self.snapshot();
            if r.ok >= target {
                return Ok(());
            }
            if Instant::now() >= end || r.hit_limit {
                bail!(
                    "the load did not get {n} more answers within {deadline:?}\n{}",
                    r.summary()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a request sent over a new connection after now is answered by `version`.
    ///
    /// # Errors
    ///
    /// When that takes longer than `deadline`.
    pub fn wait_for_version(&self, version: &str, deadline: Duration) -> anyhow::Result<()> {
        let since = self.elapsed();
        let end = Instant::now() + deadline;
        loop {
            let r = self.snapshot();
            if r.versions_since(since, true).contains_key(version) {
                return Ok(());
            }
            if Instant::now() >= end || r.hit_limit {
                bail!(
                    "no answer from {version} within {deadline:?}\n{}",
                    r.summary()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients (each finishes its request in flight) and returns the report.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `GET /` over a new connection to `addr`: the version in the banner.
///
/// # Errors
///
/// As a failed request of the load.
pub fn fetch_version(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    fetch(addr, timeout).map_err(|e| anyhow::anyhow!("{}", e.message))
}

fn fetch(addr: SocketAddr, timeout: Duration) -> Result<String, ReadError> {
    let fail = |message: String| ReadError {
        message,
        got_bytes: false,
        version: None,
    };
    let mut stream = connect(addr, timeout).map_err(|e| fail(format!("{e:#}")))?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail(format!("cannot send the request: {e}")))?;
    let mut reader = BufReader::new(stream);
    let (_, body) = read_response(&mut reader)?;
    version_of(&body).map_err(|m| ReadError {
        message: m,
        got_bytes: true,
        version: None,
    })
}

/// The versions answering `count` requests over new connections to `addr`.
///
/// # Errors
///
/// On the first request that fails.
pub fn versions(addr: SocketAddr, count: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for _ in 0..count {
        *out.entry(fetch_version(addr, Duration::from_secs(5))?)
            .or_insert(0) += 1;
    }
    Ok(out)
}

fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn fresh_request(opts: &LoadOptions) -> Result<Outcome, Failure> {
    fetch(opts.addr, opts.timeout)
        .map(|version| Outcome {
            version,
            fresh: true,
            retried: false,
            reconnected: false,
        })
        .map_err(Failure::of)
}

struct KeepAlive {
    reader: BufReader<TcpStream>,
}

/// Why a response could not be read, whether any byte of it had arrived, and the version in
/// the banner of an answer with an error status.
struct ReadError {
    message: String,
    got_bytes: bool,
    version: Option<String>,
}

fn keepalive_request(conn: &mut Option<KeepAlive>, opts: &LoadOptions) -> Result<Outcome, Failure> {
    let mut reconnected = false;
    if let Some(c) = conn.as_ref()
        && closed_by_peer(c.reader.get_ref())
    {
        *conn = None;
        reconnected = true;
    }
    let reused = conn.is_some();
    match keepalive_once(conn, opts) {
        Ok(version) => Ok(Outcome {
            version,
            fresh: !reused,
            retried: false,
            reconnected,
        }),
        Err(e) if reused && !e.got_bytes => {
            // The server closed the idle connection as the request went out: resend once.
            *conn = None;
            keepalive_once(conn, opts)
                .map(|version| Outcome {
                    version,
                    fresh: true,
                    retried: true,
                    reconnected,
                })
                .map_err(|e2| Failure {
                    message: format!(
                        "{} (and the retry on a new connection: {})",
                        e.message, e2.message
                    ),
                    version: e2.version,
                })
        }
        Err(e) => {
            *conn = None;
            Err(Failure {
                message: if reused {
                    format!("on a reused connection: {}", e.message)
                } else {
                    e.message
                },
                version: e.version,
            })
        }
    }
}

fn keepalive_once(conn: &mut Option<KeepAlive>, opts: &LoadOptions) -> Result<String, ReadError> {
    let fail = |message: String| ReadError {
        message,
        got_bytes: false,
        version: None,
    };
    if conn.is_none() {
        let stream = connect(opts.addr, opts.timeout).map_err(|e| fail(format!("{e:#}")))?;
        *conn = Some(KeepAlive {
            reader: BufReader::new(stream),
        });
    }
    let Some(c) = conn.as_mut() else {
        return Err(fail("no connection".to_owned()));
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", opts.addr);
    c.reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| fail(format!("cannot send the request: {e}")))?;
    let answer = read_response(&mut c.reader);
    let (close, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            *conn = None;
            return Err(e);
        }
    };
    if close {
        *conn = None;
    }
    version_of(&body).map_err(|m| ReadError {
        message: m,
        got_bytes: true,
        version: None,
    })
}

/// Whether the server has closed `stream` (EOF or an error waiting), without blocking.
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match stream.peek(&mut b) {
        Ok(_) => true, // EOF, or bytes nobody asked for: either way not reusable
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

/// Reads one HTTP/1.1 response: whether the server will close the connection, and the body.
/// Anything but `200` with a `Content-Length` body (or a body up to EOF) is an error.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(bool, String), ReadError> {
    let mut got_bytes = false;
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(ReadError {
                    message: if got_bytes {
                        format!("connection closed in the header: {head:?}")
                    } else {
                        "connection closed before any answer".to_owned()
                    },
                    got_bytes,
                    version: None,
                });
            }
            Ok(_) => got_bytes = true,
            Err(e) => {
                return Err(ReadError {
                    message: format!("reading the answer: {e}"),
                    got_bytes: got_bytes || !line.is_empty(),
                    version: None,
                });
            }
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let err = |message: String| ReadError {
        message,
        got_bytes: true,
        version: None,
    };
    let status = head
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let header = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut body = Vec::new();
    match header("content-length") {
        Some(len) => {
            let len: usize = len
                .parse()
                .map_err(|_| err(format!("bad Content-Length {len:?}")))?;
            body.resize(len, 0);
            reader
                .read_exact(&mut body)
                .map_err(|e| err(format!("reading the body: {e}")))?;
        }
        None => {
            reader
                .read_to_end(&mut body)
                .map_err(|e| err(format!("reading the body: {e}")))?;
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != "200" {
        return Err(ReadError {
            version: version_of(&body).ok(),
            ..err(format!(
                "status {status:?}: {:?} {:?}",
                head.first(),
                body.trim()
            ))
        });
    }
    Ok((close, body))
}

/// The version in `<app> <version> instance <n>`, the first line of the sample app's page
/// (with flags, a line per flag it evaluates follows).
fn version_of(body: &str) -> Result<String, String> {
    let first = body.lines().next().unwrap_or_default();
    let words: Vec<_> = first.split_whitespace().collect();
    match words.as_slice() {
        [_app, version, "instance", _n] => Ok((*version).to_owned()),
        _ => Err(format!("not a banner: {body:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    /// A tiny HTTP server: keep-alive, `web <version> instance 0`; it closes every
    /// connection after `per_conn` answers and refuses after `total` answers.
    fn server(version: &'static str, per_conn: usize) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    for _ in 0..per_conn {
                        let mut close = false;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line.to_lowercase().starts_with("connection: close") {
                                close = true;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let body = format!("web {version} instance 0\n");
                        let _ = write!(
                            reader.get_mut(),
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn quick(addr: SocketAddr) -> LoadOptions {
        LoadOptions {
            rate: 200,
            fresh_clients: 2,
            keepalive_clients: 2,
            max_duration: Duration::from_secs(10),
            max_requests: 100,
            ..LoadOptions::new(addr)
        }
    }

    #[test]
    fn counts_versions_and_no_failures() {
        let addr = server("1.2.3", 1000);
        let load = Load::start(quick(addr));
        load.wait_for_more(40, Duration::from_secs(10)).unwrap();
        let r = load.stop();
        r.assert_no_failures();
        assert_eq!(r.sent, r.ok);
        assert_eq!(r.versions.keys().collect::<Vec<_>>(), ["1.2.3"]);
        assert!(r.versions_since(Duration::ZERO, true)["1.2.3"] > 0);
        assert_eq!(
            fetch_version(addr, Duration::from_secs(2)).unwrap(),
            "1.2.3"
        );
    }

    #[test]
    fn keepalive_connections_closed_by_the_server_are_reopened_not_failed() {
        // Every connection answers twice and then closes without a `Connection: close`.
        let addr = server("2.0.0", 2);
        let load = Load::start(LoadOptions {
            fresh_clients: 0,
            ..quick(addr)
        });
        load.wait_for_more(30, Duration::from_secs(10)).unwrap();
        let r = load.stop();
        r.assert_no_failures();
        assert!(r.reconnects + r.retried > 0, "{}", r.summary());
    }

    #[test]
    fn refused_connections_are_failures_with_their_error() {
        // Bind and drop: nothing listens there any more.
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let load = Load::start(LoadOptions {
            max_requests: 10,
            ..quick(addr)
        });
        wait_until_sent(&load, 10);
        let r = load.stop();
        assert_eq!(r.ok, 0);
        assert!(r.failed >= 10, "{}", r.summary());
        assert!(r.errors[0].contains("cannot connect"), "{}", r.summary());
        let panicked = std::panic::catch_unwind(|| r.assert_no_failures());
        assert!(panicked.is_err());
    }

    fn wait_until_sent(load: &Load, n: u64) {
        crate::probe::wait_until(Duration::from_secs(10), "requests sent", || {
            load.snapshot().sent >= n
        })
        .unwrap();
    }

    #[test]
    fn banner_parsing() {
        assert_eq!(version_of("web 1.0.0 instance 3\n").unwrap(), "1.0.0");
        assert!(version_of("not found\n").is_err());
        assert_eq!(
            version_of("web 2.0.0 instance 0\nbanner: Welcome (code default)\n").unwrap(),
            "2.0.0"
        );
    }
}
