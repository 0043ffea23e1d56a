//! JsonLogic, compiled once per flag and evaluated per request.
//!
//! Why not a JsonLogic crate: the answers must match flagd's reference evaluator (the
//! `json-logic-engine` JavaScript package in its compiled mode) value for value, including its
//! coercion rules (`"5" == 5`, a comparison with an object fails the evaluation, `var` falls
//! back to its default on `null`), and the four flagd operators need the evaluation's flag key
//! and context. The Rust JsonLogic crates follow json-logic-js or their own typed semantics,
//! and the language is small: compiling to a tree up front also keeps an evaluation free of
//! JSON parsing and operator look-ups.
//!
//! [`compile`] turns a rule into a [`Rule`] ([`CompileError`] for an unknown operator or a
//! malformed one); [`Rule::evaluate`] runs it against a context ([`EvalError`] where the
//! reference evaluator throws). `js` holds JavaScript's value semantics, `eval` the operators,
//! `flagd` the four flagd operators.

mod eval;
mod flagd;
pub(crate) mod js;

use std::borrow::Cow;

use serde_json::Value;

pub use eval::EvalError;

/// The properties flagd adds to every context under `$flagd`.
#[derive(Debug, Clone)]
pub struct FlagdProps {
    /// `$flagd.flagKey`: the key of the flag being evaluated.
    pub flag_key: Value,
    /// `$flagd.timestamp`: the evaluation time in Unix seconds.
    pub timestamp: Value,
}

impl FlagdProps {
    /// The properties for evaluating `flag_key` at `now` (Unix seconds).
    pub fn new(flag_key: &str, now: i64) -> Self {
        FlagdProps {
            flag_key: Value::String(flag_key.to_owned()),
            timestamp: Value::from(now),
        }
    }
}

/// A compiled targeting rule.
#[derive(Debug, Clone)]
pub struct Rule(Node);

impl Rule {
    /// Evaluates the rule against `context` (a JSON object: the evaluation context, with
    /// `targetingKey`), with flagd's `$flagd` properties.
    ///
    /// # Errors
    ///
    /// [`EvalError`] where flagd's evaluator throws: arithmetic or comparison on values it
    /// refuses to coerce, operators given arguments they cannot use.
    pub fn evaluate<'a>(
        &'a self,
        context: &'a Value,
        flagd: &'a FlagdProps,
    ) -> Result<Cow<'a, Value>, EvalError> {
        eval::eval(&self.0, &eval::Env::new(context, Some(flagd)))
    }
}

