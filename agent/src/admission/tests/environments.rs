//! The environment's rules in the pipeline: a pre-release and a deploy without its required
//! gates are refused, each with its own error, and `job show --policy` names the same
//! requirement; outside production a pre-release is admitted.

use std::collections::BTreeMap;

use gantry_policy::environment::{EnvironmentRules, Environments, GateKind};

use super::*;

fn in_environment(name: &str, gates: &[GateKind]) -> Fx {
    let keys = keys();
    let mut policy = policy(&keys, 0);
    let mut rules = EnvironmentRules::defaults_for(Some(name));
    rules.require_gates = gates.iter().copied().collect();
    rules.configured = true;
    policy.environments = Environments {
        current: Some(name.to_owned()),
        tables: BTreeMap::from([(name.to_owned(), rules)]),
    };
    fx_policy(keys, policy)
}

fn deploy(version: &str) -> Vec<u8> {
    let mut j = job(&format!("deploy-{version}"));
    if let Some(r) = j.release.as_mut() {
        r.version = version.to_owned();
    }
    j.encode_to_vec()
}

/// The first requirement `job show --policy` calls missing.
fn first_missing(fx: &Fx, bytes: &[u8], sigs: &[SignatureIn]) -> explain::Requirement {
    explain::explain(fx.adm.policy(), &limits(), AGENT, bytes, sigs, NOW)
        .into_iter()
        .find(|r| !r.met)
        .expect("a missing requirement")
}

#[test]
fn production_refuses_a_prerelease_and_names_it_in_the_explanation() {
    let fx = in_environment("production", &[]);
    let bytes = deploy("1.3.0-rc.1");
    let sigs = signed(&bytes, &[&fx.keys.deployer]);
    let e = fx.admit(&bytes, &sigs).unwrap_err().error;
    assert!(matches!(e, AdmissionError::PrereleaseRefused { .. }), "{e}");
    let r = first_missing(&fx, &bytes, &sigs);
    assert_eq!(r.name, "environment");
    assert_eq!(r.detail, e.to_string());
    // The release itself is admitted there.
    let bytes = deploy("1.3.0");
    new_job(fx.admit(&bytes, &signed(&bytes, &[&fx.keys.deployer])));
}

#[test]
fn a_deploy_without_a_required_gate_is_refused() {
    let fx = in_environment("production", &[GateKind::Tests]);
    let bytes = deploy("1.3.0");
    let sigs = signed(&bytes, &[&fx.keys.deployer]);
    let e = fx.admit(&bytes, &sigs).unwrap_err().error;
    assert!(
        matches!(
            e,
            AdmissionError::GateMissing {
                gate: GateKind::Tests,
                ..
            }
        ),
        "{e}"
    );
    let r = first_missing(&fx, &bytes, &sigs);
    assert_eq!((r.name, r.detail), ("gates", e.to_string()));
}

#[test]
fn staging_admits_a_prerelease() {
    let fx = in_environment("staging", &[]);
    let bytes = deploy("1.3.0-rc.1");
    new_job(fx.admit(&bytes, &signed(&bytes, &[&fx.keys.deployer])));
}

fn rollback(id: &str, to: Option<&str>) -> Vec<u8> {
    let mut j = job(id);
    j.action = v1::Action::Rollback as i32;
    j.release = to.map(|version| v1::Release {
        version: version.to_owned(),
        ..v1::Release::default()
    });
    j.encode_to_vec()
}

fn version(v: &str) -> semver::Version {
    semver::Version::parse(v).unwrap()
}

#[test]
fn production_refuses_a_rollback_to_a_prerelease_named_or_previous() {
    let fx = in_environment("production", &[]);
    let rc = version("1.2.0-rc.1");
    let apps = Apps {
        current: Some(version("1.3.0")),
        previous: Some(rc.clone()),
        on_disk: vec![rc.clone(), version("1.1.0")],
        ..Apps::default()
    };
    // Named: on disk, but a pre-release.
    let bytes = rollback("back-1", Some("1.2.0-rc.1"));
    let e = fx
        .admit_with(&bytes, &signed(&bytes, &[&fx.keys.deployer]), &apps)
        .unwrap_err()
        .error;
    assert!(
        matches!(&e, AdmissionError::PrereleaseRefused { version, environment }
            if *version == rc && environment == "production"),
        "{e}"
    );
    // Unnamed: the previous release is that pre-release.
    let bytes = rollback("back-2", None);
    let e = fx
        .admit_with(&bytes, &signed(&bytes, &[&fx.keys.deployer]), &apps)
        .unwrap_err()
        .error;
    assert!(
        matches!(&e, AdmissionError::PrereleaseRefused { version, .. } if *version == rc),
        "{e}"
    );
    // A release without a label is a target there.
    let bytes = rollback("back-3", Some("1.1.0"));
    new_job(fx.admit_with(&bytes, &signed(&bytes, &[&fx.keys.deployer]), &apps));
}

#[test]
fn staging_admits_a_rollback_to_a_prerelease() {
    let fx = in_environment("staging", &[]);
    let apps = Apps {
        previous: Some(version("1.2.0-rc.1")),
        ..Apps::default()
    };
    let bytes = rollback("back-1", None);
    new_job(fx.admit_with(&bytes, &signed(&bytes, &[&fx.keys.deployer]), &apps));
}
