//! The environment's rules for a release: pre-release versions and required gates.
//!
//! A required gate is met by evidence in the job (`release.evidence`, bound by the job's own
//! signatures) that is a DSSE envelope of a gate statement ([`gantry_proto::attest`]) signed by
//! a trusted key holding role [`CI_ROLE`] and valid now, whose subject is the job's artifact
//! digest, not expired, and listing the gate as `PASSED`. Evidence is only read when the
//! environment requires a gate: an unused attestation neither helps nor hurts.
//!
//! When a required gate has no usable evidence, the refusal names why the closest candidate
//! was not usable (another digest, a signer without `ci`, expired, malformed) before falling
//! back to "missing", so an operator sees the real cause.

use gantry_proto::attest::{Envelope, GateResult, Statement, Verdict};

use super::AdmissionError;
use crate::config::TrustedKey;
use crate::environment::{CI_ROLE, EnvironmentRules, Environments, GateKind, Prerelease};
use crate::job::ReleaseSpec;

/// A required gate met by signed evidence: what `gantry release show` and the audit entry
/// name.
#[derive(Debug, Clone, PartialEq)]
pub struct GateEvidence {
    /// The gate.
    pub gate: GateKind,
    /// The `ci` key that signed it (its config name).
    pub signer: String,
    /// When it was measured (RFC 3339).
    pub time_verified: String,
    /// The gate's values and thresholds as signed.
    pub result: GateResult,
}

/// Checks the version against the environment's pre-release rule.
///
/// # Errors
///
/// [`AdmissionError::PrereleaseRefused`].
pub fn check_prerelease(
    envs: &Environments,
    rules: &EnvironmentRules,
    version: &semver::Version,
) -> Result<(), AdmissionError> {
    match rules.prerelease {
        Prerelease::Refused if !version.pre.is_empty() => Err(AdmissionError::PrereleaseRefused {
            version: version.clone(),
            environment: envs.current_name().to_owned(),
        }),
        Prerelease::Refused | Prerelease::Allowed => Ok(()),
    }
}

/// One envelope that verified: its statement and the `ci` key that signed it.
struct Usable<'p> {
    statement: Statement,
    signer: &'p TrustedKey,
}

/// Checks every gate `rules` require against the release's evidence at `now`.
///
/// # Errors
///
/// [`AdmissionError::GateFailed`] for signed evidence of a failed gate; else, for a gate with
/// no usable evidence, the first unusable envelope's error ([`AdmissionError::GateInvalid`],
/// [`AdmissionError::GateSignerRole`], [`AdmissionError::GateDigestMismatch`],
/// [`AdmissionError::GateExpired`]) or [`AdmissionError::GateMissing`].
pub fn check_gates(
    envs: &Environments,
    rules: &EnvironmentRules,
    keys: &[TrustedKey],
    release: &ReleaseSpec,
    now: i64,
) -> Result<Vec<GateEvidence>, AdmissionError> {
    if rules.require_gates.is_empty() {
        return Ok(Vec::new());
    }
    let mut usable = Vec::new();
    let mut first_problem = None;
    for (index, bytes) in release.evidence.iter().enumerate() {
        match usable_evidence(index, bytes, keys, release.artifact_sha256.as_str(), now) {
            Ok(u) => usable.push(u),
            Err(e) => {
                first_problem.get_or_insert(e);
            }
        }
    }
    let mut met = Vec::new();
    for &gate in &rules.require_gates {
        let found = usable.iter().find_map(|u| {
            u.statement
                .predicate
                .gates
                .iter()
                .find(|g| g.name == gate.as_str())
                .map(|g| (u, g))
        });
        match found {
            Some((u, g)) if g.result == Verdict::Passed => met.push(GateEvidence {
                gate,
                signer: u.signer.name.clone(),
                time_verified: u.statement.predicate.time_verified.clone(),
                result: g.clone(),
            }),
            Some((_, g)) => {
                return Err(AdmissionError::GateFailed {
                    gate,
                    detail: describe(g),
                });
            }
            None => {
                return Err(
                    first_problem.unwrap_or_else(|| AdmissionError::GateMissing {
                        gate,
                        environment: envs.current_name().to_owned(),
                    }),
                );
            }
        }
    }
    Ok(met)
}

/// `line_percent 72.5 (needs >= 80)`, for each measured value.
pub fn describe(g: &GateResult) -> String {
    g.measured
        .iter()
        .map(|(name, value)| match g.thresholds.get(name) {
            Some(t) => format!("{name} {value} (needs {t})"),
            None => format!("{name} {value}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn usable_evidence<'p>(
    index: usize,
    bytes: &[u8],
    keys: &'p [TrustedKey],
    artifact: &str,
    now: i64,
) -> Result<Usable<'p>, AdmissionError> {
    let invalid = |e: &dyn std::error::Error| AdmissionError::GateInvalid {
        index,
        detail: crate::error_chain(e),
    };
    let envelope = Envelope::parse(bytes).map_err(|e| invalid(&e))?;
    let signed_by: Vec<&TrustedKey> = keys.iter().filter(|k| envelope.signed_by(&k.key)).collect();
    let signer = signed_by
        .iter()
        .find(|k| k.roles.contains(CI_ROLE) && k.invalid_at(now).is_none())
        .copied();
    let Some(signer) = signer else {
        let detail = if signed_by.is_empty() {
            "it is signed by no trusted key".to_owned()
        } else {
            signed_by
                .iter()
                .map(|k| match k.invalid_at(now) {
                    Some(why) if k.roles.contains(CI_ROLE) => {
                        format!("key {} does not count: {why}", k.name)
                    }
                    _ => format!(
                        "key {} holds {}",
                        k.name,
                        if k.roles.is_empty() {
                            "no roles".to_owned()
                        } else {
                            k.roles.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(AdmissionError::GateSignerRole { index, detail });
    };
    let statement = envelope.statement().map_err(|e| invalid(&e))?;
    if !statement.subject_sha256().any(|d| d == artifact) {
        return Err(AdmissionError::GateDigestMismatch {
            index,
            expected: artifact.to_owned(),
            found: statement.subject_sha256().collect::<Vec<_>>().join(", "),
        });
    }
    if statement.predicate.expires_at <= now {
        return Err(AdmissionError::GateExpired {
            index,
            expires_at: statement.predicate.expires_at,
            now,
        });
    }
    Ok(Usable { statement, signer })
}

#[cfg(test)]
pub(crate) mod tests;
