//! `gantry rollout show`: the decoded plan, its digest, rings and signatures, as text or JSON,
//! and with `--policy` what an agent with that config would say of dispatches of it (the
//! agent's own checks, `gantry_policy::admission::fleet::explain_plan`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use gantry_policy::admission::explain::Requirement;
use gantry_policy::admission::fleet::{explain_plan, selector_text};
use gantry_policy::config::Config;
use gantry_policy::job::strategy_name;
use gantry_proto::fleet;
use gantry_proto::keys::PublicKey;
use gantry_proto::v1::{Ring, SignedPlan, Strategy};
use serde_json::json;

use super::rings::on_failure_name;
use super::{PlanFile, RolloutError};
use crate::cli::RolloutShowArgs;
use crate::commands::job::explain::print_shown;
use crate::commands::job::{
    SigCheck, check_each, comment_verdict, probe_text, requirements_text, shown_env,
    signatures_text,
};
use crate::flags;

/// Checks each plan signature against the given public keys.
pub fn check_signatures(signed: &SignedPlan, keys: &[PublicKey]) -> Vec<SigCheck> {
    check_each(&signed.plan, &signed.signatures, keys, fleet::verify_plan)
}

fn check_name(c: &SigCheck) -> &'static str {
    match c {
        SigCheck::Valid => "valid",
        SigCheck::Invalid => "invalid",
        SigCheck::NotChecked => "not_checked",
    }
}

fn ms_text(ms: u64) -> String {
    if ms == 0 {
        return "0".to_owned();
    }
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// One ring for people: `0 canary: agents web-1, max 1 at once, 100% healthy, bake 1h, ...`.
pub fn ring_text(i: usize, r: &Ring) -> String {
    let gates = r.gates.unwrap_or_default();
    let deadline = if r.host_deadline_ms == 0 {
        "default".to_owned()
    } else {
        ms_text(r.host_deadline_ms)
    };
    let flag = r
        .flag_percent
        .map(|p| format!("; the canary flag at {p}% once promoted"))
        .unwrap_or_default();
    format!(
        "{i} {}: {}; max {} at once, {} healthy, bake {}, on failure {}, gates: restarts <= {}, \
         conn errors <= {}, unhealthy hosts <= {}; host deadline {deadline}{flag}",
        r.name,
        selector_text(&r.selector.clone().unwrap_or_default()),
        r.max_parallel,
        r.min_healthy,
        ms_text(r.bake_ms),
        on_failure_name(r.on_failure),
        gates.max_restarts,
        gates.max_conn_errors,
        gates.max_unhealthy_hosts,
    )
}

/// The decoded plan for people.
pub fn show_text(file: &PlanFile, checks: &[SigCheck], keys: &[PublicKey], now: i64) -> String {
    let p = &file.plan;
    let mut out = String::new();
    let _ = writeln!(out, "plan        {}", p.plan_id);
    let _ = writeln!(out, "app         {}", p.app);
    let env = if p.environment.is_empty() {
        "(none: only agents with no environment)"
    } else {
        p.environment.as_str()
    };
    let _ = writeln!(out, "environment {env}");
    let _ = writeln!(
        out,
        "not before  {} ({})",
        flags::format_unix(p.not_before),
        flags::relative(p.not_before, now)
    );
    let expiry = if p.expires_at > now {
        "expires"
    } else {
        "EXPIRED"
    };
    let _ = writeln!(
        out,
        "expires     {} ({expiry} {})",
        flags::format_unix(p.expires_at),
        flags::relative(p.expires_at, now)
    );
    if !p.reason.is_empty() {
        let _ = writeln!(out, "reason      {}", p.reason);
    }
    if let Some(r) = &p.release {
        let strategy = Strategy::try_from(r.strategy).map_or("unknown", strategy_name);
        let _ = writeln!(out, "version     {}", r.version);
        let _ = writeln!(
            out,
            "artifact    sha256:{} ({} bytes)",
            r.artifact_sha256, r.artifact_size
        );
        let _ = writeln!(out, "strategy    {strategy}");
        let _ = writeln!(out, "instances   {}", r.instances);
        let _ = writeln!(out, "command     {}", r.command.join(" "));
        if let Some(h) = &r.health {
            let _ = writeln!(
                out,
                "health      {} every {}ms, deadline {}ms",
                h.probe
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), probe_text),
                h.interval_ms,
                h.deadline_ms
            );
        }
        for (k, v) in shown_env(r) {
            let _ = writeln!(out, "env         {k}={v}");
        }
    }
    let _ = writeln!(out, "rings       {}", p.rings.len());
    for (i, r) in p.rings.iter().enumerate() {
        let _ = writeln!(out, "  {}", ring_text(i, r));
    }
    let digest = file.digest();
    signatures_text(
        &mut out,
        12,
        "gantry rollout sign",
        &digest,
        &file.signed.signatures,
        checks,
    );
    for c in &file.signed.comments {
        let _ = writeln!(
            out,
            "comment     by key {} ({}): {}",
            c.key_id,
            comment_verdict(c, &digest, keys),
            c.comment
        );
    }
    out
}

