//! Rollout parameters of rolling, blue-green and canary deploys: from flags to
//! `Release.rollout` (only what was given; zero means the agent's default), and back to text
//! and JSON for `job show`.

use gantry_policy::job::strategy_name;
use gantry_proto::v1::{Analysis, CanaryStep, Rollout, Strategy};
use serde_json::json;

use crate::cli::RolloutArgs;
use crate::flags::{self, FlagError};

const ZERO_DOWNTIME: &[Strategy] = &[Strategy::Rolling, Strategy::BlueGreen, Strategy::Canary];
const ALL: &[Strategy] = &[
    Strategy::Hot,
    Strategy::Rolling,
    Strategy::BlueGreen,
    Strategy::Canary,
];
const ROLLING: &[Strategy] = &[Strategy::Rolling];
const BLUE_GREEN: &[Strategy] = &[Strategy::BlueGreen];
const CANARY: &[Strategy] = &[Strategy::Canary];

/// The rollout flags given, in the order `--help` lists them, each with the strategies it fits.
pub fn given_flags(a: &RolloutArgs) -> Vec<(&'static str, &'static [Strategy])> {
    let mut out = Vec::new();
    let mut add = |given: bool, flag: &'static str, fits: &'static [Strategy]| {
        if given {
            out.push((flag, fits));
        }
    };
    add(a.batch.is_some(), "--batch", ROLLING);
    add(a.batch_analysis.is_some(), "--batch-analysis", ROLLING);
    add(a.watch.is_some(), "--watch", ALL);
    add(
        a.min_healthy_time.is_some(),
        "--min-healthy-time",
        ZERO_DOWNTIME,
    );
    add(
        a.healthy_deadline.is_some(),
        "--healthy-deadline",
        ZERO_DOWNTIME,
    );
    add(a.no_auto_revert, "--no-auto-revert", ROLLING);
    add(a.drain_timeout.is_some(), "--drain-timeout", ZERO_DOWNTIME);
    add(a.preview_weight.is_some(), "--preview-weight", BLUE_GREEN);
    add(a.preview.is_some(), "--preview", BLUE_GREEN);
    add(
        a.scale_down_delay.is_some(),
        "--scale-down-delay",
        BLUE_GREEN,
    );
    add(a.manual_promote, "--manual-promote", BLUE_GREEN);
    add(!a.steps.is_empty(), "--step", CANARY);
    add(a.canary_flag.is_some(), "--canary-flag", CANARY);
    add(a.canary_instances.is_some(), "--canary-instances", CANARY);
    add(
        a.max_probe_failures.is_some(),
        "--max-probe-failures",
        CANARY,
    );
    add(a.max_restarts.is_some(), "--max-restarts", CANARY);
    add(a.max_conn_errors.is_some(), "--max-conn-errors", CANARY);
    add(a.max_cpu.is_some(), "--max-cpu", CANARY);
    add(a.max_memory.is_some(), "--max-memory", CANARY);
    // The HTTP signals and their sample rule are judged by the watch (every strategy) and the
    // blue-green preview too, not only by canary steps.
    add(a.analysis_interval.is_some(), "--analysis-interval", ALL);
    add(a.max_error_rate.is_some(), "--max-error-rate", ALL);
    add(a.max_p95_latency.is_some(), "--max-p95-latency", ALL);
    add(a.min_samples.is_some(), "--min-samples", ALL);
    add(a.no_data.is_some(), "--no-data", ALL);
    add(a.compare.is_some(), "--compare", CANARY);
    add(a.compare_alpha.is_some(), "--compare-alpha", CANARY);
    add(a.prometheus.is_some(), "--prometheus", ALL);
    add(!a.prom_checks.is_empty(), "--prom-check", ALL);
    out
}

fn strategy_list(fits: &[Strategy]) -> String {
    let names: Vec<&str> = fits.iter().map(|s| strategy_name(*s)).collect();
    match names.as_slice() {
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => String::new(),
    }
}

