//! Resolving a flag for a context: value, variant and OpenFeature reason, in the order
//! flagd's evaluator decides them.
//!
//! 1. No such flag: `ERROR` / `FLAG_NOT_FOUND`. Disabled: `DISABLED` (the caller's default).
//! 2. Targeting that did not compile: `ERROR` / `PARSE_ERROR`.
//! 3. No targeting: the default variant, `STATIC`. Targeting that fails while evaluating:
//!    `ERROR` / `GENERAL`. Targeting that gives `null`: the default variant, `DEFAULT`; any
//!    other value names the variant (as JavaScript's `String(value)`), `TARGETING_MATCH`.
//! 4. No variant and no default variant: `DEFAULT` without a value (the caller's default).
//!    A variant the flag does not have: `ERROR` / `GENERAL`.
//!
//! flagd reports a `fractional` match as `TARGETING_MATCH`, not `SPLIT`; so does Gantry, so
//! that an app sees the same reasons from either.

use std::fmt;

use serde_json::{Map, Value};

use crate::definition::{Flag, FlagSet, State, Targeting};
use crate::logic::FlagdProps;
use crate::logic::js;

/// OpenFeature's resolution reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The flag has no targeting.
    Static,
    /// Targeting chose the variant.
    TargetingMatch,
    /// A pseudorandom split chose the variant (flagd reports `TARGETING_MATCH` instead).
    Split,
    /// The default variant, targeting having chosen none.
    Default,
    /// The flag is disabled.
    Disabled,
    /// The evaluation failed; see the [`ErrorCode`].
    Error,
}

impl Reason {
    /// The name on the wire, e.g. `TARGETING_MATCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// OpenFeature's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No flag has the key.
    FlagNotFound,
    /// The flag's targeting does not compile.
    ParseError,
    /// The value is not of the type asked for.
    TypeMismatch,
    /// Targeting needs a targeting key the context lacks (flagd's `fractional` answers
    /// `null` instead, so this evaluator does not report it; OFREP callers may).
    TargetingKeyMissing,
    /// The context is not usable (not a JSON object).
    InvalidContext,
    /// Anything else: targeting failed, or named a variant the flag lacks.
    General,
}

impl ErrorCode {
    /// The name on the wire, e.g. `FLAG_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value types OpenFeature's typed evaluations ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `getBooleanValue`
    Boolean,
    /// `getStringValue`
    String,
    /// `getNumberValue`
    Number,
    /// `getObjectValue` (JSON objects, arrays and `null`, as JavaScript's `typeof`)
    Object,
}

impl ValueType {
    /// Whether `v` is of this type.
    pub fn matches(self, v: &Value) -> bool {
        match self {
            ValueType::Boolean => v.is_boolean(),
            ValueType::String => v.is_string(),
            ValueType::Number => v.is_number(),
            ValueType::Object => matches!(v, Value::Object(_) | Value::Array(_) | Value::Null),
        }
    }
}

/// The outcome of one flag evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<'s> {
    /// The value, unless the caller's default applies (disabled, errors, no default).
    pub value: Option<&'s Value>,
    /// The variant's name, with the value.
    pub variant: Option<String>,
    /// Why.
    pub reason: Reason,
    /// With [`Reason::Error`]: the code and a message.
    pub error: Option<(ErrorCode, String)>,
    /// The flag's metadata (the set's, for an unknown flag).
    pub metadata: &'s Map<String, Value>,
}

impl<'s> Resolution<'s> {
    fn error(code: ErrorCode, message: String, metadata: &'s Map<String, Value>) -> Self {
        Resolution {
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some((code, message)),
            metadata,
        }
    }
}

impl FlagSet {
    /// Resolves flag `key` for `context` (a JSON object) at `now` (Unix seconds, flagd's
    /// `$flagd.timestamp`).
    pub fn evaluate<'s>(&'s self, key: &str, context: &Value, now: i64) -> Resolution<'s> {
        match self.flags.get(key) {
            None => Resolution::error(
                ErrorCode::FlagNotFound,
                format!("flag '{key}' not found"),
                &self.metadata,
            ),
            Some(flag) => flag.evaluate(key, context, now),
        }
    }

    /// [`FlagSet::evaluate`] for a typed evaluation: a value of another type is
    /// `TYPE_MISMATCH`.
    pub fn evaluate_typed<'s>(
        &'s self,
        key: &str,
        context: &Value,
        now: i64,
        expected: ValueType,
    ) -> Resolution<'s> {
        let r = self.evaluate(key, context, now);
        match r.value {
            Some(v) if !expected.matches(v) => Resolution::error(
                ErrorCode::TypeMismatch,
                format!("flag '{key}' does not hold a {expected:?} value"),
                r.metadata,
            ),
            _ => r,
        }
    }

    /// Every enabled flag that resolves to a value, as flagd's bulk evaluation returns them
    /// (disabled flags and those without a value are left out).
    pub fn evaluate_all<'s>(&'s self, context: &Value, now: i64) -> Vec<(&'s str, Resolution<'s>)> {
        self.flags
            .iter()
            .filter(|(_, f)| f.state == State::Enabled)
            .map(|(k, f)| (k.as_str(), f.evaluate(k, context, now)))
            .filter(|(_, r)| r.value.is_some())
            .collect()
    }
}

impl Flag {
    /// Resolves this flag (whose key is `key`) for `context` at `now`.
    pub fn evaluate<'s>(&'s self, key: &str, context: &Value, now: i64) -> Resolution<'s> {
        if self.state == State::Disabled {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
                metadata: &self.metadata,
            };
        }
        let (variant, reason) = match &self.targeting {
            Targeting::Invalid(e) => {
                return Resolution::error(
                    ErrorCode::ParseError,
                    format!("invalid targeting configuration for flag '{key}': {e}"),
                    &self.metadata,
                );
            }
            Targeting::None => (self.default_variant.clone(), Reason::Static),
            Targeting::Rule(rule) => {
                let props = FlagdProps::new(key, now);
                match rule.evaluate(context, &props) {
                    Err(e) => {
                        return Resolution::error(
                            ErrorCode::General,
                            format!("error evaluating targeting rule for flag '{key}': {e}"),
                            &self.metadata,
                        );
                    }
                    Ok(v) if v.is_null() => (self.default_variant.clone(), Reason::Default),
                    Ok(v) => (Some(js::to_js_string(&v)), Reason::TargetingMatch),
                }
            }
        };
        let Some(variant) = variant else {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Default,
                error: None,
                metadata: &self.metadata,
            };
        };
        match self.variants.get(&variant) {
            Some(value) => Resolution {
                value: Some(value),
                variant: Some(variant),
                reason,
                error: None,
                metadata: &self.metadata,
            },
            None => Resolution::error(
                ErrorCode::General,
                format!("variant '{variant}' not found in flag with key '{key}'"),
                &self.metadata,
            ),
        }
    }
}
