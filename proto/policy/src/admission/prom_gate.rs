//! Decoding a job's Prometheus gate (`release.rollout.analysis.prometheus`): the server's URL,
//! each check's name, query template and condition. The queries are signed with the job and
//! run by the agent, so what reaches it is checked here once: plain `http://` without user
//! info (nothing secret in a signed, audited job), bounded sizes, known placeholders only,
//! a condition with a finite value.

use std::collections::BTreeSet;

use gantry_proto::v1;

use super::AdmissionError;
use crate::job::{Cmp, Condition, PLACEHOLDERS, PromCheck, PromGate, PromUrl};

/// Most checks a job may have.
pub const MAX_CHECKS: usize = 10;
/// Longest query template, in bytes.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Longest check name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 512;

const FIELD: &str = "release.rollout.analysis.prometheus";

fn invalid(field: &str, problem: impl Into<String>) -> AdmissionError {
    AdmissionError::InvalidJob {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// The validated gate.
///
/// # Errors
///
/// [`AdmissionError::InvalidJob`] naming the field (`...prometheus.url`,
/// `...prometheus.checks[1].condition`, ...) and the problem.
pub fn decode(g: &v1::PrometheusGate) -> Result<PromGate, AdmissionError> {
    let url = parse_url(&g.url).map_err(|why| invalid(&format!("{FIELD}.url"), why))?;
    if g.checks.is_empty() {
        return Err(invalid(
            &format!("{FIELD}.checks"),
            "is empty: a Prometheus gate needs at least one check",
        ));
    }
    if g.checks.len() > MAX_CHECKS {
        return Err(invalid(
            &format!("{FIELD}.checks"),
            format!(
                "has {} checks, more than the maximum of {MAX_CHECKS}",
                g.checks.len()
            ),
        ));
    }
    let mut names = BTreeSet::new();
    let mut checks = Vec::with_capacity(g.checks.len());
    for (i, c) in g.checks.iter().enumerate() {
        let at = |part: &str| format!("{FIELD}.checks[{i}].{part}");
        check_name(&c.name).map_err(|why| invalid(&at("name"), why))?;
        if !names.insert(c.name.as_str()) {
            return Err(invalid(
                &at("name"),
                format!("{:?} names an earlier check too", c.name),
            ));
        }
        check_query(&c.query).map_err(|why| invalid(&at("query"), why))?;
        let condition =
            parse_condition(&c.condition).map_err(|why| invalid(&at("condition"), why))?;
        checks.push(PromCheck {
            name: c.name.clone(),
            query: c.query.clone(),
            condition,
        });
    }
    Ok(PromGate { url, checks })
}

/// `http://HOST[:PORT][/PREFIX]`: no user info, query or fragment; PORT 1-65535.
///
/// # Errors
///
/// What is wrong with it, for people.
pub fn parse_url(raw: &str) -> Result<PromUrl, String> {
    if raw.len() > MAX_URL_BYTES {
        return Err(format!(
            "is {} bytes, more than the maximum of {MAX_URL_BYTES}",
            raw.len()
        ));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{raw:?} has a space or control character"));
    }
    let Some(rest) = raw.strip_prefix("http://") else {
        return Err(format!(
            "{raw:?} is not an http:// URL (https is not supported yet)"
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(format!("{raw:?} has a query or fragment"));
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "{raw:?} has user info: a signed job must not carry credentials"
        ));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{raw:?} does not name a host and an optional port 1-65535"))?;
    Ok(PromUrl {
        host: host.to_owned(),
        port,
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|p| *p != 0)?
        }
        Some(_) => return None,
    };
    Some((host, port))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not 1-{MAX_NAME_BYTES} of A-Z a-z 0-9 _ -"
        ))
    }
}

fn check_query(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("is empty".to_owned());
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "is {} bytes, more than the maximum of {MAX_QUERY_BYTES}",
            query.len()
        ));
    }
    if query
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("has a control character".to_owned());
    }
    let mut rest = query;
    while let Some(at) = rest.find("{{") {
        let tail = &rest[at..];
        let Some(known) = PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) else {
            let shown: String = tail.chars().take(20).collect();
            return Err(format!(
                "has an unknown placeholder at {shown:?} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        };
        rest = &tail[known.len()..];
    }
    Ok(())
}

/// `< X`, `<= X`, `> X` or `>= X`, X a finite number (spaces optional).
///
/// # Errors
///
/// What is wrong with it, for people.
pub fn parse_condition(raw: &str) -> Result<Condition, String> {
    let s = raw.trim();
    let (cmp, value) = if let Some(v) = s.strip_prefix("<=") {
        (Cmp::Le, v)
    } else if let Some(v) = s.strip_prefix(">=") {
        (Cmp::Ge, v)
    } else if let Some(v) = s.strip_prefix('<') {
        (Cmp::Lt, v)
    } else if let Some(v) = s.strip_prefix('>') {
        (Cmp::Gt, v)
    } else {
        return Err(format!(
            "{raw:?} is not a condition like \"< 0.01\" or \">= 0.99\" (<, <=, > or >=)"
        ));
    };
    let value: f64 = value
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| {
            format!(
                "{raw:?}: the value after {} is not a finite number",
                cmp.as_str()
            )
        })?;
    Ok(Condition { cmp, value })
}

#[cfg(test)]
#[path = "prom_gate_tests.rs"]
mod tests;