/// Refuses rollout flags on a job that is not a deploy.
///
/// # Errors
///
/// [`FlagError`] naming the first rollout flag given.
pub fn refuse_for_action(a: &RolloutArgs, action: &str) -> Result<(), FlagError> {
    match given_flags(a).first() {
        Some((flag, _)) => Err(FlagError::new(
            flag,
            format!("is only for deploy, not {action}"),
        )),
        None => Ok(()),
    }
}

/// Parses one `--step`: `WEIGHT:DURATION` or `WEIGHT:promote`, WEIGHT 1-100 (a trailing `%`
/// is allowed), optionally followed by `:flag=PCT` (0-100), the percent of users served the
/// `--canary-flag` during the step.
///
/// # Errors
///
/// [`FlagError`] for `--step`, quoting the value.
pub fn parse_step(raw: &str) -> Result<CanaryStep, FlagError> {
    let bad = |why: String| {
        FlagError::new(
            "--step",
            format!(
                "{raw:?}: {why} (expected WEIGHT:DURATION like 10:30s, or WEIGHT:promote, \
                 optionally followed by :flag=PCT)"
            ),
        )
    };
    let (w, rest) = raw
        .trim()
        .split_once(':')
        .ok_or_else(|| bad("no ':'".to_owned()))?;
    let (pause, flag_percent) = match rest.split_once(':') {
        None => (rest, None),
        Some((pause, flag)) => {
            let pct = flag
                .trim()
                .strip_prefix("flag=")
                .ok_or_else(|| bad(format!("{flag:?} is not flag=PCT")))?;
            let pct = pct
                .strip_suffix('%')
                .unwrap_or(pct)
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| bad("the flag's percent must be from 0 to 100".to_owned()))?;
            (pause, Some(pct))
        }
    };
    let w = w.trim();
    let weight = w
        .strip_suffix('%')
        .unwrap_or(w)
        .parse::<u32>()
        .ok()
        .filter(|w| (1..=100).contains(w))
        .ok_or_else(|| bad("the weight must be a percentage from 1 to 100".to_owned()))?;
    let pause = pause.trim();
    if pause.eq_ignore_ascii_case("promote") {
        return Ok(CanaryStep {
            weight,
            pause_ms: 0,
            until_promote: true,
            flag_percent,
        });
    }
    let pause_ms = flags::millis_u32_or_zero("--step", pause)
        .map_err(|e| bad(format!("the pause: {}", e.message)))?;
    Ok(CanaryStep {
        weight,
        pause_ms,
        until_promote: false,
        flag_percent,
    })
}

/// Parses every `--step` and checks the sequence: weights never decrease, and only the last
/// step may be 100 (full traffic ends the canary).
///
/// # Errors
///
/// [`FlagError`] for `--step`.
pub fn parse_steps(raws: &[String]) -> Result<Vec<CanaryStep>, FlagError> {
    let steps = raws
        .iter()
        .map(|r| parse_step(r))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in steps.windows(2).enumerate() {
        let (prev, next) = (&pair[0], &pair[1]);
        if next.weight < prev.weight {
            return Err(FlagError::new(
                "--step",
                format!(
                    "{:?} comes after {:?}: weights must not decrease",
                    raws[i + 1],
                    raws[i]
                ),
            ));
        }
        let percent = |s: &CanaryStep| s.flag_percent.unwrap_or(s.weight);
        if percent(next) < percent(prev) {
            return Err(FlagError::new(
                "--step",
                format!(
                    "{:?} comes after {:?}: the flag's percent (the weight unless :flag= gives \
                     it) must not decrease, as a user served the canary variant keeps it",
                    raws[i + 1],
                    raws[i]
                ),
            ));
        }
        if prev.weight == 100 {
            return Err(FlagError::new(
                "--step",
                format!(
                    "{:?} is not the last step: 100% sends all traffic to the canary and ends \
                     it, so only the last step may be 100",
                    raws[i]
                ),
            ));
        }
    }
    Ok(steps)
}

