//! Change notification for one app's OFREP endpoint: `GET /ofrep/v1/events`, a server-sent
//! event stream (`text/event-stream`), so that a kill switch reaches a watching app at once
//! instead of at its next poll.
//!
//! Each event is an SSE `message` (no `event:` line, so an `EventSource`'s `onmessage` gets it)
//! with the set's version as its `id` and a JSON `data` line shaped like OFREP's proposed push
//! (ADR-0008): `{"type":"refetchEvaluation","etag":…,"version":…,"changed":[…]}`. The first
//! event, sent on connect, carries the set in force and lists every flag in it; each change
//! of the served set then sends one event listing the flags added, changed or removed since
//! the previous event on that stream. A comment line (`: heartbeat`) every [`HEARTBEAT`] lets
//! both ends notice a dead peer.
//!
//! A slow or dead client never holds up the agent or other clients: the set in force is a
//! `watch` channel (a push never waits for a reader), each stream has its own task with at
//! most `QUEUED` frames queued, a stream whose client has not taken a frame within
//! [`STALL`] is closed, and a client that falls behind gets one event for the newest set (its
//! `changed` is the union of what it missed). At most [`MAX_STREAMS`] streams are open per
//! app; one more is answered `503` with a JSON `errorDetails` and `Retry-After`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Feed, Served};

/// The path of the event stream.
pub const PATH: &str = "/ofrep/v1/events";
/// Event streams open at once per app; one more is refused with `503`.
pub const MAX_STREAMS: usize = 256;
/// How often a stream with nothing to say sends a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a frame may wait for a client that does not read before its stream is closed.
pub const STALL: Duration = Duration::from_secs(30);
/// Frames queued per stream (beyond what the socket buffers).
const QUEUED: usize = 4;
/// The reconnection delay suggested to `EventSource` clients (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 1000;

