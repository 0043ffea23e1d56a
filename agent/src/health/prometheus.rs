//! External metrics as gates: a job's Prometheus checks, each an instant query
//! (`GET /api/v1/query`) whose scalar or single-series result must meet a condition.
//!
//! Only a number decides: an empty result, NaN, several series, or any failure to get an
//! answer (connect, timeout, HTTP status, a body too large or not Prometheus's JSON) is **no
//! data** with the reason, so the job's `no_data` rule applies; nothing but a value that
//! meets its condition passes (the Argo Rollouts complaint of a run reported successful with
//! every measurement failed cannot happen here).

use std::fmt;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::signals::Outcome;
use crate::job::{Condition, PromCheck, PromGate, PromUrl};

/// The largest answer read; a bigger one is no data (an instant query gating a deploy
/// returns one number).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// How long one query may take, connect included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a query gave no number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoValue {
    /// An empty vector.
    #[error("the query returned no series")]
    Empty,
    /// More than one series: the condition needs a single value.
    #[error("the query returned {0} series, not one (aggregate it, e.g. with sum)")]
    Series(usize),
    /// NaN (e.g. a rate of 0 over 0).
    #[error("the query returned NaN")]
    NaN,
    /// Not connected, timed out, or the HTTP exchange failed.
    #[error("cannot query Prometheus at {url}: {why}")]
    Unreachable {
        /// The server.
        url: String,
        /// What failed.
        why: String,
    },
    /// An HTTP status other than 200, with Prometheus's error when it gave one.
    #[error("Prometheus answered HTTP {status}: {detail}")]
    Status {
        /// The status code.
        status: u16,
        /// `errorType: error` from the body, or its start.
        detail: String,
    },
    /// More than [`MAX_RESPONSE_BYTES`].
    #[error("the answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// Not the query API's JSON, or a result type without one number (matrix, string).
    #[error("cannot read the answer: {0}")]
    Unreadable(String),
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct PromVerdict {
    /// The check's name.
    pub name: String,
    /// The query as sent (the template filled in).
    pub query: String,
    /// The condition.
    pub condition: Condition,
    /// Pass, fail, or no data.
    pub outcome: Outcome,
    /// The value; `None` with no data.
    pub value: Option<f64>,
    /// Why there is no value.
    pub no_value: Option<NoValue>,
}

impl PromVerdict {
    /// The verdict of `result` against `check`'s condition.
    pub fn of(check: &PromCheck, query: String, result: Result<f64, NoValue>) -> Self {
        let (outcome, value, no_value) = match result {
            Ok(v) if check.condition.holds(v) => (Outcome::Pass, Some(v), None),
            Ok(v) => (Outcome::Fail, Some(v), None),
            Err(why) => (Outcome::NoData, None, Some(why)),
        };
        Self {
            name: check.name.clone(),
            query,
            condition: check.condition,
            outcome,
            value,
            no_value,
        }
    }

    /// The audit entry's object: `{"metric": "prometheus", "name", "query", "condition",
    /// "outcome", "value", "reason"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "metric": "prometheus",
            "name": self.name,
            "query": self.query,
            "condition": self.condition.to_string(),
            "outcome": match self.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "fail",
                Outcome::NoData => "no_data",
            },
            "value": self.value,
            "reason": self.no_value.as_ref().map(ToString::to_string),
        })
    }
}

impl fmt::Display for PromVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let met = match self.outcome {
            Outcome::Pass => "meets",
            Outcome::Fail => "does not meet",
            Outcome::NoData => "has no value for",
        };
        match (&self.value, &self.no_value) {
            (Some(v), _) => write!(
                f,
                "prometheus check {}: {} = {v} {met} {}",
                self.name, self.query, self.condition
            ),
            (None, why) => write!(
                f,
                "prometheus check {}: {} {met} {} ({})",
                self.name,
                self.query,
                self.condition,
                why.as_ref().map_or_else(String::new, ToString::to_string)
            ),
        }
    }
}

/// Runs every check of `gate` for `app`'s `cohort` over `window`, one after the other.
pub async fn judge(gate: &PromGate, app: &str, cohort: &str, window: Duration) -> Vec<PromVerdict> {
    let mut out = Vec::with_capacity(gate.checks.len());
    for check in &gate.checks {
        let query = check.render(app, cohort, window);
        let result =
            match tokio::time::timeout(QUERY_TIMEOUT, instant_query(&gate.url, &query)).await {
                Ok(r) => r,
                Err(_) => Err(NoValue::Unreachable {
                    url: gate.url.to_string(),
                    why: format!("no answer within {} s", QUERY_TIMEOUT.as_secs()),
                }),
            };
        out.push(PromVerdict::of(check, query, result));
    }
    out
}

/// `GET PREFIX/api/v1/query?query=...` and the one number it answers.
///
/// # Errors
///
/// [`NoValue`] when there is no single number.
pub async fn instant_query(url: &PromUrl, query: &str) -> Result<f64, NoValue> {
    let unreachable = |why: String| NoValue::Unreachable {
        url: url.to_string(),
        why,
    };
    let path = format!("{}/api/v1/query?query={}", url.prefix, encode(query));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, url.authority())
        .header(hyper::header::USER_AGENT, "gantry-agent-analysis")
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let driver = tokio::spawn(async move {
        // The connection ends with the exchange; its error, if any, is the request's.
        let _ = connection.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    NoValue::TooLarge
                } else {
                    unreachable(e.to_string())
                }
            })?
            .to_bytes();
        read_answer(status, &body)
    }
    .await;
    driver.abort();
    result
}

/// Percent-encodes a query-string value (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The number in an answer of the query API: a scalar, or a vector of one sample.
///
/// # Errors
///
/// [`NoValue`] for anything else.
pub fn read_answer(status: u16, body: &[u8]) -> Result<f64, NoValue> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status != 200 {
        let detail = match &parsed {
            Ok(v) => format!(
                "{}: {}",
                v["errorType"].as_str().unwrap_or("error"),
                v["error"].as_str().unwrap_or("")
            ),
            Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        };
        return Err(NoValue::Status { status, detail });
    }
    let v = parsed.map_err(|e| NoValue::Unreadable(e.to_string()))?;
    if v["status"] != "success" {
        return Err(NoValue::Unreadable(format!("status {}", v["status"])));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"]
                .as_array()
                .ok_or_else(|| NoValue::Unreadable("a vector without a result list".to_owned()))?;
            match series.as_slice() {
                [] => return Err(NoValue::Empty),
                [one] => &one["value"],
                many => return Err(NoValue::Series(many.len())),
            }
        }
        other => {
            return Err(NoValue::Unreadable(format!(
                "result type {}, not a scalar or an instant vector",
                other.unwrap_or("missing")
            )));
        }
    };
    // A sample is [unix time, "value"]; the value is a string so that NaN and ±Inf fit.
    let text = sample[1]
        .as_str()
        .ok_or_else(|| NoValue::Unreadable(format!("sample {sample} has no value")))?;
    let value: f64 = match text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t
            .parse()
            .map_err(|_| NoValue::Unreadable(format!("value {t:?} is not a number")))?,
    };
    if value.is_nan() {
        return Err(NoValue::NaN);
    }
    Ok(value)
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