/// Builds `Release.rollout` from the flags for `strategy`: `None` when no rollout flag was
/// given; otherwise only the given fields are set (zero means the agent's default).
///
/// # Errors
///
/// [`FlagError`] naming the first bad flag, or the first flag that does not fit `strategy`.
pub fn build_rollout(strategy: Strategy, a: &RolloutArgs) -> Result<Option<Rollout>, FlagError> {
    let given = given_flags(a);
    for (flag, fits) in &given {
        if !fits.contains(&strategy) {
            return Err(FlagError::new(
                flag,
                format!(
                    "is a {} flag and does not fit --strategy {}",
                    strategy_list(fits),
                    strategy_name(strategy)
                ),
            ));
        }
    }
    if given.is_empty() {
        return Ok(None);
    }
    let ms = |flag, v: &Option<String>| {
        v.as_deref()
            .map(|raw| flags::millis_u32(flag, raw))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let mut r = Rollout {
        batch: a
            .batch
            .as_deref()
            .map(|b| flags::batch("--batch", b))
            .transpose()?
            .unwrap_or_default(),
        min_healthy_time_ms: a
            .min_healthy_time
            .as_deref()
            .map(|raw| flags::millis_u32_or_zero("--min-healthy-time", raw))
            .transpose()?
            .unwrap_or_default(),
        healthy_deadline_ms: ms("--healthy-deadline", &a.healthy_deadline)?,
        watch_ms: a
            .watch
            .as_deref()
            .map(|raw| flags::millis_u32_or_zero("--watch", raw))
            .transpose()?
            .unwrap_or_default(),
        batch_analysis_ms: a
            .batch_analysis
            .as_deref()
            .map(|raw| flags::millis_u32_or_zero("--batch-analysis", raw))
            .transpose()?
            .unwrap_or_default(),
        no_auto_revert: a.no_auto_revert,
        drain_timeout_ms: ms("--drain-timeout", &a.drain_timeout)?,
        preview_weight: a
            .preview_weight
            .as_deref()
            .map(|p| flags::percent("--preview-weight", p, 0))
            .transpose()?
            .unwrap_or_default(),
        preview_ms: ms("--preview", &a.preview)?,
        scale_down_delay_ms: ms("--scale-down-delay", &a.scale_down_delay)?,
        manual_promote: a.manual_promote,
        steps: parse_steps(&a.steps)?,
        analysis: None,
        canary_instances: a
            .canary_instances
            .as_deref()
            .map(|n| flags::positive_u32("--canary-instances", n))
            .transpose()?
            .unwrap_or_default(),
        canary_flag: match a.canary_flag.as_deref().map(str::trim) {
            None => String::new(),
            Some("") => return Err(FlagError::new("--canary-flag", "is empty: name a flag")),
            Some(key) => key.to_owned(),
        },
    };
    if r.canary_flag.is_empty()
        && let Some(raw) = a
            .steps
            .iter()
            .zip(&r.steps)
            .find_map(|(raw, s)| s.flag_percent.map(|_| raw))
    {
        return Err(FlagError::new(
            "--step",
            format!("{raw:?} sets a flag's percent: name the flag with --canary-flag"),
        ));
    }
    if r.preview_weight > 0 && r.preview_ms == 0 && !r.manual_promote {
        return Err(FlagError::new(
            "--preview-weight",
            "needs --preview DURATION (how long the preview lasts) or --manual-promote \
             (it lasts until gantry promote)",
        ));
    }
    let analysis_given = a.max_probe_failures.is_some()
        || a.max_restarts.is_some()
        || a.max_conn_errors.is_some()
        || a.max_cpu.is_some()
        || a.max_memory.is_some()
        || a.analysis_interval.is_some()
        || a.max_error_rate.is_some()
        || a.max_p95_latency.is_some()
        || a.min_samples.is_some()
        || a.no_data.is_some()
        || a.compare.is_some()
        || a.compare_alpha.is_some();
    let prometheus = super::prom_flags::gate(a)?;
    if analysis_given || prometheus.is_some() {
        r.analysis = Some(Analysis {
            max_probe_failures: at_least_one(
                "--max-probe-failures",
                a.max_probe_failures.as_deref(),
                3,
            )?,
            max_restarts: a
                .max_restarts
                .as_deref()
                .map(|n| flags::count_u32("--max-restarts", n))
                .transpose()?
                .unwrap_or_default(),
            max_conn_errors: at_least_one("--max-conn-errors", a.max_conn_errors.as_deref(), 5)?,
            max_cpu_percent: a
                .max_cpu
                .as_deref()
                .map(|p| flags::cpu_percent("--max-cpu", p))
                .transpose()?
                .unwrap_or_default(),
            max_memory_bytes: match a.max_memory.as_deref().map(str::trim) {
                Some(s) if !s.ends_with('%') => flags::byte_size("--max-memory", s)?,
                _ => 0,
            },
            max_memory_share: match a.max_memory.as_deref().map(str::trim) {
                Some(s) if s.ends_with('%') => memory_share("--max-memory", s)?,
                _ => 0.0,
            },
            interval_ms: ms("--analysis-interval", &a.analysis_interval)?,
            max_error_rate: a
                .max_error_rate
                .as_deref()
                .map(|s| error_rate("--max-error-rate", s))
                .transpose()?
                .unwrap_or_default(),
            max_p95_latency_ms: ms("--max-p95-latency", &a.max_p95_latency)?,
            min_samples: match a.min_samples.as_deref() {
                None => 0,
                Some(n) => u64::from(flags::positive_u32("--min-samples", n)?),
            },
            no_data: match a.no_data.as_deref().map(str::trim) {
                None => String::new(),
                Some(v @ ("pause" | "fail" | "pass")) => v.to_owned(),
                Some(v) => {
                    return Err(FlagError::new(
                        "--no-data",
                        format!("expected pause, fail or pass, got {v:?}"),
                    ));
                }
            },
            prometheus,
            compare: match a.compare.as_deref().map(str::trim) {
                None => String::new(),
                Some(v @ ("threshold" | "stable")) => v.to_owned(),
                Some(v) => {
                    return Err(FlagError::new(
                        "--compare",
                        format!("expected threshold or stable, got {v:?}"),
                    ));
                }
            },
            compare_alpha: a
                .compare_alpha
                .as_deref()
                .map(|s| compare_alpha("--compare-alpha", s))
                .transpose()?
                .unwrap_or_default(),
        });
    }
    if r.analysis.as_ref().is_some_and(|an| an.compare != "stable") && a.compare_alpha.is_some() {
        return Err(FlagError::new(
            "--compare-alpha",
            "applies only with --compare stable",
        ));
    }
    Ok(Some(r))
}

/// A significance above 0 and at most 0.5, as `0.05`.
fn compare_alpha(flag: &'static str, raw: &str) -> Result<f64, FlagError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 0.5 => Ok(v),
        _ => Err(FlagError::new(
            flag,
            format!("expected a significance above 0 and at most 0.5 (0.05), got {raw:?}"),
        )),
    }
}

