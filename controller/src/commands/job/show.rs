//! `gantry job show`: the decoded job, its digest and signatures, as text or JSON, and with
//! `--policy` the requirements of an agent's policy (see [`super::explain`]).

use std::time::SystemTime;

use gantry_policy::job::{action_name, strategy_name};
use gantry_proto::envelope;
use gantry_proto::keys::PublicKey;
use gantry_proto::v1::{SignedJob, health_check};
use serde_json::json;

use super::explain::{evaluate, policy_text, print_shown};
use super::{JobError, JobFile, release_extras_view, rollout};
use crate::cli::JobShowArgs;
use crate::flags;

/// Env for display: values of `secret_env` keys are `<secret>`.
pub fn shown_env(r: &gantry_proto::v1::Release) -> std::collections::BTreeMap<&str, &str> {
    r.env
        .iter()
        .map(|(k, v)| {
            let shown = if r.secret_env.contains(k) {
                "<secret>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// The digest and signature lines of `job show` and `rollout show`, labels padded to `width`
/// columns; `sign` is the command that signs such a file.
pub fn signatures_text(
    out: &mut String,
    width: usize,
    sign: &str,
    digest: &str,
    signatures: &[gantry_proto::v1::Signature],
    checks: &[SigCheck],
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{:<width$}{digest}", "digest");
    if signatures.is_empty() {
        let _ = writeln!(
            out,
            "{:<width$}none (sign with: {sign} --key KEY FILE)",
            "signatures"
        );
        return;
    }
    let _ = writeln!(out, "{:<width$}{}", "signatures", signatures.len());
    for (s, c) in signatures.iter().zip(checks) {
        let verdict = match c {
            SigCheck::Valid => "valid",
            SigCheck::Invalid => "INVALID",
            SigCheck::NotChecked => "not checked (no matching --pubkey)",
        };
        let _ = writeln!(out, "  key {}  {verdict}", s.key_id);
    }
}

/// What `job show` says about one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigCheck {
    /// Verifies under the named key file's key.
    Valid,
    /// A key with this id was given and the signature does not verify.
    Invalid,
    /// No given key matches.
    NotChecked,
}

/// Checks each signature against the given public keys (by key id hint, then by trying all).
pub fn check_signatures(signed: &SignedJob, keys: &[PublicKey]) -> Vec<SigCheck> {
    check_each(&signed.job, &signed.signatures, keys, envelope::verify_job)
}

/// [`check_signatures`] for any signed document: `verify` checks one signature over `bytes`
/// under the document's own payload type (a job's, a plan's).
pub fn check_each(
    bytes: &[u8],
    signatures: &[gantry_proto::v1::Signature],
    keys: &[PublicKey],
    verify: gantry_policy::admission::policy::Verify,
) -> Vec<SigCheck> {
    signatures
        .iter()
        .map(|s| {
            if keys.iter().any(|k| verify(k, bytes, &s.sig).is_ok()) {
                SigCheck::Valid
            } else if keys.iter().any(|k| k.key_id().as_str() == s.key_id) {
                SigCheck::Invalid
            } else {
                SigCheck::NotChecked
            }
        })
        .collect()
}

/// The decoded job as JSON (times RFC 3339), plus digest and signatures.
pub fn show_json(file: &JobFile, checks: &[SigCheck], keys: &[PublicKey]) -> serde_json::Value {
    let j = &file.job;
    let action = gantry_proto::v1::Action::try_from(j.action).map_or("unknown", action_name);
    let release = j.release.as_ref().map(|r| {
        let strategy =
            gantry_proto::v1::Strategy::try_from(r.strategy).map_or("unknown", strategy_name);
        let health = r.health.as_ref().map(|h| {
            json!({
                "probe": h.probe.as_ref().map(probe_text),
                "interval_ms": h.interval_ms,
                "timeout_ms": h.timeout_ms,
                "healthy_threshold": h.healthy_threshold,
                "unhealthy_threshold": h.unhealthy_threshold,
                "deadline_ms": h.deadline_ms,
            })
        });
        let env = shown_env(r);
        let (notes, evidence) = release_extras_view::json(
            &r.notes,
            &release_extras_view::evidence_views(&r.evidence, keys),
        );
        json!({
            "version": r.version,
            "artifact_sha256": r.artifact_sha256,
            "artifact_size": r.artifact_size,
            "strategy": strategy,
            "instances": r.instances,
            "command": r.command,
            "health": health,
            "env": env,
            "secret_env": r.secret_env,
            "progress_deadline_secs": r.progress_deadline_secs,
            "rollout": rollout::rollout_json(r.rollout.as_ref()),
            "notes": notes,
            "evidence": evidence,
        })
    });
    let sigs: Vec<_> = file
        .signed
        .signatures
        .iter()
        .zip(checks)
        .map(|(s, c)| {
            let verified = match c {
                SigCheck::Valid => json!(true),
                SigCheck::Invalid => json!(false),
                SigCheck::NotChecked => serde_json::Value::Null,
            };
            json!({"key_id": s.key_id, "verified": verified})
        })
        .collect();
    json!({
        "job_id": j.job_id,
        "agent_id": j.agent_id,
        "app": j.app,
        "action": action,
        "issued_at": flags::format_unix(j.issued_at),
        "not_before": flags::format_unix(j.not_before),
        "expires_at": flags::format_unix(j.expires_at),
        "release": release,
        "reason": j.reason,
        "digest": file.digest(),
        "job_bytes": file.signed.job.len(),
        "signatures": sigs,
    })
}

/// A probe as the `--health` flag spells it.
pub fn probe_text(p: &health_check::Probe) -> String {
    match p {
        health_check::Probe::Http(h) if h.expect_status != 0 => {
            format!("http:{}={}", h.path, h.expect_status)
        }
        health_check::Probe::Http(h) => format!("http:{}", h.path),
        health_check::Probe::Tcp(_) => "tcp".to_owned(),
        health_check::Probe::Exec(e) => format!("exec:{}", e.command.join(" ")),
    }
}

/// The decoded job for people.
pub fn show_text(file: &JobFile, checks: &[SigCheck], keys: &[PublicKey], now: i64) -> String {
    use std::fmt::Write as _;
    let j = &file.job;
    let mut out = String::new();
    let action = gantry_proto::v1::Action::try_from(j.action).map_or("unknown", action_name);
    let _ = writeln!(out, "job        {}", j.job_id);
    let _ = writeln!(out, "agent      {}", j.agent_id);
    let _ = writeln!(out, "app        {}", j.app);
    let _ = writeln!(out, "action     {action}");
    let _ = writeln!(
        out,
        "issued     {} ({})",
        flags::format_unix(j.issued_at),
        flags::relative(j.issued_at, now)
    );
    let _ = writeln!(
        out,
        "not before {} ({})",
        flags::format_unix(j.not_before),
        flags::relative(j.not_before, now)
    );
    let expiry = if j.expires_at > now {
        format!("expires {}", flags::relative(j.expires_at, now))
    } else {
        format!("EXPIRED {}", flags::relative(j.expires_at, now))
    };
    let _ = writeln!(
        out,
        "expires    {} ({expiry})",
        flags::format_unix(j.expires_at)
    );
    if !j.reason.is_empty() {
        let _ = writeln!(out, "reason     {}", j.reason);
    }
    if let Some(r) = &j.release {
        let strategy =
            gantry_proto::v1::Strategy::try_from(r.strategy).map_or("unknown", strategy_name);
        let _ = writeln!(out, "version    {}", r.version);
        if !r.artifact_sha256.is_empty() {
            let _ = writeln!(
                out,
                "artifact   sha256:{} ({} bytes)",
                r.artifact_sha256, r.artifact_size
            );
            let _ = writeln!(out, "strategy   {strategy}");
            let rows = rollout::rollout_rows(
                gantry_proto::v1::Strategy::try_from(r.strategy)
                    .unwrap_or(gantry_proto::v1::Strategy::Unspecified),
                r.rollout.as_ref(),
            );
            let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
            for (i, (label, value)) in rows.iter().enumerate() {
                let head = if i == 0 { "rollout" } else { "" };
                let _ = writeln!(out, "{head:<10} {label:<width$}  {value}");
            }
            let _ = writeln!(out, "instances  {}", r.instances);
            let _ = writeln!(out, "command    {}", r.command.join(" "));
            if let Some(h) = &r.health {
                let _ = writeln!(
                    out,
                    "health     {} every {}ms, timeout {}ms, healthy after {}, unhealthy after {}, deadline {}ms",
                    h.probe
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), probe_text),
                    h.interval_ms,
                    h.timeout_ms,
                    h.healthy_threshold,
                    h.unhealthy_threshold,
                    h.deadline_ms
                );
            }
            for (k, v) in shown_env(r) {
                let _ = writeln!(out, "env        {k}={v}");
            }
            let _ = writeln!(
                out,
                "deadline   {}s for the whole job",
                r.progress_deadline_secs
            );
            out.push_str(&release_extras_view::text(
                &r.notes,
                &release_extras_view::evidence_views(&r.evidence, keys),
            ));
        }
    }
    let digest = file.digest();
    signatures_text(
        &mut out,
        11,
        "gantry job sign",
        &digest,
        &file.signed.signatures,
        checks,
    );
    for c in &file.signed.comments {
        let _ = writeln!(
            out,
            "comment    by key {} ({}): {}",
            c.key_id,
            comment_verdict(c, &digest, keys),
            c.comment
        );
    }
    out
}

/// Whether an approval comment is signed, over the document's `digest`, by the key it names
/// among `keys`: `valid`, `INVALID`, or not checked.
pub fn comment_verdict(
    c: &gantry_proto::v1::ApprovalComment,
    digest: &str,
    keys: &[PublicKey],
) -> &'static str {
    match keys.iter().find(|k| k.key_id().as_str() == c.key_id) {
        Some(k) if gantry_proto::attest::comment_signed_by(c, digest, k) => "valid",
        Some(_) => "INVALID",
        None => "not checked (no matching --pubkey)",
    }
}

/// `gantry job show`.
///
/// # Errors
///
/// [`JobError`]: unreadable job or public key files; [`JobError::PolicyNotMet`] (exit 3) when
/// `--policy` finds a requirement missing.
pub fn show(args: &JobShowArgs) -> Result<(), JobError> {
    let file = JobFile::read(&args.job)?;
    let keys = args
        .pubkeys
        .iter()
        .map(|p| PublicKey::read_pem_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let now = flags::unix_secs(SystemTime::now());
    let policy = args
        .policy
        .as_deref()
        .map(|p| {
            gantry_policy::config::Config::load_policy_only(p)
                .map(|cfg| (p.to_owned(), cfg))
                .map_err(JobError::Policy)
        })
        .transpose()?;
    // The policy's trusted keys check signatures too.
    let mut keys = keys;
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
        Some((policy, missing)) => Err(JobError::PolicyNotMet {
            job: args.job.clone(),
            policy,
            missing,
        }),
        None => Ok(()),
    }
}
