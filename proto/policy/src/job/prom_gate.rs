//! External metrics as gates: a job's Prometheus server, its queries and the condition each
//! result must meet, as admission validated them ([`crate::admission::prom_gate`]), and the
//! filling-in of a query's template.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The placeholders a query template may use.
pub const PLACEHOLDERS: [&str; 3] = ["{{app}}", "{{cohort}}", "{{window}}"];

/// A Prometheus server's address: plain HTTP, host, port and path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Path prefix before `/api/v1/query`, without a trailing `/` (empty for none).
    pub prefix: String,
}

impl PromUrl {
    /// The `Host` header: the host, bracketed if IPv6, and the port.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for PromUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// How a result compares with the condition's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// What a query's result must meet, e.g. `< 0.01`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The comparison.
    pub cmp: Cmp,
    /// The value compared with (finite).
    pub value: f64,
}

impl Condition {
    /// Whether `x` meets the condition (NaN meets none).
    pub fn holds(&self, x: f64) -> bool {
        match self.cmp {
            Cmp::Lt => x < self.value,
            Cmp::Le => x <= self.value,
            Cmp::Gt => x > self.value,
            Cmp::Ge => x >= self.value,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.cmp.as_str(), self.value)
    }
}

/// One query and its condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromCheck {
    /// Names the check in the audit log.
    pub name: String,
    /// The PromQL template (see [`PLACEHOLDERS`]).
    pub query: String,
    /// What the result must meet.
    pub condition: Condition,
}

impl PromCheck {
    /// The query as sent: the template with the app, the cohort and the window (whole
    /// seconds, rounded up, at least `1s`) filled in.
    pub fn render(&self, app: &str, cohort: &str, window: Duration) -> String {
        let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        self.query
            .replace("{{app}}", app)
            .replace("{{cohort}}", cohort)
            .replace("{{window}}", &format!("{}s", secs.max(1)))
    }
}

/// A Prometheus server and the checks run against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromGate {
    /// Where the server answers.
    pub url: PromUrl,
    /// The checks, in the job's order.
    pub checks: Vec<PromCheck>,
}

impl Eq for PromGate {}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> PromCheck {
        PromCheck {
            name: "c".to_owned(),
            query: query.to_owned(),
            condition: Condition {
                cmp: Cmp::Lt,
                value: 0.01,
            },
        }
    }

    #[test]
    fn the_template_is_filled_with_app_cohort_and_a_whole_second_window() {
        let c = check(r#"rate(x{app="{{app}}",cohort="{{cohort}}"}[{{window}}]) {{app}}"#);
        assert_eq!(
            c.render("web", "canary", Duration::from_millis(29_200)),
            r#"rate(x{app="web",cohort="canary"}[30s]) web"#
        );
        assert_eq!(
            c.render("a", "b", Duration::from_secs(30)),
            r#"rate(x{app="a",cohort="b"}[30s]) a"#
        );
        assert!(c.render("a", "b", Duration::ZERO).contains("[1s]"));
        assert!(
            c.render("a", "b", Duration::from_millis(1))
                .contains("[1s]")
        );
        assert!(
            c.render("a", "b", Duration::from_millis(1001))
                .contains("[2s]")
        );
    }

    #[test]
    fn conditions_compare_as_written_and_nan_meets_none() {
        let c = |cmp, value| Condition { cmp, value };
        assert!(c(Cmp::Lt, 1.0).holds(0.5) && !c(Cmp::Lt, 1.0).holds(1.0));
        assert!(c(Cmp::Le, 1.0).holds(1.0) && !c(Cmp::Le, 1.0).holds(1.5));
        assert!(c(Cmp::Gt, 1.0).holds(1.5) && !c(Cmp::Gt, 1.0).holds(1.0));
        assert!(c(Cmp::Ge, 1.0).holds(1.0) && !c(Cmp::Ge, 1.0).holds(0.5));
        for cmp in [Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge] {
            assert!(!c(cmp, 1.0).holds(f64::NAN));
        }
        assert_eq!(c(Cmp::Ge, 0.99).to_string(), ">= 0.99");
        assert_eq!(c(Cmp::Le, 5.0).to_string(), "<= 5");
    }

    #[test]
    fn the_url_shows_its_authority_and_prefix() {
        let u = PromUrl {
            host: "::1".to_owned(),
            port: 9090,
            prefix: "/prom".to_owned(),
        };
        assert_eq!(u.authority(), "[::1]:9090");
        assert_eq!(u.to_string(), "http://[::1]:9090/prom");
        let u = PromUrl {
            host: "127.0.0.1".to_owned(),
            port: 80,
            prefix: String::new(),
        };
        assert_eq!(u.to_string(), "http://127.0.0.1:80");
    }
}
