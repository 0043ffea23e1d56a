//! HTTP counters of a front door in HTTP mode: requests, responses by status class and a
//! latency histogram, per backend and per cohort (stable, canary, preview).
//!
//! The live side (`HttpCounters`) is shared by the connections and the stats writer; the
//! file side ([`HttpStats`]) is what the stats file holds and what the agent's analysis reads.
//!
//! Histogram edges can be added while the front door runs (a route table names the
//! thresholds a job checks): a new bucket starts empty and earlier observations stay in the
//! bucket above it. The difference of two snapshots at an edge that both know is therefore
//! exact for everything observed after the edge was added, and errs on the slow side before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bucket edges every histogram has, in milliseconds: the usual SLO values (the 200 ms of the
/// default p95 check among them).
pub const DEFAULT_LATENCY_EDGES_MS: &[u64] = &[
    5, 10, 25, 50, 100, 200, 250, 300, 500, 750, 1_000, 2_500, 5_000, 10_000,
];

/// Most edges a histogram keeps (defaults plus those route tables add).
pub const MAX_LATENCY_EDGES: usize = 64;

/// Responses per status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusClasses {
    /// 1xx (interim responses, 101 included).
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirection: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx: what the error-rate check counts.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl StatusClasses {
    fn minus(&self, earlier: &StatusClasses) -> StatusClasses {
        StatusClasses {
            informational: self.informational.saturating_sub(earlier.informational),
            success: self.success.saturating_sub(earlier.success),
            redirection: self.redirection.saturating_sub(earlier.redirection),
            client_error: self.client_error.saturating_sub(earlier.client_error),
            server_error: self.server_error.saturating_sub(earlier.server_error),
        }
    }

    /// Final responses (every class but 1xx).
    pub fn finals(&self) -> u64 {
        self.success + self.redirection + self.client_error + self.server_error
    }
}

/// A latency histogram as the stats file holds it: cumulative counts per edge, Prometheus
/// style (`counts[i]` responses took at most `le_ms[i]`; the last entry of `counts` is
/// `+Inf`, equal to `count`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histogram {
    /// Upper bucket edges, milliseconds, ascending.
    pub le_ms: Vec<u64>,
    /// Cumulative counts, one per edge plus `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of all latencies, microseconds.
    pub sum_us: u64,
    /// Responses measured.
    pub count: u64,
}

impl Histogram {
    /// Responses that took at most `ms`, counted at the largest edge not above `ms` (exact
    /// when `ms` is an edge; otherwise a lower bound).
    pub fn at_most(&self, ms: u64) -> u64 {
        match self.le_ms.iter().rposition(|e| *e <= ms) {
            Some(i) => self.counts.get(i).copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Whether `ms` is one of the edges (so [`Histogram::at_most`] is exact).
    pub fn has_edge(&self, ms: u64) -> bool {
        self.le_ms.contains(&ms)
    }

    /// The smallest edge at or under which a fraction `q` of the responses fall: an upper
    /// bound of the q-quantile; `None` when empty or above the last edge.
    pub fn quantile_bound_ms(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let need = q * self.count as f64;
        self.le_ms
            .iter()
            .zip(&self.counts)
            .find(|(_, c)| {
                #[allow(clippy::cast_precision_loss)]
                let c = **c as f64;
                c >= need
            })
            .map(|(e, _)| *e)
    }

    /// What was observed since `earlier` (a snapshot of the same histogram), on this one's
    /// edges.
    pub fn minus(&self, earlier: &Histogram) -> Histogram {
        let counts = self
            .le_ms
            .iter()
            .zip(&self.counts)
            .map(|(e, c)| c.saturating_sub(earlier.at_most(*e)))
            .chain(std::iter::once(self.count.saturating_sub(earlier.count)))
            .collect();
        Histogram {
            le_ms: self.le_ms.clone(),
            counts,
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            count: self.count.saturating_sub(earlier.count),
        }
    }
}

/// One backend's or one cohort's HTTP counters, as the stats file holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpStats {
    /// Requests forwarded (complete request heads seen).
    pub requests: u64,
    /// Responses by status class.
    pub responses: StatusClasses,
    /// Requests whose connection ended before their response began.
    pub unanswered: u64,
    /// Connections on which the front door stopped counting because the bytes were not
    /// HTTP/1.1 it could follow (they are still passed on untouched).
    pub parse_errors: u64,
    /// Time from a request's head being forwarded to its response's head arriving.
    pub latency: Histogram,
}

impl HttpStats {
    /// What was counted since `earlier` (a snapshot of the same counters).
    pub fn minus(&self, earlier: &HttpStats) -> HttpStats {
        HttpStats {
            requests: self.requests.saturating_sub(earlier.requests),
            responses: self.responses.minus(&earlier.responses),
            unanswered: self.unanswered.saturating_sub(earlier.unanswered),
            parse_errors: self.parse_errors.saturating_sub(earlier.parse_errors),
            latency: self.latency.minus(&earlier.latency),
        }
    }

