//! flagd's flag-definition JSON: `{"flags": {key: {state, variants, defaultVariant,
//! targeting, metadata}}, "$evaluators": {...}, "metadata": {...}}`, parsed into a
//! [`FlagSet`] whose targeting rules are compiled once.
//!
//! As flagd does, a set whose flag has an unknown `state` or a `defaultVariant` missing
//! from its `variants` does not parse at all, while a flag whose targeting does not compile
//! parses and resolves to `PARSE_ERROR`. [`FlagSet::problems`] lists those flags, for the
//! agent, which admits only sets without any.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::logic::{self, CompileError, Rule};

/// Why a flag definition does not parse.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// Not JSON.
    #[error("flag definition is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an object, or `flags` is not an object.
    #[error("flag definition must be an object with a \"flags\" object")]
    NotAnObject,
    /// A flag is not an object, or its `variants` is not an object.
    #[error("flag {key:?}: {problem}")]
    BadFlag {
        /// The flag's key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `state` is neither `ENABLED` nor `DISABLED`.
    #[error("flag {key:?}: state must be ENABLED or DISABLED, found {found}")]
    BadState {
        /// The flag's key.
        key: String,
        /// The state as written.
        found: String,
    },
    /// `defaultVariant` names no variant.
    #[error("flag {key:?}: defaultVariant {variant:?} is not one of its variants")]
    DefaultVariantMissing {
        /// The flag's key.
        key: String,
        /// The variant named.
        variant: String,
    },
}

/// Whether a flag is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Evaluated.
    Enabled,
    /// Resolves to `DISABLED`: the caller's default value.
    Disabled,
}

/// A flag's targeting: none (always the default variant), a compiled rule, or one that did
/// not compile.
#[derive(Debug, Clone)]
pub enum Targeting {
    /// No targeting, or an empty one: the flag is static.
    None,
    /// A compiled rule.
    Rule(Rule),
    /// The rule did not compile; the flag resolves to `PARSE_ERROR`.
    Invalid(CompileError),
}

/// One flag.
#[derive(Debug, Clone)]
pub struct Flag {
    /// Served or not.
    pub state: State,
    /// Variant names and their values.
    pub variants: Map<String, Value>,
    /// The variant served without targeting, or when targeting gives nothing.
    pub default_variant: Option<String>,
    /// The targeting rule.
    pub targeting: Targeting,
    /// The flag set's metadata overlaid with the flag's own.
    pub metadata: Map<String, Value>,
    /// The flag's JSON as written (with `$ref`s), for comparing two versions of a set.
    pub raw: Value,
}

impl Flag {
    /// Whether the flag is marked secret (`"metadata": {"secret": true}`): its values are
    /// never written to the audit log or shown by `gantry flags show`.
    pub fn is_secret(&self) -> bool {
        self.metadata.get("secret") == Some(&Value::Bool(true))
    }
}

/// A parsed flag set.
#[derive(Debug, Clone)]
pub struct FlagSet {
    /// The flags by key.
    pub flags: BTreeMap<String, Flag>,
    /// The set's metadata.
    pub metadata: Map<String, Value>,
    /// `$evaluators` as written.
    pub evaluators: Map<String, Value>,
}

/// How deep `$ref`s may nest (an evaluator using another).
const MAX_REF_DEPTH: usize = 16;

impl FlagSet {
    /// Parses flagd flag-definition JSON.
    ///
    /// # Errors
    ///
    /// [`DefinitionError`] for what flagd refuses to load.
    pub fn parse(json: &[u8]) -> Result<FlagSet, DefinitionError> {
        let doc: Value = serde_json::from_slice(json)?;
        FlagSet::from_value(&doc)
    }

