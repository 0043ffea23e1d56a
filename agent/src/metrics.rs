//! The agent's Prometheus metrics: the counters every floor bumps (jobs by outcome, admission
//! rejections by reason, audit appends and fsync latency), and rendering them, with what a
//! scrape collects at that moment, as Prometheus text.
//!
//! Built on `prometheus-client`. Names follow the contract in DESIGN ("Metrics"): a `gantry_`
//! prefix, base units (`_seconds`, `_bytes`), `_total` on counters, `gantry_build_info`.
//! Labels carry only names the agent chose or the config holds (outcome, reason code, app,
//! cohort, status class, instance index, version), never a job's environment or a secret.
//!
//! The crate writes OpenMetrics; a scraper that does not ask for it (`Accept`) gets the
//! Prometheus text format 0.0.4 instead ([`to_text_format`]), which `promtool check metrics`
//! reads.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one series: `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The counters the agent keeps for its whole life.
#[derive(Debug)]
pub struct Metrics {
    jobs: Family<Labels, Counter>,
    rejections: Family<Labels, Counter>,
    audit_appends: Counter,
    audit_fsync: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    jobs: Family::default(),
    rejections: Family::default(),
    audit_appends: Counter::default(),
    // 50 µs to about 1.6 s.
    audit_fsync: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
});

/// The process's counters.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// A job ended with `outcome` (`succeeded`, `failed`, `rolled_back`, `interrupted`).
    pub fn job_finished(&self, outcome: &str) {
        self.jobs
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// Admission refused a job for `reason` (the `job.rejected` reason code).
    pub fn job_rejected(&self, reason: &str) {
        self.rejections
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    /// The audit log made `entries` entries durable with one fdatasync that took `took`.
    pub fn audit_committed(&self, entries: u64, took: Duration) {
        self.audit_appends.inc_by(entries);
        self.audit_fsync.observe(took.as_secs_f64());
    }

    /// Every metric: these counters, `gantry_build_info`, and what `collector` adds at this
    /// scrape; OpenMetrics when `openmetrics`, else the Prometheus text format.
    pub fn render(&self, collector: Box<dyn Collector>, openmetrics: bool) -> String {
        let mut registry = Registry::default();
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        registry.register("gantry_build_info", "The agent's version (always 1)", build);
        registry.register(
            "gantry_jobs",
            "Jobs finished, by outcome",
            self.jobs.clone(),
        );
        registry.register(
            "gantry_admission_rejections",
            "Jobs refused by admission, by reason code (also those only counted in a summary \
             during a flood)",
            self.rejections.clone(),
        );
        registry.register(
            "gantry_audit_appends",
            "Audit log entries made durable",
            self.audit_appends.clone(),
        );
        registry.register(
            "gantry_audit_fsync_duration_seconds",
            "Time of each fdatasync of the audit log (one per group-committed batch)",
            self.audit_fsync.clone(),
        );
        registry.register_collector(collector);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        if openmetrics {
            out
        } else {
            to_text_format(&out)
        }
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family's `# HELP` and
/// `# TYPE` name its `_total` samples, `# UNIT` and `# EOF` go. Everything else is the same.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::DescriptorEncoder;

    #[derive(Debug)]
    struct Nothing;

    impl Collector for Nothing {
        fn encode(&self, _: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            Ok(())
        }
    }

    #[test]
    fn counters_render_in_both_formats() {
        let m = global();
        m.job_finished("succeeded");
        m.job_rejected("bad_signature");
        m.audit_committed(3, Duration::from_millis(2));
        let om = m.render(Box::new(Nothing), true);
        assert!(om.contains("# TYPE gantry_jobs counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = m.render(Box::new(Nothing), false);
        assert!(
            text.contains("# TYPE gantry_jobs_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("gantry_jobs_total{outcome=\"succeeded\"}"),
            "{text}"
        );
        assert!(
            text.contains("gantry_admission_rejections_total{reason=\"bad_signature\"}"),
            "{text}"
        );
        assert!(
            text.contains("gantry_audit_fsync_duration_seconds_bucket{le="),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "gantry_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }
}