    /// A window for tests: `ok` 2xx and `errors` 5xx, `fast` of them in 0-100 ms (at 50 ms)
    /// and the others in 200-500 ms (at 300 ms); edges at 100, 200 and 500 ms.
    #[cfg(test)]
    pub fn sampled(ok: u64, errors: u64, fast: u64) -> HttpStats {
        let n = ok + errors;
        HttpStats {
            requests: n,
            responses: StatusClasses {
                success: ok,
                server_error: errors,
                ..StatusClasses::default()
            },
            latency: Histogram {
                le_ms: vec![100, 200, 500],
                counts: vec![fast, fast, n, n],
                sum_us: fast * 50_000 + (n - fast) * 300_000,
                count: n,
            },
            ..HttpStats::default()
        }
    }
}

/// The live counters behind one [`HttpStats`].
#[derive(Debug)]
pub(crate) struct HttpCounters {
    requests: AtomicU64,
    /// Per status class, 1xx to 5xx (anything else counts as 5xx: a broken backend).
    classes: [AtomicU64; 5],
    unanswered: AtomicU64,
    parse_errors: AtomicU64,
    latency: RwLock<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    /// Edges in microseconds, ascending, each with the count of observations in
    /// (previous edge, edge]; the last slot is `+Inf`.
    edges_us: Vec<u64>,
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl HttpCounters {
    /// Counters with the default edges plus `extra_ms`.
    pub(crate) fn new(extra_ms: &[u64]) -> Self {
        let c = Self {
            requests: AtomicU64::new(0),
            classes: Default::default(),
            unanswered: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            latency: RwLock::new(Buckets {
                edges_us: Vec::new(),
                counts: vec![AtomicU64::new(0)],
                sum_us: AtomicU64::new(0),
            }),
        };
        c.add_edges(DEFAULT_LATENCY_EDGES_MS);
        c.add_edges(extra_ms);
        c
    }

    /// Adds bucket edges (milliseconds) it does not have yet, up to [`MAX_LATENCY_EDGES`].
    pub(crate) fn add_edges(&self, edges_ms: &[u64]) {
        let missing = {
            let b = self.latency.read().unwrap_or_else(PoisonError::into_inner);
            edges_ms
                .iter()
                .any(|e| b.edges_us.binary_search(&e.saturating_mul(1000)).is_err())
        };
        if !missing {
            return;
        }
        let mut b = self.latency.write().unwrap_or_else(PoisonError::into_inner);
        for e in edges_ms {
            let us = e.saturating_mul(1000);
            if b.edges_us.len() >= MAX_LATENCY_EDGES {
                break;
            }
            if let Err(at) = b.edges_us.binary_search(&us) {
                b.edges_us.insert(at, us);
                // Empty: earlier observations stay in the bucket above (see the module docs).
                b.counts.insert(at, AtomicU64::new(0));
            }
        }
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unanswered(&self, n: u64) {
        self.unanswered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn parse_error(&self) {
        self.parse_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response with `status`, and its latency when its request is known.
    pub(crate) fn response(&self, status: u16, latency: Option<Duration>) {
        let class = match status / 100 {
            1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        };
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        if let Some(latency) = latency {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            let b = self.latency.read().unwrap_or_else(PoisonError::into_inner);
            let at = b.edges_us.partition_point(|e| *e < us);
            if let Some(slot) = b.counts.get(at) {
                slot.fetch_add(1, Ordering::Relaxed);
            }
            b.sum_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> HttpStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let b = self.latency.read().unwrap_or_else(PoisonError::into_inner);
        let mut cumulative = 0;
        let counts: Vec<u64> = b
            .counts
            .iter()
            .map(|c| {
                cumulative += load(c);
                cumulative
            })
            .collect();
        HttpStats {
            requests: load(&self.requests),
            responses: StatusClasses {
                informational: load(&self.classes[0]),
                success: load(&self.classes[1]),
                redirection: load(&self.classes[2]),
                client_error: load(&self.classes[3]),
                server_error: load(&self.classes[4]),
            },
            unanswered: load(&self.unanswered),
            parse_errors: load(&self.parse_errors),
            latency: Histogram {
                le_ms: b.edges_us.iter().map(|e| e / 1000).collect(),
                count: cumulative,
                counts,
                sum_us: load(&b.sum_us),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn responses_fall_into_their_class_and_bucket() {
        let c = HttpCounters::new(&[]);
        c.request();
        c.response(200, ms(3));
        c.response(204, ms(200));
        c.response(503, ms(201));
        c.response(404, None);
        c.response(999, ms(20_000));
        let s = c.snapshot();
        assert_eq!(s.requests, 1);
        assert_eq!(s.responses.success, 2);
        assert_eq!(s.responses.server_error, 2);
        assert_eq!(s.responses.client_error, 1);
        assert_eq!(s.latency.count, 4, "no latency without a request");
        assert_eq!(s.latency.at_most(5), 1);
        assert_eq!(s.latency.at_most(200), 2, "an edge is inclusive");
        assert_eq!(s.latency.at_most(250), 3);
        assert_eq!(s.latency.counts.last(), Some(&4), "+Inf holds them all");
        assert_eq!(s.latency.quantile_bound_ms(0.5), Some(200));
        assert_eq!(
            s.latency.quantile_bound_ms(1.0),
            None,
            "above the last edge"
        );
    }

    #[test]
    fn an_edge_added_later_counts_exactly_from_then_on() {
        let c = HttpCounters::new(&[]);
        c.response(200, ms(140));
        let before = c.snapshot();
        assert!(!before.latency.has_edge(150));
        c.add_edges(&[150, 150]);
        c.response(200, ms(140));
        c.response(200, ms(160));
        let after = c.snapshot();
        assert!(after.latency.has_edge(150));
        let window = after.minus(&before);
        assert_eq!(window.latency.count, 2);
        assert_eq!(window.latency.at_most(150), 1);
        assert_eq!(window.latency.at_most(200), 2);
        // The cumulative view stays monotonic: the early 140 ms one sits in the 200 bucket.
        assert!(after.latency.counts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_stats_file_form_round_trips() {
        let c = HttpCounters::new(&[42]);
        c.response(500, ms(1));
        let s = c.snapshot();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""5xx":1"#), "{json}");
        let back: HttpStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