    /// [`FlagSet::parse`] from a JSON value.
    ///
    /// # Errors
    ///
    /// As [`FlagSet::parse`].
    pub fn from_value(doc: &Value) -> Result<FlagSet, DefinitionError> {
        let Value::Object(doc) = doc else {
            return Err(DefinitionError::NotAnObject);
        };
        let object = |name: &str| match doc.get(name) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(DefinitionError::NotAnObject),
        };
        let evaluators = object("$evaluators")?;
        let metadata = object("metadata")?;
        let mut flags = BTreeMap::new();
        for (key, raw) in &object("flags")? {
            let flag = parse_flag(key, raw, &evaluators, &metadata)?;
            flags.insert(key.clone(), flag);
        }
        Ok(FlagSet {
            flags,
            metadata,
            evaluators,
        })
    }

    /// The flags whose targeting does not compile, with why.
    pub fn problems(&self) -> Vec<(&str, &CompileError)> {
        self.flags
            .iter()
            .filter_map(|(k, f)| match &f.targeting {
                Targeting::Invalid(e) => Some((k.as_str(), e)),
                Targeting::None | Targeting::Rule(_) => None,
            })
            .collect()
    }
}

fn parse_flag(
    key: &str,
    raw: &Value,
    evaluators: &Map<String, Value>,
    set_metadata: &Map<String, Value>,
) -> Result<Flag, DefinitionError> {
    let bad = |problem| DefinitionError::BadFlag {
        key: key.to_owned(),
        problem,
    };
    let Value::Object(f) = raw else {
        return Err(bad("must be an object"));
    };
    let Some(Value::Object(variants)) = f.get("variants") else {
        return Err(bad("variants must be an object"));
    };
    let state = match f.get("state") {
        Some(Value::String(s)) if s == "ENABLED" => State::Enabled,
        Some(Value::String(s)) if s == "DISABLED" => State::Disabled,
        other => {
            return Err(DefinitionError::BadState {
                key: key.to_owned(),
                found: other.map_or_else(|| "nothing".to_owned(), Value::to_string),
            });
        }
    };
    // flagd reads `defaultVariant || undefined`: an empty or false one is none.
    let default_variant = match f.get("defaultVariant") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(Value::Null | Value::Bool(false)) => None,
        Some(Value::String(_)) => None,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => None,
        Some(other) => {
            return Err(DefinitionError::DefaultVariantMissing {
                key: key.to_owned(),
                variant: other.to_string(),
            });
        }
    };
    if let Some(d) = &default_variant
        && !variants.contains_key(d)
    {
        return Err(DefinitionError::DefaultVariantMissing {
            key: key.to_owned(),
            variant: d.clone(),
        });
    }
    let targeting = match f.get("targeting") {
        None | Some(Value::Null | Value::Bool(_) | Value::Number(_)) => Targeting::None,
        Some(Value::Object(m)) if m.is_empty() => Targeting::None,
        Some(Value::Array(a)) if a.is_empty() => Targeting::None,
        Some(Value::String(s)) if s.is_empty() => Targeting::None,
        Some(rule) => match resolve_refs(rule, evaluators, 0).and_then(|r| logic::compile(&r)) {
            Ok(rule) => Targeting::Rule(rule),
            Err(e) => Targeting::Invalid(e),
        },
    };
    let mut metadata = set_metadata.clone();
    if let Some(Value::Object(m)) = f.get("metadata") {
        metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Ok(Flag {
        state,
        variants: variants.clone(),
        default_variant,
        targeting,
        metadata,
        raw: raw.clone(),
    })
}

/// Replaces every `{"$ref": name}` with `$evaluators[name]`, recursively. A name that is
/// not there is left as it is (and fails to compile as an unknown operator, as in flagd).
fn resolve_refs(
    v: &Value,
    evaluators: &Map<String, Value>,
    depth: usize,
) -> Result<Value, CompileError> {
    match v {
        Value::Object(m) => {
            if let (1, Some(Value::String(name))) = (m.len(), m.get("$ref"))
                && let Some(target) = evaluators.get(name)
            {
                if depth >= MAX_REF_DEPTH {
                    return Err(CompileError::BadRef(name.clone()));
                }
                return resolve_refs(target, evaluators, depth + 1);
            }
            let mut out = Map::new();
            for (k, e) in m {
                out.insert(k.clone(), resolve_refs(e, evaluators, depth)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => Ok(Value::Array(
            a.iter()
                .map(|e| resolve_refs(e, evaluators, depth))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(other.clone()),
    }
}
