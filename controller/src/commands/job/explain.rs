//! `gantry job show --policy`: which requirements of an agent's policy a job file meets.
//!
//! The checks are the agent's own ([`gantry_policy::admission::explain`]), so what is
//! explained here is what the agent enforces.

use std::path::{Path, PathBuf};

use gantry_policy::admission::SignatureIn;
use gantry_policy::admission::explain::{Requirement, explain};
use gantry_policy::config::Config;
use serde_json::json;

use super::JobFile;

/// Evaluates the job file against an agent's policy at `now`, with the agent's own checks.
pub fn evaluate(file: &JobFile, cfg: &Config, now: i64) -> Vec<Requirement> {
    let sigs = SignatureIn::all_of(&file.signed.signatures);
    explain(
        &cfg.policy,
        &cfg.limits,
        &cfg.agent_id,
        &file.signed.job,
        &sigs,
        now,
    )
}

/// The `--policy` section of `job show`: each requirement, met or missing, then a verdict.
pub fn policy_text(path: &Path, cfg: &Config, reqs: &[Requirement]) -> String {
    requirements_text(
        11,
        path,
        cfg,
        reqs,
        "the agent's policy admits this job (the agent still checks replay, downgrade and a \
         busy app)",
        "reject this job",
    )
}

/// The `--policy` section of `job show` and `rollout show`, labels padded to `width` columns:
/// the config, each requirement met or missing, then the verdict: `admits` when all are met,
/// else how many are missing and that the agent would `refuse`.
pub fn requirements_text(
    width: usize,
    path: &Path,
    cfg: &Config,
    reqs: &[Requirement],
    admits: &str,
    refuse: &str,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}{} (agent {})",
        "policy",
        path.display(),
        cfg.agent_id
    );
    let names = reqs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in reqs {
        let mark = if r.met { "met    " } else { "MISSING" };
        let _ = writeln!(out, "  {mark}  {:<names$}  {}", r.name, r.detail);
    }
    let missing = reqs.iter().filter(|r| !r.met).count();
    if missing == 0 {
        let _ = writeln!(out, "{:<width$}{admits}", "verdict");
    } else {
        let _ = writeln!(
            out,
            "{:<width$}{missing} requirement(s) missing: the agent would {refuse}",
            "verdict"
        );
    }
    out
}

/// Prints a `show` command's answer: `doc` as JSON (with the `--policy` section under
/// `"policy"`), or `text` followed by that section as `policy_text` writes it; `evaluate`
/// judges the file by the `--policy` config. Returns that config's path and how many
/// requirements are missing, when any is.
pub fn print_shown(
    json: bool,
    doc: impl FnOnce() -> serde_json::Value,
    text: impl FnOnce() -> String,
    policy: Option<(PathBuf, Config)>,
    evaluate: impl FnOnce(&Config) -> Vec<Requirement>,
    policy_text: fn(&Path, &Config, &[Requirement]) -> String,
) -> Option<(PathBuf, usize)> {
    let policy = policy.map(|(path, cfg)| {
        let reqs = evaluate(&cfg);
        (path, cfg, reqs)
    });
    if json {
        let mut doc = doc();
        if let Some((path, cfg, reqs)) = &policy {
            doc["policy"] = policy_json(path, cfg, reqs);
        }
        println!("{doc}");
    } else {
        print!("{}", text());
        if let Some((path, cfg, reqs)) = &policy {
            print!("{}", policy_text(path, cfg, reqs));
        }
    }
    let (path, _, reqs) = policy?;
    let missing = reqs.iter().filter(|r| !r.met).count();
    (missing > 0).then_some((path, missing))
}

/// The `--policy` section as JSON.
pub fn policy_json(path: &Path, cfg: &Config, reqs: &[Requirement]) -> serde_json::Value {
    let items: Vec<_> = reqs
        .iter()
        .map(|r| json!({"name": r.name, "met": r.met, "detail": r.detail}))
        .collect();
    json!({
        "config": path.display().to_string(),
        "agent_id": cfg.agent_id,
        "admissible": reqs.iter().all(|r| r.met),
        "requirements": items,
    })
}