/// The decoded plan as JSON (times RFC 3339), plus digest, rings and signatures.
pub fn show_json(file: &PlanFile, checks: &[SigCheck], keys: &[PublicKey]) -> serde_json::Value {
    let p = &file.plan;
    let rings: Vec<_> = p
        .rings
        .iter()
        .map(|r| {
            let sel = r.selector.clone().unwrap_or_default();
            let gates = r.gates.unwrap_or_default();
            let labels: std::collections::BTreeMap<_, _> = sel.labels.iter().collect();
            json!({
                "name": r.name,
                "agent_ids": sel.agent_ids,
                "labels": labels,
                "max_parallel": r.max_parallel,
                "min_healthy": r.min_healthy,
                "bake_ms": r.bake_ms,
                "on_failure": on_failure_name(r.on_failure),
                "gates": {
                    "max_restarts": gates.max_restarts,
                    "max_conn_errors": gates.max_conn_errors,
                    "max_unhealthy_hosts": gates.max_unhealthy_hosts,
                },
                "host_deadline_ms": r.host_deadline_ms,
                "flag_percent": r.flag_percent,
            })
        })
        .collect();
    let sigs: Vec<_> = file
        .signed
        .signatures
        .iter()
        .zip(checks)
        .map(|(s, c)| json!({"key_id": s.key_id, "check": check_name(c)}))
        .collect();
    let digest = file.digest();
    let comments: Vec<_> = file
        .signed
        .comments
        .iter()
        .map(|c| {
            json!({
                "key_id": c.key_id,
                "comment": c.comment,
                "check": comment_verdict(c, &digest, keys),
            })
        })
        .collect();
    let release = p.release.as_ref().map(|r| {
        json!({
            "version": r.version,
            "artifact_sha256": r.artifact_sha256,
            "artifact_size": r.artifact_size,
            "strategy": Strategy::try_from(r.strategy).map_or("unknown", strategy_name),
            "instances": r.instances,
            "command": r.command,
            "env": shown_env(r),
        })
    });
    json!({
        "plan_id": p.plan_id,
        "app": p.app,
        "environment": p.environment,
        "issued_at": flags::format_unix(p.issued_at),
        "not_before": flags::format_unix(p.not_before),
        "expires_at": flags::format_unix(p.expires_at),
        "reason": p.reason,
        "release": release,
        "rings": rings,
        "digest": file.digest(),
        "signatures": sigs,
        "comments": comments,
    })
}

/// Evaluates the plan file against an agent's config at `now`, with the agent's own checks.
pub fn evaluate(file: &PlanFile, cfg: &Config, now: i64) -> Vec<Requirement> {
    let sigs = gantry_policy::admission::SignatureIn::all_of(&file.signed.signatures);
    explain_plan(cfg, &file.signed.plan, &sigs, now)
}

/// The `--policy` section of `rollout show`: each requirement, met or missing, then a verdict.
pub fn policy_text(path: &Path, cfg: &Config, reqs: &[Requirement]) -> String {
    requirements_text(
        12,
        path,
        cfg,
        reqs,
        "the agent's policy admits dispatches of this plan (each dispatch is still checked: \
         its signer, window, ring, job id and epoch)",
        "refuse dispatches of this plan",
    )
}

/// `gantry rollout show`.
///
/// # Errors
///
/// [`RolloutError`]: unreadable plan or public key files; [`RolloutError::PolicyNotMet`]
/// (exit 3) when `--policy` finds a requirement missing.
pub fn show(args: &RolloutShowArgs) -> Result<(), RolloutError> {
    let file = PlanFile::read(&args.plan)?;
    let mut keys = args
        .pubkeys
        .iter()
        .map(|p| PublicKey::read_pem_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let now = flags::unix_secs(SystemTime::now());
    let policy = args
        .policy
        .as_deref()
        .map(|p| {
            Config::load_policy_only(p)
                .map(|cfg| (p.to_owned(), cfg))
                .map_err(RolloutError::Policy)
        })
        .transpose()?;
    if let Some((_, cfg)) = &policy {
        keys.extend(cfg.policy.keys.iter().map(|k| k.key));
    }
    let checks = check_signatures(&file.signed, &keys);
    let not_met = print_shown(
        args.json,
        || show_json(&file, &checks, &keys),
        || show_text(&file, &checks, &keys, now),
        policy,
        |cfg| evaluate(&file, cfg, now),
        policy_text,
    );
    match not_met {
        Some((policy, missing)) => Err(RolloutError::PolicyNotMet {
            plan: args.plan.clone(),
            policy,
            missing,
        }),
        None => Ok(()),
    }
}