/// A share strictly between 0 and 1, as `0.001` or `0.1%`.
fn error_rate(flag: &'static str, raw: &str) -> Result<f64, FlagError> {
    let t = raw.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    };
    match value {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(FlagError::new(
            flag,
            format!("expected a share between 0 and 1 like 0.001 or 0.1%, got {raw:?}"),
        )),
    }
}

/// `PCT%` of the host's memory as a share: above 0, at most 100%.
fn memory_share(flag: &'static str, raw: &str) -> Result<f64, FlagError> {
    let value = raw
        .strip_suffix('%')
        .and_then(|p| p.trim().parse::<f64>().ok())
        .map(|p| p / 100.0);
    match value {
        Some(v) if v.is_finite() && v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(FlagError::new(
            flag,
            format!(
                "expected a size like 256MiB or a share of the host's memory like 80%, got {raw:?}"
            ),
        )),
    }
}

/// A threshold whose 0 on the wire means the agent's default, so 0 cannot be asked for.
fn at_least_one(flag: &'static str, raw: Option<&str>, default: u32) -> Result<u32, FlagError> {
    let Some(raw) = raw else { return Ok(0) };
    match flags::count_u32(flag, raw)? {
        0 => Err(FlagError::new(
            flag,
            format!(
                "must be at least 1 (0 on the wire means the agent's default, {default}); \
                 the canary aborts when the count goes above it"
            ),
        )),
        n => Ok(n),
    }
}

fn or_default<T>(v: T, is_set: bool, show: impl Fn(T) -> String, default: &str) -> String {
    if is_set {
        show(v)
    } else {
        format!("default ({default})")
    }
}

