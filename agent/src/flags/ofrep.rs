//! OpenFeature's Remote Evaluation Protocol (OFREP) for one app, on a loopback address: what
//! the stock OpenFeature providers call.
//!
//! * `POST /ofrep/v1/evaluate/flags/{key}` with `{"context": {...}}`: `200` with `{key, value,
//!   reason, variant, metadata}`; `404` with `FLAG_NOT_FOUND`; `400` with `{key, errorCode,
//!   errorDetails}` for the other errors.
//! * `POST /ofrep/v1/evaluate/flags`: every flag (`{"flags": [...]}`) with an `ETag` (a digest
//!   of the answer), `304` when `If-None-Match` has it.
//! * `GET /ofrep/v1/configuration`: polling (`minPollingIntervalMs`) and, as a Gantry
//!   extension (`capabilities.cacheInvalidation.gantryEvents`), the event stream.
//! * `GET /ofrep/v1/events`: a server-sent event per change of the served set ([`events`]).
//!
//! A disabled flag answers `DISABLED` with its default variant's value: OFREP has no way to
//! say "use your code default" in a success, and a kill switch must still be seen as one. A
//! request is evaluated against the set in force at that moment (a `watch` channel): a change
//! reaches the next request on every connection.

use std::convert::Infallible;

use gantry_flags::{ErrorCode, FlagSet, Reason, Resolution};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::events::{self, EventBody, Opened, Streams};
use super::{Feed, Served};

/// What the endpoint answers: JSON, or an event stream.
type Body = Either<Full<Bytes>, EventBody>;

/// The largest request body read (flagd's default).
const MAX_BODY: usize = 1024 * 1024;
/// The polling interval the configuration endpoint allows: a kill switch reaches a polling
/// provider within this.
pub const MIN_POLLING_INTERVAL_MS: u64 = 500;
/// The path prefix of single evaluations.
const SINGLE: &str = "/ofrep/v1/evaluate/flags/";

/// Serves OFREP on `listener` from `served` until `token` is cancelled.
pub async fn serve(listener: TcpListener, served: Feed, token: CancellationToken) {
    let streams = Streams::default();
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors and the like: the next accept may work.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let served = served.clone();
        let streams = streams.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let conn_token = token.clone();
            let svc = service_fn(move |req| {
                let served = served.clone();
                let streams = streams.clone();
                let token = conn_token.clone();
                async move { Ok::<_, Infallible>(route(req, served, &streams, token).await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                // A connection error is the client's: nothing to record.
                _ = conn.as_mut() => {}
                () = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn route(
    req: Request<Incoming>,
    served: Feed,
    streams: &Streams,
    token: CancellationToken,
) -> Response<Body> {
    if req.uri().path() != events::PATH {
        return handle(req, &served).await.map(Either::Left);
    }
    if req.method() != Method::GET {
        return not_allowed().map(Either::Left);
    }
    match streams.open(served, token) {
        Opened::Stream(r) => r.map(Either::Right),
        Opened::Refused(r) => r.map(|s| Either::Left(Full::new(Bytes::from(s)))),
    }
}

async fn handle(req: Request<Incoming>, served: &Feed) -> Response<Full<Bytes>> {
    let now = crate::clock::unix_now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let if_none_match = req.headers().get(IF_NONE_MATCH).cloned();
    if path == "/ofrep/v1/configuration" {
        return if method == Method::GET {
            reply(StatusCode::OK, &configuration())
        } else {
            not_allowed()
        };
    }
    let single = path.strip_prefix(SINGLE).map(percent_decode);
    if single.is_none() && path != "/ofrep/v1/evaluate/flags" {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({"errorDetails": format!("no such OFREP endpoint: {path}")}),
        );
    }
    if method != Method::POST {
        return not_allowed();
    }
    let context = match read_context(req.into_body()).await {
        Ok(c) => c,
        Err(detail) => {
            let key = single.unwrap_or_default();
            return reply(
                StatusCode::BAD_REQUEST,
                &json!({"key": key, "errorCode": "INVALID_CONTEXT", "errorDetails": detail}),
            );
        }
    };
    let current = served.borrow().clone();
    match single {
        Some(key) => {
            let (status, body) = evaluate_one(current.as_deref(), &key, &context, now);
            reply(status, &body)
        }
        None => bulk(current.as_deref(), &context, now, if_none_match.as_ref()),
    }
}

fn not_allowed() -> Response<Full<Bytes>> {
    reply(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"errorDetails": "method not allowed"}),
    )
}

fn configuration() -> Value {
    json!({
        "name": "gantry-agent",
        "capabilities": {
            "cacheInvalidation": {
                "polling": {"enabled": true, "minPollingIntervalMs": MIN_POLLING_INTERVAL_MS},
                // Gantry's extension: OFREP has no push yet (ADR-0008 proposes SSE).
                "gantryEvents": {
                    "enabled": true,
                    "path": events::PATH,
                    "heartbeatMs": events::HEARTBEAT.as_secs() * 1000,
                    "maxStreams": events::MAX_STREAMS
                }
            },
            "flagEvaluation": {
                "supportedTypes": ["boolean", "string", "integer", "float", "object"]
            }
        }
    })
}

async fn read_context(body: Incoming) -> Result<Value, String> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request body: {e}"))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    match doc.get("context") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(c @ Value::Object(_)) => Ok(c.clone()),
        Some(_) => Err("context must be a JSON object".to_owned()),
    }
}

