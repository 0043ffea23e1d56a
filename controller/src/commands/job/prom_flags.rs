//! `--prometheus URL` and `--prom-check NAME:QUERY:CONDITION`: a Prometheus gate from flags
//! to `Analysis.prometheus`, checked with the agent's own rules (gantry-policy) so a job the
//! agent would refuse is never written; and back to text and JSON for `job show`.

use gantry_policy::admission::prom_gate::{parse_condition, parse_url};
use gantry_proto::v1::{PrometheusCheck, PrometheusGate};
use serde_json::json;

use crate::cli::RolloutArgs;
use crate::flags::FlagError;

/// The gate the flags ask for; `None` when neither flag was given.
///
/// # Errors
///
/// [`FlagError`] naming `--prometheus` or `--prom-check` and what is wrong.
pub fn gate(a: &RolloutArgs) -> Result<Option<PrometheusGate>, FlagError> {
    let url = match (&a.prometheus, a.prom_checks.is_empty()) {
        (None, true) => return Ok(None),
        (None, false) => {
            return Err(FlagError::new(
                "--prom-check",
                "needs --prometheus URL (the server it queries)",
            ));
        }
        (Some(_), true) => {
            return Err(FlagError::new(
                "--prometheus",
                "needs at least one --prom-check NAME:QUERY:CONDITION",
            ));
        }
        (Some(url), false) => url.trim(),
    };
    parse_url(url).map_err(|why| FlagError::new("--prometheus", why))?;
    let checks = a
        .prom_checks
        .iter()
        .map(|raw| parse_check(raw))
        .collect::<Result<_, _>>()?;
    Ok(Some(PrometheusGate {
        url: url.to_owned(),
        checks,
    }))
}

/// `NAME:QUERY:CONDITION`: the name is before the first `:`, the condition after the last
/// (it has none of its own), so the query may hold colons (`[5m:1m]`).
///
/// # Errors
///
/// [`FlagError`] for `--prom-check`, quoting the value.
pub fn parse_check(raw: &str) -> Result<PrometheusCheck, FlagError> {
    let bad = |why: String| {
        FlagError::new(
            "--prom-check",
            format!(
                "{raw:?}: {why} (expected NAME:QUERY:CONDITION like \
                 'errors:sum(rate(x{{app=\"{{{{app}}}}\"}}[{{{{window}}}}])):< 0.01')"
            ),
        )
    };
    let (name, rest) = raw
        .split_once(':')
        .ok_or_else(|| bad("no ':' after the name".to_owned()))?;
    let (query, condition) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("no ':' before the condition".to_owned()))?;
    parse_condition(condition).map_err(bad)?;
    if query.trim().is_empty() {
        return Err(bad("the query is empty".to_owned()));
    }
    Ok(PrometheusCheck {
        name: name.trim().to_owned(),
        query: query.trim().to_owned(),
        condition: condition.trim().to_owned(),
    })
}

/// `job show` rows: the server, then one row per check.
pub fn rows(g: &PrometheusGate) -> Vec<(String, String)> {
    let mut rows = vec![("prometheus".to_owned(), g.url.clone())];
    for c in &g.checks {
        rows.push((
            format!("prom check {}", c.name),
            format!("{} {}", c.query, c.condition),
        ));
    }
    rows
}

/// `job show --json`: the wire's fields.
pub fn json(g: &PrometheusGate) -> serde_json::Value {
    let checks: Vec<_> = g
        .checks
        .iter()
        .map(|c| json!({"name": c.name, "query": c.query, "condition": c.condition}))
        .collect();
    json!({"url": g.url, "checks": checks})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, checks: &[&str]) -> RolloutArgs {
        RolloutArgs {
            prometheus: url.map(str::to_owned),
            prom_checks: checks.iter().map(|c| (*c).to_owned()).collect(),
            ..RolloutArgs::default()
        }
    }

    #[test]
    fn a_check_splits_at_the_first_and_last_colon() {
        let c = parse_check("lag : max_over_time(x{app=\"{{app}}\"}[5m:1m]) : >= 0.99").unwrap();
        assert_eq!(c.name, "lag");
        assert_eq!(c.query, "max_over_time(x{app=\"{{app}}\"}[5m:1m])");
        assert_eq!(c.condition, ">= 0.99");
        for (raw, why) in [
            ("nocolon", "no ':' after the name"),
            ("name:up", "no ':' before the condition"),
            ("name:up:0.5", "not a condition"),
            ("name: :< 1", "the query is empty"),
        ] {
            let err = parse_check(raw).unwrap_err().to_string();
            assert!(
                err.contains("--prom-check") && err.contains(why),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn the_flags_come_together_and_the_url_is_checked() {
        assert_eq!(gate(&args(None, &[])).unwrap(), None);
        let err = gate(&args(None, &["a:up:> 0"])).unwrap_err().to_string();
        assert!(err.contains("needs --prometheus"), "{err}");
        let err = gate(&args(Some("http://p:9090"), &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one --prom-check"), "{err}");
        let err = gate(&args(Some("https://p"), &["a:up:> 0"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--prometheus") && err.contains("http://"),
            "{err}"
        );
        let g = gate(&args(Some(" http://p:9090 "), &["a:up:> 0", "b:down:< 1"]))
            .unwrap()
            .unwrap();
        assert_eq!(g.url, "http://p:9090");
        assert_eq!(g.checks.len(), 2);
        assert_eq!(
            rows(&g)[1],
            ("prom check a".to_owned(), "up > 0".to_owned())
        );
        assert_eq!(json(&g)["checks"][1]["condition"], "< 1");
    }
}