fn ms_text(ms: u32, default: &str) -> String {
    or_default(ms, ms > 0, flags::format_ms, default)
}

/// A canary step for people: `10% for 30s`, `50% until gantry promote`, with a flag
/// percent given: `10% for 30s, flag 5%`.
pub fn step_text(s: &CanaryStep) -> String {
    let step = if s.until_promote {
        format!("{}% until gantry promote", s.weight)
    } else {
        format!("{}% for {}", s.weight, flags::format_ms(s.pause_ms))
    };
    match s.flag_percent {
        Some(p) => format!("{step}, flag {p}%"),
        None => step,
    }
}

/// The rollout parameters of a `strategy` deploy for people, as (label, value) rows; unset
/// values show the agent's default. Empty for a hot deploy.
pub fn rollout_rows(strategy: Strategy, r: Option<&Rollout>) -> Vec<(String, String)> {
    // The watch fits every strategy; shown only when asked for.
    let watch = r
        .filter(|r| r.watch_ms > 0)
        .map(|r| ("watch".to_owned(), flags::format_ms(r.watch_ms)));
    let prometheus = r
        .and_then(|r| r.analysis.as_ref())
        .and_then(|a| a.prometheus.as_ref())
        .map(super::prom_flags::rows)
        .unwrap_or_default();
    if !ZERO_DOWNTIME.contains(&strategy) {
        return watch.into_iter().chain(prometheus).collect();
    }
    let d = Rollout::default();
    let r = r.unwrap_or(&d);
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |label: &str, value: String| rows.push((label.to_owned(), value));
    if strategy == Strategy::Rolling {
        row(
            "batch",
            if r.batch.is_empty() {
                "default (1)".to_owned()
            } else {
                r.batch.clone()
            },
        );
        if r.batch_analysis_ms > 0 {
            row("batch analysis", flags::format_ms(r.batch_analysis_ms));
        }
    }
    if strategy == Strategy::Canary {
        row(
            "canary instances",
            or_default(
                r.canary_instances,
                r.canary_instances > 0,
                |n| n.to_string(),
                "1",
            ),
        );
    }
    row(
        "min healthy time",
        or_default(
            r.min_healthy_time_ms,
            r.min_healthy_time_ms > 0,
            flags::format_ms,
            "0: healthy once the check passes",
        ),
    );
    row(
        "healthy deadline",
        ms_text(r.healthy_deadline_ms, "the health check's deadline"),
    );
    if strategy == Strategy::Rolling {
        row(
            "auto-revert",
            if r.no_auto_revert {
                "off: updated instances stay on the new release on failure".to_owned()
            } else {
                "on".to_owned()
            },
        );
    }
    row("drain timeout", ms_text(r.drain_timeout_ms, "30s"));
    if strategy == Strategy::BlueGreen {
        let preview = match (r.preview_weight, r.preview_ms, r.manual_promote) {
            (0, 0, _) => "none".to_owned(),
            (w, 0, true) => format!("{w}% of new connections until gantry promote"),
            (w, ms, _) => format!("{w}% of new connections for {}", flags::format_ms(ms)),
        };
        row("preview", preview);
        row(
            "promotion",
            if r.manual_promote {
                "manual: waits for gantry promote".to_owned()
            } else {
                "automatic once healthy".to_owned()
            },
        );
        row("scale-down delay", ms_text(r.scale_down_delay_ms, "10m"));
    }
    if strategy == Strategy::Canary {
        if r.steps.is_empty() {
            row(
                "steps",
                "default (10% for 30s, 50% for 30s, 100%)".to_owned(),
            );
        }
        for (i, s) in r.steps.iter().enumerate() {
            row(&format!("step {}", i + 1), step_text(s));
        }
        if !r.canary_flag.is_empty() {
            row(
                "canary flag",
                format!(
                    "{}: each step serves its canary variant to the step's percent of users, \
                     100% once promoted",
                    r.canary_flag
                ),
            );
        }
        let da = Analysis::default();
        let a = r.analysis.as_ref().unwrap_or(&da);
        row("analysis every", ms_text(a.interval_ms, "1s"));
        let n = |v: u32, default: &str| or_default(v, v > 0, |v| v.to_string(), default);
        row("max probe failures", n(a.max_probe_failures, "3"));
        row(
            "max restarts",
            // 0 is both the default and a value one may ask for.
            a.max_restarts.to_string(),
        );
        row("max conn errors", n(a.max_conn_errors, "5"));
        row(
            "max error rate",
            or_default(
                a.max_error_rate,
                a.max_error_rate > 0.0,
                |r| r.to_string(),
                "0.001",
            ),
        );
        row("max p95 latency", ms_text(a.max_p95_latency_ms, "200ms"));
        row(
            "min samples",
            or_default(
                a.min_samples,
                a.min_samples > 0,
                |n| n.to_string(),
                "3 / allowed share",
            ),
        );
        row(
            "no data",
            or_default(a.no_data.clone(), !a.no_data.is_empty(), |s| s, "pause"),
        );
        if a.compare == "stable" {
            let alpha = or_default(
                a.compare_alpha,
                a.compare_alpha > 0.0,
                |v| v.to_string(),
                "0.05",
            );
            row(
                "compare",
                format!(
                    "against the stable cohort (two-proportion z-test on errors, Mann-Whitney U \
                     on latency; alpha {alpha}); the max error rate and p95 above apply to the \
                     watch only"
                ),
            );
        } else {
            row("compare", "against the thresholds".to_owned());
        }
        row(
            "max cpu",
            or_default(
                a.max_cpu_percent,
                a.max_cpu_percent > 0.0,
                |p| format!("{p}% of one core"),
                "not checked",
            ),
        );
        row(
            "max memory",
            if a.max_memory_share > 0.0 {
                format!("{}% of the host's memory", a.max_memory_share * 100.0)
            } else {
                or_default(
                    a.max_memory_bytes,
                    a.max_memory_bytes > 0,
                    |b| format!("{} ({b} bytes)", flags::format_bytes(b)),
                    "not checked",
                )
            },
        );
    }
    rows.extend(prometheus);
    rows.extend(watch);
    rows
}

