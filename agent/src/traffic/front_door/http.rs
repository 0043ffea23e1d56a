//! HTTP mode: follows the HTTP/1.1 messages passing through one connection and counts them,
//! without changing, delaying or buffering a byte of what is passed on.
//!
//! Both directions are read as they are copied: request heads (parsed with `httparse`) and
//! their bodies (`Content-Length`, chunked) one after the other, so keep-alive and pipelined
//! requests are each counted; response heads are matched to requests in order (HTTP/1.1
//! answers in order), which gives the status class and the latency (request head forwarded
//! to response head received). Interim 1xx responses do not end a request; a `101` or a
//! successful `CONNECT` turns the connection into a tunnel, which is no longer followed.
//! Bytes that are not HTTP/1.1 the reader can follow end the counting on that connection
//! (counted in `parse_errors`); the bytes still flow.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::traffic::http_stats::HttpCounters;

/// Longest request or response head followed (what most servers accept).
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4 * 1024;
/// Most header fields in one head.
const MAX_HEADERS: usize = 128;

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Fixed(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Where a chunked body's reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data: bytes left.
    DataEnd(u8),
    Trailer,
}

/// What to do after a head.
enum Next {
    Body(Body),
    /// A tunnel (upgrade, CONNECT): stop following the connection.
    Stop,
}

/// A parsed head, handed to the caller to choose the body's framing.
enum Head<'h, 'b> {
    Request {
        method: &'h str,
        headers: &'h [httparse::Header<'b>],
    },
    Response {
        code: u16,
        headers: &'h [httparse::Header<'b>],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// One direction's reader.
#[derive(Debug)]
struct Reader {
    kind: Kind,
    /// `None` while reading a head (or a chunk line, see `line`).
    body: Option<Body>,
    buf: Vec<u8>,
}

/// The bytes are not HTTP/1.1 this reader follows.
#[derive(Debug)]
struct NotHttp;

