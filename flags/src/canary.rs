//! A canary's split of one flag: the flag's own metadata names the variant a canary may
//! release (`"metadata": {"canaryVariant": "on"}`), and a canary step serves it to a share of
//! users by replacing the flag's targeting with flagd's `fractional` between that variant and
//! the default one. Buckets are flagd's (by flag key and targeting key), and the canary
//! variant takes the first ones, so a user served it at 10% keeps it at 50%.

use serde_json::{Value, json};

use crate::definition::{Flag, State, Targeting};
use crate::logic;

/// The metadata key of a flag that names its canary variant.
pub const CANARY_VARIANT: &str = "canaryVariant";

/// Why a flag cannot be split by a canary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The flag's own metadata names no canary variant.
    #[error("it names no canary variant (\"metadata\": {{\"canaryVariant\": \"VARIANT\"}})")]
    NoCanaryVariant,
    /// `canaryVariant` is not one of its variants.
    #[error("its canaryVariant {0:?} is not one of its variants")]
    UnknownVariant(String),
    /// It has no default variant to serve the other users.
    #[error("it has no defaultVariant for the users outside the canary")]
    NoDefaultVariant,
    /// The canary variant is the default one: a split would change nothing.
    #[error("its canaryVariant {0:?} is its defaultVariant")]
    DefaultIsCanary(String),
    /// The flag is switched off: a split would not turn it on.
    #[error("it is DISABLED")]
    Disabled,
}

impl Flag {
    /// The variant a canary may release and the default variant the other users get.
    ///
    /// # Errors
    ///
    /// [`SplitError`] when the flag does not allow a split now.
    pub fn canary_split(&self) -> Result<(&str, &str), SplitError> {
        let variant = match self.raw.get("metadata").and_then(|m| m.get(CANARY_VARIANT)) {
            Some(Value::String(v)) => v.as_str(),
            Some(other) => return Err(SplitError::UnknownVariant(other.to_string())),
            None => return Err(SplitError::NoCanaryVariant),
        };
        if !self.variants.contains_key(variant) {
            return Err(SplitError::UnknownVariant(variant.to_owned()));
        }
        let default = self
            .default_variant
            .as_deref()
            .ok_or(SplitError::NoDefaultVariant)?;
        if default == variant {
            return Err(SplitError::DefaultIsCanary(variant.to_owned()));
        }
        if self.state == State::Disabled {
            return Err(SplitError::Disabled);
        }
        Ok((variant, default))
    }

    /// This flag serving its canary variant to `percent` percent of targeting keys (at most
    /// 100) and its default variant to the others and to a context without a targeting key.
    ///
    /// # Errors
    ///
    /// [`SplitError`] as [`Flag::canary_split`].
    pub fn split(&self, percent: u32) -> Result<Flag, SplitError> {
        let (variant, default) = self.canary_split()?;
        let percent = percent.min(100);
        let rule = json!({"fractional": [[variant, percent], [default, 100 - percent]]});
        let mut raw = self.raw.clone();
        if let Value::Object(m) = &mut raw {
            m.insert("targeting".to_owned(), rule.clone());
        }
        let targeting = match logic::compile(&rule) {
            Ok(rule) => Targeting::Rule(rule),
            Err(e) => Targeting::Invalid(e),
        };
        Ok(Flag {
            targeting,
            raw,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::SplitError;
    use crate::{FlagSet, Reason};

    fn set(flag: serde_json::Value) -> FlagSet {
        FlagSet::from_value(&json!({"flags": {"new-checkout": flag}})).unwrap()
    }

    fn released() -> serde_json::Value {
        json!({
            "state": "ENABLED",
            "variants": {"on": true, "off": false},
            "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "email"}, "a@corp.io"]}, "on"]},
            "metadata": {"canaryVariant": "on"}
        })
    }

    fn share_on(s: &FlagSet, users: u32) -> (u32, Vec<bool>) {
        let mut on = Vec::new();
        for u in 0..users {
            let ctx = json!({"targetingKey": format!("user-{u}")});
            let r = s.evaluate("new-checkout", &ctx, 0);
            assert_eq!(r.reason, Reason::TargetingMatch, "{r:?}");
            on.push(r.value == Some(&json!(true)));
        }
        (
            u32::try_from(on.iter().filter(|b| **b).count()).unwrap(),
            on,
        )
    }

    fn with_split(percent: u32) -> FlagSet {
        let mut s = set(released());
        let flag = s.flags["new-checkout"].split(percent).unwrap();
        s.flags.insert("new-checkout".into(), flag);
        s
    }

    #[test]
    fn a_split_serves_the_canary_variant_to_its_share_and_a_user_keeps_it_as_it_grows() {
        let (none, _) = share_on(&with_split(0), 2000);
        assert_eq!(none, 0);
        let (ten, at_ten) = share_on(&with_split(10), 2000);
        let (half, at_half) = share_on(&with_split(50), 2000);
        let (all, _) = share_on(&with_split(100), 2000);
        assert!((150..=250).contains(&ten), "{ten} of 2000 at 10%");
        assert!((900..=1100).contains(&half), "{half} of 2000 at 50%");
        assert_eq!(all, 2000);
        assert!(at_ten.iter().zip(&at_half).all(|(ten, half)| !ten || *half));
        // The split replaces the flag's own targeting, and a context without a targeting key
        // gets the default variant.
        let zero = with_split(0);
        let r = zero.evaluate("new-checkout", &json!({"email": "a@corp.io"}), 0);
        assert_eq!(r.value, Some(&json!(false)), "{r:?}");
        let split = &with_split(30).flags["new-checkout"];
        assert_eq!(
            split.raw["targeting"],
            json!({"fractional": [["on", 30], ["off", 70]]})
        );
        assert_eq!(split.raw["metadata"], json!({"canaryVariant": "on"}));
    }

    #[test]
    fn a_flag_allows_a_split_only_when_enabled_with_a_canary_variant_besides_its_default() {
        let refused = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut f = released();
            edit(&mut f);
            set(f).flags["new-checkout"].split(50).unwrap_err()
        };
        assert_eq!(
            refused(&|f| f["metadata"] = json!({})),
            SplitError::NoCanaryVariant
        );
        assert_eq!(
            refused(&|f| f["metadata"]["canaryVariant"] = json!("blue")),
            SplitError::UnknownVariant("blue".into())
        );
        assert_eq!(
            refused(&|f| f["metadata"]["canaryVariant"] = json!(true)),
            SplitError::UnknownVariant("true".into())
        );
        assert_eq!(
            refused(&|f| f["defaultVariant"] = json!(null)),
            SplitError::NoDefaultVariant
        );
        assert_eq!(
            refused(&|f| f["defaultVariant"] = json!("on")),
            SplitError::DefaultIsCanary("on".into())
        );
        assert_eq!(
            refused(&|f| f["state"] = json!("DISABLED")),
            SplitError::Disabled
        );
        // The set's metadata does not count: the flag itself must name it.
        let s = FlagSet::from_value(&json!({
            "flags": {"f": {"state": "ENABLED", "variants": {"on": 1, "off": 0},
                            "defaultVariant": "off"}},
            "metadata": {"canaryVariant": "on"}
        }))
        .unwrap();
        assert_eq!(
            s.flags["f"].canary_split().unwrap_err(),
            SplitError::NoCanaryVariant
        );
        assert_eq!(
            set(released()).flags["new-checkout"].canary_split(),
            Ok(("on", "off"))
        );
    }
}