/// The body of an event stream.
pub type EventBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// The event streams of one app's endpoint and their limit.
#[derive(Debug, Clone)]
pub struct Streams {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Default for Streams {
    fn default() -> Self {
        Streams::with_limit(MAX_STREAMS)
    }
}

/// What [`Streams::open`] answers.
#[derive(Debug)]
pub enum Opened {
    /// `200`, the stream.
    Stream(Response<EventBody>),
    /// `503`: [`Streams`]'s limit is reached; a JSON body says so.
    Refused(Response<String>),
}

impl Streams {
    /// At most `limit` streams at once.
    pub fn with_limit(limit: usize) -> Streams {
        Streams {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Opens a stream of the changes of `feed` until the client goes, `token` is cancelled
    /// or the feed's sender is dropped.
    pub fn open(&self, feed: Feed, token: CancellationToken) -> Opened {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let body = json!({
                "errorCode": "GENERAL",
                "errorDetails": format!(
                    "this app already has {} open event streams, the limit: poll \
                     /ofrep/v1/evaluate/flags instead, or retry later",
                    self.limit
                ),
            });
            let mut r = Response::new(body.to_string());
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            return Opened::Refused(r);
        };
        let (tx, rx) = mpsc::channel(QUEUED);
        tokio::spawn(run(feed, tx, token, permit));
        let mut r = Response::new(StreamBody::new(ReceiverStream::new(rx)));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Opened::Stream(r)
    }
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// One stream: the set in force, then one event per change and heartbeats in between.
async fn run(mut feed: Feed, tx: Tx, token: CancellationToken, _permit: OwnedSemaphorePermit) {
    let mut last = feed.borrow_and_update().clone();
    let mut first = format!("retry: {RETRY_MS}\n").into_bytes();
    first.extend_from_slice(&event(last.as_deref(), &all_keys(last.as_deref())));
    if !send(&tx, first).await {
        return;
    }
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            () = token.cancelled() => return,
            () = tx.closed() => return,
            _ = beat.tick() => heartbeat(),
            changed = feed.changed() => {
                if changed.is_err() {
                    // The agent is shutting the endpoint down.
                    return;
                }
                let now = feed.borrow_and_update().clone();
                let keys = changed_keys(last.as_deref(), now.as_deref());
                let same = match (&last, &now) {
                    (Some(a), Some(b)) => a.version == b.version && a.digest == b.digest,
                    (None, None) => true,
                    _ => false,
                };
                last = now;
                if same {
                    continue;
                }
                beat.reset();
                event(last.as_deref(), &keys)
            }
        };
        if !send(&tx, frame).await {
            return;
        }
    }
}

/// Queues a frame; `false` when the client is gone or has not read for [`STALL`].
async fn send(tx: &Tx, frame: Vec<u8>) -> bool {
    matches!(
        tokio::time::timeout(STALL, tx.send(Ok(Frame::data(Bytes::from(frame))))).await,
        Ok(Ok(()))
    )
}

/// The ETag of a set: the first 128 bits of the digest of its signed bytes, quoted.
pub fn etag(served: &Served) -> String {
    let d = served.digest.get(..32).unwrap_or(&served.digest);
    format!("\"{d}\"")
}

/// One event's bytes: `id: VERSION`, one `data:` line of JSON, a blank line. With no set in
/// force, version 0 and a null ETag.
pub fn event(served: Option<&Served>, changed: &[String]) -> Vec<u8> {
    let (version, etag) = served.map_or((0, None), |s| (s.version, Some(etag(s))));
    let data = json!({
        "type": "refetchEvaluation",
        "etag": etag,
        "version": version,
        "changed": changed,
    });
    // JSON from serde_json has no raw newline, so one `data:` line holds it.
    format!("id: {version}\ndata: {data}\n\n").into_bytes()
}

/// A comment line: ignored by SSE clients, but it makes the connection carry bytes.
pub fn heartbeat() -> Vec<u8> {
    b": heartbeat\n\n".to_vec()
}

fn all_keys(served: Option<&Served>) -> Vec<String> {
    served.map_or_else(Vec::new, |s| s.set.flags.keys().cloned().collect())
}

/// The flags added, changed or removed from `old` to `new`, sorted.
pub fn changed_keys(old: Option<&Served>, new: Option<&Served>) -> Vec<String> {
    let mut keys = match (old, new) {
        (Some(o), Some(n)) => {
            let c = gantry_flags::changes(&o.set, &n.set);
            [c.added, c.changed, c.removed].concat()
        }
        (None, n) => all_keys(n),
        (o, None) => all_keys(o),
    };
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::sync::watch;

    use super::*;
    use gantry_flags::FlagSet;

    fn served(version: u64, checkout: &str) -> Arc<Served> {
        let doc = format!(
            r#"{{"flags":{{
                "checkout":{{"state":"{checkout}","defaultVariant":"n","variants":{{"y":true,"n":false}}}},
                "banner":{{"state":"ENABLED","defaultVariant":"a","variants":{{"a":"A"}}}}}}}}"#
        );
        Arc::new(Served {
            version,
            digest: format!("{version:064x}"),
            set: FlagSet::parse(doc.as_bytes()).unwrap(),
        })
    }

    #[test]
    fn an_event_is_one_message_with_the_version_as_its_id() {
        let s = served(7, "ENABLED");
        let text = String::from_utf8(event(Some(&s), &["checkout".to_owned()])).unwrap();
        let (head, data) = text.split_once("\ndata: ").unwrap();
        assert_eq!(head, "id: 7");
        assert!(data.ends_with("\n\n") && !data.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
        assert_eq!(
            v,
            json!({"type": "refetchEvaluation", "etag": format!("\"{}\"", &s.digest[..32]),
                   "version": 7, "changed": ["checkout"]})
        );
        let none = String::from_utf8(event(None, &[])).unwrap();
        assert!(none.starts_with("id: 0\ndata: {"), "{none}");
        assert!(none.contains(r#""etag":null"#), "{none}");
        assert_eq!(heartbeat(), b": heartbeat\n\n");
    }

    #[test]
    fn changed_keys_are_the_flags_that_differ() {
        let (a, b) = (served(1, "ENABLED"), served(2, "DISABLED"));
        assert_eq!(changed_keys(Some(&a), Some(&b)), ["checkout"]);
        assert_eq!(changed_keys(None, Some(&a)), ["banner", "checkout"]);
        assert!(changed_keys(Some(&a), Some(&a)).is_empty());
    }

    async fn next_text(body: &mut EventBody) -> String {
        let frame = body.frame().await.unwrap().unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_stream_sends_the_set_in_force_then_each_change() {
        let (tx, feed) = watch::channel(Some(served(1, "ENABLED")));
        let streams = Streams::default();
        let Opened::Stream(resp) = streams.open(feed, CancellationToken::new()) else {
            panic!("refused");
        };
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/event-stream");
        let mut body = resp.into_body();
        let first = next_text(&mut body).await;
        assert!(first.starts_with("retry: 1000\nid: 1\ndata: "), "{first}");
        assert!(
            first.contains(r#""changed":["banner","checkout"]"#),
            "{first}"
        );
        tx.send_replace(Some(served(2, "DISABLED")));
        let second = next_text(&mut body).await;
        assert!(second.starts_with("id: 2\ndata: "), "{second}");
        assert!(second.contains(r#""changed":["checkout"]"#), "{second}");
        // The agent stops serving: the stream ends.
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn one_stream_over_the_limit_is_refused_with_503() {
        let (_tx, feed) = watch::channel(None);
        let streams = Streams::with_limit(1);
        let token = CancellationToken::new();
        let Opened::Stream(open) = streams.open(feed.clone(), token.clone()) else {
            panic!("refused under the limit");
        };
        let Opened::Refused(refused) = streams.open(feed.clone(), token.clone()) else {
            panic!("a second stream was accepted over a limit of 1");
        };
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            refused.body().contains("1 open event streams, the limit"),
            "{}",
            refused.body()
        );
        // Closing the first frees its place.
        drop(open);
        tokio::time::timeout(Duration::from_secs(5), async {
            while streams.permits.available_permits() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(matches!(streams.open(feed, token), Opened::Stream(_)));
    }
}