/// The rollout as JSON: the wire's fields (0 means the agent's default), `null` when absent.
pub fn rollout_json(r: Option<&Rollout>) -> serde_json::Value {
    let Some(r) = r else {
        return serde_json::Value::Null;
    };
    let steps: Vec<_> = r
        .steps
        .iter()
        .map(|s| {
            json!({"weight": s.weight, "pause_ms": s.pause_ms, "until_promote": s.until_promote,
                   "flag_percent": s.flag_percent})
        })
        .collect();
    let analysis = r.analysis.as_ref().map(|a| {
        json!({
            "max_probe_failures": a.max_probe_failures,
            "max_restarts": a.max_restarts,
            "max_conn_errors": a.max_conn_errors,
            "max_cpu_percent": a.max_cpu_percent,
            "max_memory_bytes": a.max_memory_bytes,
            "max_memory_share": a.max_memory_share,
            "interval_ms": a.interval_ms,
            "max_error_rate": a.max_error_rate,
            "max_p95_latency_ms": a.max_p95_latency_ms,
            "min_samples": a.min_samples,
            "no_data": a.no_data,
            "compare": a.compare,
            "compare_alpha": a.compare_alpha,
            "prometheus": a.prometheus.as_ref().map(super::prom_flags::json),
        })
    });
    json!({
        "batch": r.batch,
        "min_healthy_time_ms": r.min_healthy_time_ms,
        "watch_ms": r.watch_ms,
        "batch_analysis_ms": r.batch_analysis_ms,
        "healthy_deadline_ms": r.healthy_deadline_ms,
        "no_auto_revert": r.no_auto_revert,
        "drain_timeout_ms": r.drain_timeout_ms,
        "preview_weight": r.preview_weight,
        "preview_ms": r.preview_ms,
        "scale_down_delay_ms": r.scale_down_delay_ms,
        "manual_promote": r.manual_promote,
        "steps": steps,
        "analysis": analysis,
        "canary_instances": r.canary_instances,
        "canary_flag": (!r.canary_flag.is_empty()).then_some(&r.canary_flag),
    })
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rollout_show_tests.rs"]
mod show_tests;
