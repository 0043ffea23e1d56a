//! Signatures, roles and quorum: who signed, and whether that is enough.
//!
//! Signatures are verified over the raw job bytes (DSSE PAE) before anything decodes them. The
//! `key_id` of a signature is only a hint to find the key fast: a hint that names no trusted
//! key, or whose key does not verify, falls back to trying every trusted key. What counts is
//! the set of distinct public keys with a valid signature; a key signing twice, or listed
//! under two hints, counts once.

use std::collections::BTreeSet;

use gantry_proto::envelope::verify_job;
use gantry_proto::keys::{KeyError, PublicKey};

use super::{AdmissionError, SignatureIn};
use crate::config::{APPROVER_ROLE, AppPolicy, KeyInvalidity, Policy, TrustedKey};
use crate::job::Action;

/// Most signatures looked at in one job: each may cost one verification per trusted key.
pub const MAX_SIGNATURES: usize = 32;

/// The trusted keys that signed a job, and how many signatures did not count.
#[derive(Debug, Clone)]
pub struct Signers<'p> {
    /// The distinct trusted keys with a valid signature, in policy order.
    pub keys: Vec<&'p TrustedKey>,
    /// Signatures by no trusted key, or that do not verify: ignored, they neither help nor
    /// hurt a job that has enough valid ones.
    pub ignored: usize,
}

/// Returns the distinct trusted keys with a valid signature over `job_bytes`, in policy order.
///
/// # Errors
///
/// As [`signers`].
pub fn verify_signers<'p>(
    policy: &'p Policy,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
) -> Result<Vec<&'p TrustedKey>, AdmissionError> {
    signers(policy, job_bytes, sigs).map(|s| s.keys)
}

/// [`verify_signers`], also counting the signatures that do not count.
///
/// # Errors
///
/// [`AdmissionError::NoSignatures`], [`AdmissionError::TooManySignatures`]; when no
/// signature verifies, [`AdmissionError::BadSignature`] if some hint named a trusted key,
/// else [`AdmissionError::UnknownKey`] with the hints.
pub fn signers<'p>(
    policy: &'p Policy,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
) -> Result<Signers<'p>, AdmissionError> {
    signers_of(policy, verify_job, job_bytes, sigs)
}

/// How one signature over a document's exact bytes is checked: the envelope's verify function
/// for the document's payload type ([`verify_job`], `fleet::verify_plan`,
/// `fleet::verify_dispatch`).
pub type Verify = fn(&PublicKey, &[u8], &[u8]) -> Result<(), KeyError>;

/// [`signers`] for any signed document: a job, a fleet plan or a dispatch, each verified under
/// its own payload type by `verify`, so a signature over one never counts for another.
///
/// # Errors
///
/// As [`signers`].
pub fn signers_of<'p>(
    policy: &'p Policy,
    verify: Verify,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
) -> Result<Signers<'p>, AdmissionError> {
    if sigs.is_empty() {
        return Err(AdmissionError::NoSignatures);
    }
    if sigs.len() > MAX_SIGNATURES {
        return Err(AdmissionError::TooManySignatures {
            count: sigs.len(),
            max: MAX_SIGNATURES,
        });
    }
    let mut valid: BTreeSet<usize> = BTreeSet::new();
    let mut hinted_trusted: Option<String> = None;
    let mut ignored = 0usize;
    for sig in sigs {
        let hinted = policy
            .keys
            .iter()
            .position(|k| k.key_id.as_str() == sig.key_id_hint);
        if let Some(i) = hinted {
            hinted_trusted.get_or_insert_with(|| sig.key_id_hint.clone());
            if verify(&policy.keys[i].key, job_bytes, &sig.sig).is_ok() {
                valid.insert(i);
                continue;
            }
        }
        let found = policy
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != hinted)
            .find(|(_, k)| verify(&k.key, job_bytes, &sig.sig).is_ok());
        match found {
            Some((i, _)) => {
                valid.insert(i);
            }
            None => ignored += 1,
        }
    }
    if valid.is_empty() {
        return Err(match hinted_trusted {
            Some(key_id) => AdmissionError::BadSignature { key_id },
            None => AdmissionError::UnknownKey {
                key_ids: sigs.iter().map(|s| s.key_id_hint.clone()).collect(),
            },
        });
    }
    // Config refuses duplicate public keys; deduplicate anyway so a hand-built policy with one
    // key listed twice still counts it once.
    let mut seen = BTreeSet::new();
    let keys = valid
        .into_iter()
        .map(|i| &policy.keys[i])
        .filter(|k| seen.insert(*k.key.as_bytes()))
        .collect();
    Ok(Signers { keys, ignored })
}

