//! `/metrics` over plain HTTP on `[metrics] listen` (loopback by default): the agent's
//! counters ([`crate::metrics`]) and, collected at each scrape, per app the front door's
//! requests, responses by status class and latency per cohort, connections, and per instance
//! its restarts, CPU and resident memory.
//!
//! Read-only and without secrets: labels are app names, cohorts, status classes, instance
//! indexes and versions. Paths under `/dashboard` go to the [`crate::dashboard`] when it runs;
//! anything else but `GET /metrics` is answered 404 (405 for another method on it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dashboard::Dashboard;
use crate::executor::Executor;
use crate::metrics::{OPENMETRICS, TEXT_FORMAT};
use crate::traffic::http_stats::HttpStats;

/// What one scrape saw of one app.
#[derive(Debug, Default)]
struct AppScrape {
    app: String,
    /// Front door: client connections accepted and those closed unrouted.
    connections: Option<(u64, u64)>,
    /// Front door in HTTP mode: per cohort.
    cohorts: Vec<(String, HttpStats)>,
    instances: Vec<InstanceScrape>,
}

#[derive(Debug)]
struct InstanceScrape {
    index: u32,
    version: String,
    restarts: u32,
    /// Share of one core since the previous scrape.
    cpu: Option<f64>,
    memory: Option<u64>,
}

/// The scrape-time half of `/metrics`.
#[derive(Debug)]
struct Scrape(Vec<AppScrape>);

/// Serves `/metrics`, and `/dashboard` when `dashboard` is given, on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    executor: Executor,
    dashboard: Option<Dashboard>,
    stop: CancellationToken,
) {
    let system = Arc::new(Mutex::new(System::new()));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics listener: cannot accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (executor, system, dashboard) =
            (executor.clone(), Arc::clone(&system), dashboard.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (executor, system) = (executor.clone(), Arc::clone(&system));
                let dashboard = dashboard.clone();
                async move {
                    let path = req.uri().path();
                    let resp = match &dashboard {
                        Some(d) if crate::dashboard::http::is_dashboard_path(path) => {
                            crate::dashboard::http::answer(d, req.method(), path, req.uri().query())
                        }
                        _ => answer(&req, &executor, &system).await,
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection ended: {e}");
            }
        });
    }
}