/// Why a rule does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// An operator neither JsonLogic nor flagd defines (or one Gantry does not implement).
    #[error("unknown operator {0:?}")]
    UnknownOperator(String),
    /// An object with more than one key where an operation is expected.
    #[error("an operation must be an object with one key, found keys {0:?}")]
    MultipleKeys(Vec<String>),
    /// An operator whose arguments have the wrong shape.
    #[error("operator {op:?}: {problem}")]
    BadArguments {
        /// The operator.
        op: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `$ref` names no entry of `$evaluators`, or the references form a cycle.
    #[error("$ref {0:?}: no such evaluator in $evaluators, or a cycle of references")]
    BadRef(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Lit(Value),
    Arr(Vec<Node>),
    Var {
        path: Path,
        default: Option<Box<Node>>,
    },
    VarDyn {
        key: Box<Node>,
        default: Option<Box<Node>>,
    },
    Op(Op, Args),
}

#[derive(Debug, Clone)]
pub(crate) enum Path {
    Whole,
    Keys(Vec<String>),
}

/// An operator's arguments: a list, or one expression whose value (spread when it is an
/// array) gives them.
#[derive(Debug, Clone)]
pub(crate) enum Args {
    List(Vec<Node>),
    One(Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    If,
    Or,
    And,
    Not,
    NotNot,
    Cmp(js::Cmp),
    StrictEq,
    StrictNe,
    In,
    Cat,
    Substr,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Max,
    Min,
    Merge,
    Missing,
    MissingSome,
    Some,
    All,
    None,
    Map,
    Filter,
    Fractional,
    SemVer,
    StartsWith,
    EndsWith,
}

impl Op {
    fn named(name: &str) -> Option<Op> {
        use js::Cmp;
        Some(match name {
            "if" | "?:" => Op::If,
            "or" => Op::Or,
            "and" => Op::And,
            "!" => Op::Not,
            "!!" => Op::NotNot,
            "==" => Op::Cmp(Cmp::Eq),
            "!=" => Op::Cmp(Cmp::Ne),
            "<" => Op::Cmp(Cmp::Lt),
            "<=" => Op::Cmp(Cmp::Le),
            ">" => Op::Cmp(Cmp::Gt),
            ">=" => Op::Cmp(Cmp::Ge),
            "===" => Op::StrictEq,
            "!==" => Op::StrictNe,
            "in" => Op::In,
            "cat" => Op::Cat,
            "substr" => Op::Substr,
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "max" => Op::Max,
            "min" => Op::Min,
            "merge" => Op::Merge,
            "missing" => Op::Missing,
            "missing_some" => Op::MissingSome,
            "some" => Op::Some,
            "all" => Op::All,
            "none" => Op::None,
            "map" => Op::Map,
            "filter" => Op::Filter,
            "fractional" => Op::Fractional,
            "sem_ver" => Op::SemVer,
            "starts_with" => Op::StartsWith,
            "ends_with" => Op::EndsWith,
            _ => return None,
        })
    }

    /// Operators that take their arguments unevaluated and need them as a list.
    fn lazy(self) -> bool {
        matches!(
            self,
            Op::If
                | Op::Or
                | Op::And
                | Op::Cmp(_)
                | Op::StrictEq
                | Op::StrictNe
                | Op::Some
                | Op::All
                | Op::None
                | Op::Map
                | Op::Filter
        )
    }
}

/// Compiles a JsonLogic rule (with `$ref`s already resolved).
///
/// # Errors
///
/// [`CompileError`] for an unknown operator, an object with several keys in place of an
/// operation, or an operator whose arguments have the wrong shape.
pub fn compile(rule: &Value) -> Result<Rule, CompileError> {
    node(rule).map(Rule)
}

fn node(v: &Value) -> Result<Node, CompileError> {
    match v {
        Value::Array(items) => {
            let nodes = items.iter().map(node).collect::<Result<Vec<_>, _>>()?;
            if nodes.iter().all(|n| matches!(n, Node::Lit(_))) {
                return Ok(Node::Lit(v.clone()));
            }
            Ok(Node::Arr(nodes))
        }
        Value::Object(map) => {
            let mut keys = map.keys();
            let (Some(name), None) = (keys.next(), keys.next()) else {
                if map.is_empty() {
                    return Ok(Node::Lit(v.clone()));
                }
                return Err(CompileError::MultipleKeys(map.keys().cloned().collect()));
            };
            let arg = &map[name];
            if name == "var" {
                return var(arg);
            }
            let op = Op::named(name).ok_or_else(|| CompileError::UnknownOperator(name.clone()))?;
            let args = match arg {
                Value::Array(items) => {
                    Args::List(items.iter().map(node).collect::<Result<_, _>>()?)
                }
                Value::Object(_) if !op.lazy() => Args::One(Box::new(node(arg)?)),
                _ if op.lazy() => {
                    return Err(CompileError::BadArguments {
                        op: name.clone(),
                        problem: "expects an array of arguments",
                    });
                }
                _ => Args::List(vec![Node::Lit(arg.clone())]),
            };
            Ok(Node::Op(op, args))
        }
        _ => Ok(Node::Lit(v.clone())),
    }
}

fn var(arg: &Value) -> Result<Node, CompileError> {
    let (key, default) = match arg {
        Value::Array(items) if items.len() <= 2 => (
            items.first().cloned().unwrap_or(Value::Null),
            items.get(1).map(node).transpose()?.map(Box::new),
        ),
        Value::Array(_) => {
            return Err(CompileError::BadArguments {
                op: "var".into(),
                problem: "takes a key and an optional default",
            });
        }
        other => (other.clone(), None),
    };
    let path = match &key {
        Value::Null => Path::Whole,
        Value::String(s) if s.is_empty() => Path::Whole,
        Value::String(s) => Path::Keys(split_path(s)),
        Value::Number(_) | Value::Bool(_) => Path::Keys(split_path(&js::to_js_string(&key))),
        Value::Array(_) | Value::Object(_) => {
            return Ok(Node::VarDyn {
                key: Box::new(node(&key)?),
                default,
            });
        }
    };
    Ok(Node::Var { path, default })
}

/// Splits a `var` path on dots; `\.` is a literal dot, `\\` a backslash.
pub(crate) fn split_path(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('.' | '/')) => {
                    current.push(n);
                    chars.next();
                }
                Some('\\') => {
                    current.push('\\');
                    chars.next();
                }
                _ => current.push('\\'),
            },
            '.' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    // As the reference does: "." is one empty key, not two.
    if parts.len() != s.chars().count() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests;