impl Reader {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            body: None,
            buf: Vec::new(),
        }
    }

    /// Reads `data`, calling `on_head` for every complete head. `Ok(false)`: a tunnel began.
    fn feed(
        &mut self,
        mut data: &[u8],
        on_head: &mut dyn FnMut(Head<'_, '_>) -> Result<Next, NotHttp>,
    ) -> Result<bool, NotHttp> {
        while !data.is_empty() {
            match self.body {
                None => {
                    let (used, done) = self.head_bytes(data)?;
                    data = &data[used..];
                    if done {
                        match self.parse_head(on_head)? {
                            Next::Body(body) => self.body = (body != Body::None).then_some(body),
                            Next::Stop => return Ok(false),
                        }
                    }
                }
                Some(Body::None) => self.body = None,
                Some(Body::UntilClose) => return Ok(true),
                Some(Body::Fixed(n)) => {
                    let take = n.min(data.len() as u64);
                    data = &data[usize::try_from(take).unwrap_or(data.len())..];
                    self.body = (n > take).then_some(Body::Fixed(n - take));
                }
                Some(Body::Chunked(state)) => {
                    let (used, next) = self.chunk(state, data)?;
                    data = &data[used..];
                    self.body = next.map(Body::Chunked);
                }
            }
        }
        Ok(true)
    }

    /// Collects head bytes up to the blank line: (bytes used, head complete).
    fn head_bytes(&mut self, data: &[u8]) -> Result<(usize, bool), NotHttp> {
        // Only the last 3 bytes already held can start the terminator.
        let from = self.buf.len().saturating_sub(3);
        let room = MAX_HEAD.saturating_sub(self.buf.len());
        let take = data.len().min(room);
        self.buf.extend_from_slice(&data[..take]);
        match find(&self.buf[from..], b"\r\n\r\n") {
            Some(at) => {
                let end = from + at + 4;
                let extra = self.buf.len() - end;
                self.buf.truncate(end);
                Ok((take - extra, true))
            }
            None if self.buf.len() >= MAX_HEAD => Err(NotHttp),
            None => Ok((take, false)),
        }
    }

    fn parse_head(
        &mut self,
        on_head: &mut dyn FnMut(Head<'_, '_>) -> Result<Next, NotHttp>,
    ) -> Result<Next, NotHttp> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let next = match self.kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return Err(NotHttp),
                }
                on_head(Head::Request {
                    method: req.method.unwrap_or(""),
                    headers: req.headers,
                })?
            }
            Kind::Response => {
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => return Err(NotHttp),
                }
                on_head(Head::Response {
                    code: resp.code.unwrap_or(0),
                    headers: resp.headers,
                })?
            }
        };
        self.buf.clear();
        Ok(next)
    }

    /// Reads chunked-body bytes: (bytes used, where the body stands; `None`: it ended).
    fn chunk(&mut self, state: Chunk, data: &[u8]) -> Result<(usize, Option<Chunk>), NotHttp> {
        match state {
            Chunk::Data(n) => {
                let take = n.min(data.len() as u64);
                let next = if n > take {
                    Chunk::Data(n - take)
                } else {
                    Chunk::DataEnd(2)
                };
                Ok((usize::try_from(take).unwrap_or(data.len()), Some(next)))
            }
            Chunk::DataEnd(left) => {
                let take = usize::from(left).min(data.len());
                let left = left - u8::try_from(take).unwrap_or(left);
                let next = if left == 0 {
                    Chunk::Size
                } else {
                    Chunk::DataEnd(left)
                };
                Ok((take, Some(next)))
            }
            Chunk::Size | Chunk::Trailer => {
                let Some(at) = data.iter().position(|b| *b == b'\n') else {
                    if self.buf.len() + data.len() > MAX_LINE {
                        return Err(NotHttp);
                    }
                    self.buf.extend_from_slice(data);
                    return Ok((data.len(), Some(state)));
                };
                self.buf.extend_from_slice(&data[..=at]);
                if self.buf.len() > MAX_LINE {
                    return Err(NotHttp);
                }
                let next = if state == Chunk::Size {
                    match httparse::parse_chunk_size(&self.buf) {
                        Ok(httparse::Status::Complete((_, 0))) => Some(Chunk::Trailer),
                        Ok(httparse::Status::Complete((_, n))) => Some(Chunk::Data(n)),
                        _ => return Err(NotHttp),
                    }
                } else if self.buf == b"\r\n" || self.buf == b"\n" {
                    None
                } else {
                    Some(Chunk::Trailer)
                };
                self.buf.clear();
                Ok((at + 1, next))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The framing the headers give (RFC 9112 §6.3): chunked when it is the last transfer
/// coding, else the content length; `None` when neither is there. A request with another
/// transfer coding, or conflicting lengths, is not followed.
fn framing(headers: &[httparse::Header<'_>], kind: Kind) -> Result<Option<Body>, NotHttp> {
    if let Some(last) = header(headers, "transfer-encoding").last() {
        let last = last
            .rsplit(|b| *b == b',')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        return if last.eq_ignore_ascii_case(b"chunked") {
            Ok(Some(Body::Chunked(Chunk::Size)))
        } else if kind == Kind::Response {
            Ok(Some(Body::UntilClose))
        } else {
            Err(NotHttp)
        };
    }
    let mut length = None;
    for value in header(headers, "content-length") {
        for part in value.split(|b| *b == b',') {
            let n: u64 = std::str::from_utf8(part.trim_ascii())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(NotHttp)?;
            if length.is_some_and(|l| l != n) {
                return Err(NotHttp);
            }
            length = Some(n);
        }
    }
    Ok(length.map(Body::Fixed))
}

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    at: Instant,
    /// HEAD: the response has no body whatever its headers say.
    head: bool,
    /// CONNECT: a 2xx answer makes a tunnel.
    connect: bool,
}

/// Follows one connection's messages and counts them into its backend's and cohort's
/// counters.
#[derive(Debug)]
pub(super) struct Observer {
    requests: Reader,
    responses: Reader,
    pending: VecDeque<Pending>,
    sinks: [Arc<HttpCounters>; 2],
    following: bool,
}

impl Observer {
    /// Counts into `backend` and `cohort`.
    pub(super) fn new(backend: Arc<HttpCounters>, cohort: Arc<HttpCounters>) -> Self {
        Self {
            requests: Reader::new(Kind::Request),
            responses: Reader::new(Kind::Response),
            pending: VecDeque::new(),
            sinks: [backend, cohort],
            following: true,
        }
    }

    /// Bytes the client sent, as they go to the backend.
    pub(super) fn client_bytes(&mut self, data: &[u8]) {
        if !self.following {
            return;
        }
        let Self {
            requests,
            pending,
            sinks,
            ..
        } = self;
        let result = requests.feed(data, &mut |head| {
            let Head::Request { method, headers } = head else {
                return Err(NotHttp);
            };
            pending.push_back(Pending {
                at: Instant::now(),
                head: method.eq_ignore_ascii_case("HEAD"),
                connect: method.eq_ignore_ascii_case("CONNECT"),
            });
            for s in sinks.iter() {
                s.request();
            }
            Ok(Next::Body(
                framing(headers, Kind::Request)?.unwrap_or(Body::None),
            ))
        });
        self.settle(result);
    }

    /// Bytes the backend sent, as they go to the client.
    pub(super) fn backend_bytes(&mut self, data: &[u8]) {
        if !self.following {
            return;
        }
        let Self {
            responses,
            pending,
            sinks,
            ..
        } = self;
        let result = responses.feed(data, &mut |head| {
            let Head::Response { code, headers } = head else {
                return Err(NotHttp);
            };
            if !(100..=999).contains(&code) {
                return Err(NotHttp);
            }
            if code < 200 {
                for s in sinks.iter() {
                    s.response(code, None);
                }
                if code == 101 {
                    // The request is answered; what follows is another protocol.
                    pending.pop_front();
                    return Ok(Next::Stop);
                }
                return Ok(Next::Body(Body::None));
            }
            let request = pending.pop_front();
            let latency = request.as_ref().map(|p| p.at.elapsed());
            for s in sinks.iter() {
                s.response(code, latency);
            }
            let (head, connect) = request.map_or((false, false), |p| (p.head, p.connect));
            if connect && (200..300).contains(&code) {
                return Ok(Next::Stop);
            }
            if head || code == 204 || code == 304 {
                return Ok(Next::Body(Body::None));
            }
            Ok(Next::Body(
                framing(headers, Kind::Response)?.unwrap_or(Body::UntilClose),
            ))
        });
        self.settle(result);
    }

    fn settle(&mut self, result: Result<bool, NotHttp>) {
        match result {
            Ok(true) => {}
            Ok(false) => self.following = false,
            Err(NotHttp) => {
                self.following = false;
                // What was pending can no longer be matched: not counted as unanswered.
                self.pending.clear();
                for s in &self.sinks {
                    s.parse_error();
                }
            }
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let left = self.pending.len() as u64;
        if left > 0 {
            for s in &self.sinks {
                s.unanswered(left);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::http_stats::HttpStats;

    fn observer() -> (Observer, Arc<HttpCounters>) {
        let backend = Arc::new(HttpCounters::new(&[]));
        let cohort = Arc::new(HttpCounters::new(&[]));
        (Observer::new(Arc::clone(&backend), cohort), backend)
    }

    /// Feeds `bytes` one byte at a time (the worst split) and in one piece; both must agree.
    fn both_ways(client: &[u8], backend: &[u8]) -> HttpStats {
        let (mut whole, w) = observer();
        whole.client_bytes(client);
        whole.backend_bytes(backend);
        drop(whole);
        let (mut bytewise, b) = observer();
        for c in client {
            bytewise.client_bytes(std::slice::from_ref(c));
        }
        for c in backend {
            bytewise.backend_bytes(std::slice::from_ref(c));
        }
        drop(bytewise);
        let (w, b) = (w.snapshot(), b.snapshot());
        assert_eq!(
            (w.requests, w.responses, w.unanswered, w.parse_errors),
            (b.requests, b.responses, b.unanswered, b.parse_errors)
        );
        w
    }

    #[test]
    fn pipelined_keepalive_requests_with_bodies_are_each_counted() {
        let client = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n\
            HEAD / HTTP/1.1\r\nHost: a\r\n\r\n";
        let backend = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
            HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\noops\r\n0\r\n\r\n\
            HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let s = both_ways(client, backend);
        assert_eq!(s.requests, 4);
        assert_eq!(s.responses.informational, 1);
        assert_eq!(s.responses.success, 2, "the HEAD answer has no body");
        assert_eq!(s.responses.server_error, 1);
        assert_eq!(s.responses.client_error, 1);
        assert_eq!(s.latency.count, 4);
        assert_eq!((s.unanswered, s.parse_errors), (0, 0));
    }

    #[test]
    fn a_request_left_without_an_answer_is_counted_when_the_connection_ends() {
        let s = both_ways(
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!((s.requests, s.responses.success, s.unanswered), (2, 1, 1));
    }

    #[test]
    fn a_body_until_close_and_a_tunnel_end_the_counting_quietly() {
        let s = both_ways(
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 999 this is body",
        );
        assert_eq!((s.responses.success, s.responses.server_error), (1, 0));
        let s = both_ways(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x02hi garbage",
        );
        assert_eq!((s.requests, s.responses.informational), (1, 1));
        assert_eq!((s.unanswered, s.parse_errors), (0, 0));
    }

    #[test]
    fn bytes_that_are_not_http_stop_the_counting_and_say_so() {
        let s = both_ways(b"\x16\x03\x01 TLS hello\r\n\r\n", b"");
        assert_eq!((s.requests, s.parse_errors), (0, 1));
        let s = both_ways(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"",
        );
        assert_eq!(s.parse_errors, 1, "conflicting lengths");
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        let s = both_ways(&huge, b"");
        assert_eq!(s.parse_errors, 1, "head too long");
    }
}