/// Binds the metrics listener.
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn answer(
    req: &Request<Incoming>,
    executor: &Executor,
    system: &Mutex<System>,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *resp.status_mut() = status;
        resp
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let scrape = collect(executor, system).await;
    let body = crate::metrics::global().render(Box::new(scrape), openmetrics);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        TEXT_FORMAT
    };
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn collect(executor: &Executor, system: &Mutex<System>) -> Scrape {
    let status = executor.status(None).await;
    let mut routers: std::collections::BTreeMap<_, _> =
        executor.router_stats().into_iter().collect();
    let pids: Vec<Pid> = status
        .iter()
        .flat_map(|a| a.instances.iter().map(|i| Pid::from_u32(i.pid)))
        .collect();
    let mut system = system.lock().unwrap_or_else(PoisonError::into_inner);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing().with_cpu().with_memory(),
    );
    let apps = status
        .into_iter()
        .map(|a| {
            let stats = routers.remove(&a.name);
            AppScrape {
                app: a.name.to_string(),
                connections: stats.as_ref().map(|s| (s.connections, s.unrouted)),
                cohorts: stats
                    .map(|s| s.cohorts.into_iter().collect())
                    .unwrap_or_default(),
                instances: a
                    .instances
                    .iter()
                    .map(|i| {
                        let process = system.process(Pid::from_u32(i.pid));
                        InstanceScrape {
                            index: i.index,
                            version: i.version.to_string(),
                            restarts: i.restarts,
                            cpu: process.map(|p| f64::from(p.cpu_usage()) / 100.0),
                            memory: process.map(sysinfo::Process::memory),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Scrape(apps)
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + Copy + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, N)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut connections = Vec::new();
        let mut unrouted = Vec::new();
        let mut requests = Vec::new();
        let mut responses = Vec::new();
        let mut unanswered = Vec::new();
        let mut restarts = Vec::new();
        let mut cpu = Vec::new();
        let mut memory = Vec::new();
        let indexes: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|a| a.instances.iter().map(|i| i.index.to_string()).collect())
            .collect();
        for (a, idx) in self.0.iter().zip(&indexes) {
            let app = a.app.as_str();
            if let Some((total, lost)) = a.connections {
                connections.push((vec![("app", app)], total));
                unrouted.push((vec![("app", app)], lost));
            }
            for (cohort, h) in &a.cohorts {
                let labels = vec![("app", app), ("cohort", cohort.as_str())];
                requests.push((labels.clone(), h.requests));
                unanswered.push((labels.clone(), h.unanswered));
                let r = &h.responses;
                for (class, n) in [
                    ("1xx", r.informational),
                    ("2xx", r.success),
                    ("3xx", r.redirection),
                    ("4xx", r.client_error),
                    ("5xx", r.server_error),
                ] {
                    let mut l = labels.clone();
                    l.push(("class", class));
                    responses.push((l, n));
                }
            }
            for (i, index) in a.instances.iter().zip(idx) {
                let labels = vec![
                    ("app", app),
                    ("instance", index.as_str()),
                    ("version", i.version.as_str()),
                ];
                restarts.push((labels.clone(), u64::from(i.restarts)));
                if let Some(c) = i.cpu {
                    cpu.push((labels.clone(), c));
                }
                if let Some(m) = i.memory {
                    memory.push((labels, i64::try_from(m).unwrap_or(i64::MAX)));
                }
            }
        }
        counter(
            &mut encoder,
            "gantry_frontdoor_connections",
            "Client connections the app's front door accepted.",
            &connections,
        )?;
        counter(
            &mut encoder,
            "gantry_frontdoor_unrouted_connections",
            "Client connections closed at once: no backend in rotation, or every one refused.",
            &unrouted,
        )?;
        counter(
            &mut encoder,
            "gantry_frontdoor_requests",
            "HTTP requests forwarded by the front door (HTTP mode), per cohort.",
            &requests,
        )?;
        counter(
            &mut encoder,
            "gantry_frontdoor_responses",
            "HTTP responses through the front door (HTTP mode), per cohort and status class; \
             5xx are the errors canary analysis counts.",
            &responses,
        )?;
        counter(
            &mut encoder,
            "gantry_frontdoor_unanswered_requests",
            "HTTP requests whose connection ended before their response began.",
            &unanswered,
        )?;
        let latencies: Vec<_> = self
            .0
            .iter()
            .flat_map(|a| a.cohorts.iter().map(move |(c, h)| (a.app.as_str(), c, h)))
            .collect();
        if !latencies.is_empty() {
            let mut m = encoder.encode_descriptor(
                "gantry_frontdoor_response_duration_seconds",
                "Time from a request's head forwarded to its response's head received, per \
                 cohort (front door in HTTP mode).",
                None,
                MetricType::Histogram,
            )?;
            for (app, cohort, h) in latencies {
                let labels: Labels<'_> = vec![("app", app), ("cohort", cohort.as_str())];
                let l = &h.latency;
                let mut previous = 0;
                let mut buckets: Vec<(f64, u64)> = l
                    .le_ms
                    .iter()
                    .zip(&l.counts)
                    .map(|(edge, cumulative)| {
                        let n = cumulative.saturating_sub(previous);
                        previous = *cumulative;
                        #[allow(clippy::cast_precision_loss)]
                        let le = *edge as f64 / 1000.0;
                        (le, n)
                    })
                    .collect();
                buckets.push((f64::MAX, l.count.saturating_sub(previous)));
                #[allow(clippy::cast_precision_loss)]
                let sum = l.sum_us as f64 / 1e6;
                m.encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, l.count, &buckets, None)?;
            }
        }
        counter(
            &mut encoder,
            "gantry_instance_restarts",
            "Restarts of an app instance by the supervisor since it started.",
            &restarts,
        )?;
        gauge(
            &mut encoder,
            "gantry_instance_cpu_ratio",
            "CPU of an app instance since the previous scrape, as a share of one core.",
            &cpu,
        )?;
        gauge(
            &mut encoder,
            "gantry_instance_resident_memory_bytes",
            "Resident memory of an app instance.",
            &memory,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::http_stats::{Histogram, StatusClasses};

    #[test]
    fn a_scrape_renders_per_app_cohort_and_instance() {
        let scrape = Scrape(vec![AppScrape {
            app: "web".to_owned(),
            connections: Some((10, 1)),
            cohorts: vec![(
                "canary".to_owned(),
                HttpStats {
                    requests: 5,
                    responses: StatusClasses {
                        success: 4,
                        server_error: 1,
                        ..StatusClasses::default()
                    },
                    latency: Histogram {
                        le_ms: vec![100, 200],
                        counts: vec![3, 4, 5],
                        sum_us: 1_500_000,
                        count: 5,
                    },
                    ..HttpStats::default()
                },
            )],
            instances: vec![InstanceScrape {
                index: 0,
                version: "1.2.3".to_owned(),
                restarts: 2,
                cpu: Some(0.25),
                memory: Some(4096),
            }],
        }]);
        let text = crate::metrics::global().render(Box::new(scrape), false);
        for line in [
            "# TYPE gantry_frontdoor_requests_total counter",
            "gantry_frontdoor_requests_total{app=\"web\",cohort=\"canary\"} 5",
            "gantry_frontdoor_responses_total{app=\"web\",cohort=\"canary\",class=\"5xx\"} 1",
            "gantry_frontdoor_response_duration_seconds_bucket{le=\"0.2\",app=\"web\",cohort=\"canary\"} 4",
            "gantry_frontdoor_response_duration_seconds_bucket{le=\"+Inf\",app=\"web\",cohort=\"canary\"} 5",
            "gantry_frontdoor_response_duration_seconds_sum{app=\"web\",cohort=\"canary\"} 1.5",
            "gantry_instance_restarts_total{app=\"web\",instance=\"0\",version=\"1.2.3\"} 2",
            "gantry_instance_resident_memory_bytes{app=\"web\",instance=\"0\",version=\"1.2.3\"} 4096",
            "gantry_frontdoor_connections_total{app=\"web\"} 10",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