/// Splits verified signers into those whose key counts at `now` (not revoked, inside its
/// validity window) and those that do not, with the reason, both in input order.
pub fn valid_at<'p>(
    signers: &[&'p TrustedKey],
    now: i64,
) -> (Vec<&'p TrustedKey>, Vec<(&'p TrustedKey, KeyInvalidity)>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for k in signers {
        match k.invalid_at(now) {
            None => valid.push(*k),
            Some(why) => invalid.push((*k, why)),
        }
    }
    (valid, invalid)
}

/// [`AdmissionError::KeyNotValid`] for the first key of `not_valid` (as [`valid_at`]
/// returns them); [`AdmissionError::NoSignatures`] when it is empty.
pub fn key_not_valid(not_valid: &[(&TrustedKey, KeyInvalidity)]) -> AdmissionError {
    match not_valid.first() {
        Some((k, why)) => AdmissionError::KeyNotValid {
            key_id: k.key_id.to_string(),
            name: k.name.clone(),
            why: why.to_string(),
        },
        None => AdmissionError::NoSignatures,
    }
}

/// How many approvals `signers` give a job for `action` on `app`: distinct keys (by public
/// key) with role [`APPROVER_ROLE`], less the one acting as the deployer unless
/// `app.deployer_may_approve`. The deployer is chosen to leave the most approvals: a
/// deployer-only key if one signed, else one approver fewer.
pub fn approvals(app: &AppPolicy, action: Action, signers: &[&TrustedKey]) -> u32 {
    let needed = app.roles_for(action);
    let mut seen = BTreeSet::new();
    let distinct: Vec<&&TrustedKey> = signers
        .iter()
        .filter(|k| seen.insert(*k.key.as_bytes()))
        .collect();
    let deployers: Vec<&&&TrustedKey> = distinct
        .iter()
        .filter(|k| !k.roles.is_disjoint(&needed))
        .collect();
    let approvers = distinct
        .iter()
        .filter(|k| k.roles.contains(APPROVER_ROLE))
        .count();
    let deployer_is_approver = !deployers.is_empty()
        && !app.deployer_may_approve
        && deployers.iter().all(|k| k.roles.contains(APPROVER_ROLE));
    u32::try_from(approvers - usize::from(deployer_is_approver)).unwrap_or(u32::MAX)
}

/// Checks that the signers may do `action` on `app`, with the approvals it requires:
/// [`check_role`], then [`check_quorum`].
///
/// # Errors
///
/// [`AdmissionError::MissingRole`] when no signer holds a role allowed for the action;
/// [`AdmissionError::QuorumNotMet`] when fewer than `app.approvals` distinct keys with role
/// [`APPROVER_ROLE`] signed besides the one acting as the deployer (see [`approvals`]).
pub fn check_roles(
    app: &AppPolicy,
    action: Action,
    signers: &[&TrustedKey],
) -> Result<(), AdmissionError> {
    check_role(app, action, signers)?;
    check_quorum(app, action, signers).map(|_| ())
}

/// Checks that some signer holds a role allowed to do `action` on `app`.
///
/// # Errors
///
/// [`AdmissionError::MissingRole`] naming the roles needed and those the signers hold.
pub fn check_role(
    app: &AppPolicy,
    action: Action,
    signers: &[&TrustedKey],
) -> Result<(), AdmissionError> {
    let needed = app.roles_for(action);
    if signers.iter().any(|k| !k.roles.is_disjoint(&needed)) {
        return Ok(());
    }
    let signer_roles: BTreeSet<String> = signers
        .iter()
        .flat_map(|k| k.roles.iter().cloned())
        .collect();
    Err(AdmissionError::MissingRole {
        action,
        app: app.name.to_string(),
        needed: needed.into_iter().collect(),
        signer_roles: signer_roles.into_iter().collect(),
    })
}

/// Checks the approvals `signers` give (see [`approvals`]) against `app.approvals`; returns
/// how many there are.
///
/// # Errors
///
/// [`AdmissionError::QuorumNotMet`] with the numbers.
pub fn check_quorum(
    app: &AppPolicy,
    action: Action,
    signers: &[&TrustedKey],
) -> Result<u32, AdmissionError> {
    let got = approvals(app, action, signers);
    if got < app.approvals {
        return Err(AdmissionError::QuorumNotMet {
            needed: app.approvals,
            got,
        });
    }
    Ok(got)
}