/// One flag's OFREP answer: the status and the body.
fn evaluate_one(served: Option<&Served>, key: &str, ctx: &Value, now: i64) -> (StatusCode, Value) {
    let Some(served) = served else {
        return (
            StatusCode::NOT_FOUND,
            json!({"key": key, "errorCode": "FLAG_NOT_FOUND",
                   "errorDetails": "no flag set is in force for this app"}),
        );
    };
    answer(&served.set, key, served.set.evaluate(key, ctx, now))
}

fn answer(set: &FlagSet, key: &str, r: Resolution<'_>) -> (StatusCode, Value) {
    let metadata = flat(r.metadata);
    if let Some((code, detail)) = &r.error {
        let status = if *code == ErrorCode::FlagNotFound {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        return (
            status,
            json!({"key": key, "errorCode": code.as_str(), "errorDetails": detail, "metadata": metadata}),
        );
    }
    let (value, variant) = match (r.value, r.reason) {
        (Some(v), _) => (v, r.variant.clone()),
        (None, Reason::Disabled) => {
            let flag = set.flags.get(key);
            match flag.and_then(|f| {
                f.default_variant
                    .as_ref()
                    .and_then(|d| f.variants.get(d).map(|v| (v, d.clone())))
            }) {
                Some((v, d)) => (v, Some(d)),
                None => {
                    return (
                        StatusCode::NOT_FOUND,
                        json!({"key": key, "errorCode": "FLAG_NOT_FOUND",
                               "errorDetails": "the flag is disabled and has no default variant"}),
                    );
                }
            }
        }
        (None, _) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({"key": key, "errorCode": "GENERAL",
                       "errorDetails": "no variant for this context and no default variant"}),
            );
        }
    };
    (
        StatusCode::OK,
        json!({"key": key, "value": value, "reason": r.reason.as_str(), "variant": variant,
               "metadata": metadata}),
    )
}

/// OFREP metadata is flat: strings, numbers and booleans only.
fn flat(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(_, v)| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn bulk(
    served: Option<&Served>,
    ctx: &Value,
    now: i64,
    if_none_match: Option<&HeaderValue>,
) -> Response<Full<Bytes>> {
    let flags: Vec<Value> = match served {
        None => Vec::new(),
        Some(s) => s
            .set
            .flags
            .keys()
            .map(|k| answer(&s.set, k, s.set.evaluate(k, ctx, now)).1)
            .collect(),
    };
    let body = json!({"flags": flags}).to_string();
    let etag = format!(
        "\"{}\"",
        &gantry_policy::job::Sha256Hex::of(body.as_bytes()).as_str()[..32]
    );
    let matches = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let mut resp = if matches {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        raw_reply(StatusCode::OK, body)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    raw_reply(status, body.to_string())
}

fn raw_reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Decodes `%XX` escapes of a path segment (a flag key may hold any character).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Served {
        let set = FlagSet::parse(
            br#"{"flags":{
                "on":{"state":"ENABLED","defaultVariant":"y","variants":{"y":true,"n":false}},
                "off":{"state":"DISABLED","defaultVariant":"n","variants":{"y":true,"n":false}},
                "who":{"state":"ENABLED","defaultVariant":"anon","variants":{"anon":"a","staff":"s"},
                  "targeting":{"if":[{"ends_with":[{"var":"email"},"@corp.io"]},"staff",null]},
                  "metadata":{"owner":"web","nested":{"x":1}}}}}"#,
        )
        .unwrap();
        Served {
            version: 1,
            digest: "0".repeat(64),
            set,
        }
    }

    #[test]
    fn single_answers_follow_ofrep() {
        let s = served();
        let ctx = json!({"email": "a@corp.io"});
        let (st, body) = evaluate_one(Some(&s), "who", &ctx, 0);
        assert_eq!(st, StatusCode::OK);
        assert_eq!(body["value"], "s");
        assert_eq!(body["reason"], "TARGETING_MATCH");
        assert_eq!(body["metadata"], json!({"owner": "web"}));
        let (st, body) = evaluate_one(Some(&s), "off", &ctx, 0);
        assert_eq!(
            (st, &body["reason"], &body["value"]),
            (StatusCode::OK, &json!("DISABLED"), &json!(false))
        );
        let (st, body) = evaluate_one(Some(&s), "nope", &ctx, 0);
        assert_eq!(
            (st, &body["errorCode"]),
            (StatusCode::NOT_FOUND, &json!("FLAG_NOT_FOUND"))
        );
        let (st, _) = evaluate_one(None, "on", &ctx, 0);
        assert_eq!(st, StatusCode::NOT_FOUND);
    }

    #[test]
    fn bulk_has_an_etag_and_answers_304_to_it() {
        let s = served();
        let ctx = json!({});
        let first = bulk(Some(&s), &ctx, 0, None);
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[ETAG].clone();
        let again = bulk(Some(&s), &ctx, 0, Some(&etag));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = bulk(Some(&s), &json!({"email": "a@corp.io"}), 0, Some(&etag));
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
    }
}
