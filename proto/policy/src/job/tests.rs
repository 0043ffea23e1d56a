//! Tests of the job's names, kinds and their wire values.

use gantry_proto::v1;

use super::*;

#[test]
fn app_names_reject_path_tricks() {
    for bad in ["", "../x", "a/b", "a\0b", "-x", "X", "a b", &"a".repeat(64)] {
        assert!(AppName::new(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        AppName::new("web-1_a").map(|n| n.to_string()),
        Ok("web-1_a".to_owned())
    );
}

#[test]
fn job_ids_reject_leading_dash_and_slashes() {
    for bad in ["", "-j", "a/b", ".x", &"j".repeat(129)] {
        assert!(JobId::new(bad).is_err(), "{bad:?} accepted");
    }
    assert!(JobId::new("deploy-2026-11-26T12:00:00.1").is_ok());
}

#[test]
fn names_round_trip_through_parse_and_the_wire() {
    for a in Action::ALL {
        assert_eq!(Action::parse(a.as_str()), Some(a));
        assert_eq!(Action::from_wire(a.to_wire()), Some(a));
        assert_eq!(action_name(a.to_wire()), a.as_str());
    }
    for k in StrategyKind::ALL {
        assert_eq!(StrategyKind::parse(k.as_str()), Some(k));
        assert_eq!(StrategyKind::from_wire(k.to_wire()), Some(k));
        assert_eq!(strategy_name(k.to_wire()), k.as_str());
    }
    assert_eq!(action_name(v1::Action::Unspecified), "unspecified");
    assert_eq!(strategy_name(v1::Strategy::Unspecified), "unspecified");
    assert_eq!(Action::parse("Deploy"), None);
    assert_eq!(StrategyKind::parse("blue_green"), None);
}

#[test]
fn digests_are_lowercase_hex() {
    assert!(Sha256Hex::new(&"A".repeat(64)).is_err());
    assert!(Sha256Hex::new(&"a".repeat(63)).is_err());
    assert_eq!(Sha256Hex::of(b"").as_str().len(), 64);
}
