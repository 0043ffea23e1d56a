//! The JsonLogic operators, evaluated over a compiled tree with the reference evaluator's
//! semantics (see the `js` module for the value rules).

use std::borrow::Cow;
use std::cell::RefCell;

use serde_json::Value;

use super::js::{self, Cmp};
use super::{Args, FlagdProps, Node, Op, Path, flagd};

/// Where an evaluation fails, as flagd's evaluator throws (the flag then resolves to an
/// error with code `GENERAL`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Arithmetic or a comparison on a value that is not a number and cannot become one.
    #[error("not a number: {0}")]
    NotANumber(&'static str),
    /// An operator was given arguments it cannot use.
    #[error("invalid arguments to {0}")]
    InvalidArguments(&'static str),
    /// A value of the wrong type, as JavaScript's `TypeError` (e.g. `in` on a number).
    #[error("type error: {0}")]
    TypeError(&'static str),
}

type Res<'a> = Result<Cow<'a, Value>, EvalError>;

/// What a rule sees: the current data (the context, or an element inside `some`/`map`…) and,
/// at the top level, flagd's properties.
///
/// `prev` mirrors a quirk of the reference's compiled form, which the answers depend on: its
/// generated code keeps one `prev` variable that every `var`, `and`/`or` operand and
/// comparison assigns, and a comparison checks its right operand against whatever `prev`
/// holds once that operand is evaluated. With a `var` on the right, that is the operand
/// itself, not the left side (`{"<": [18, {"var": "age"}]}` with `age: "old"` is `false`,
/// while `{"<": [{"var": "age"}, 18]}` fails the evaluation).
pub(crate) struct Env<'a> {
    pub(crate) data: &'a Value,
    pub(crate) flagd: Option<&'a FlagdProps>,
    pub(crate) prev: RefCell<Option<Cow<'a, Value>>>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(data: &'a Value, flagd: Option<&'a FlagdProps>) -> Self {
        Env {
            data,
            flagd,
            prev: RefCell::new(None),
        }
    }

    /// Records what the reference's `prev` would hold; a borrowed value costs a pointer copy.
    fn set_prev(&self, v: Cow<'a, Value>) {
        *self.prev.borrow_mut() = Some(v);
    }

    fn prev(&self) -> Cow<'a, Value> {
        self.prev
            .borrow()
            .clone()
            .unwrap_or(Cow::Owned(Value::Null))
    }
}

pub(crate) fn eval<'a>(node: &'a Node, env: &Env<'a>) -> Res<'a> {
    match node {
        Node::Lit(v) => Ok(Cow::Borrowed(v)),
        Node::Arr(items) => Ok(Cow::Owned(Value::Array(
            items
                .iter()
                .map(|n| eval(n, env).map(Cow::into_owned))
                .collect::<Result<_, _>>()?,
        ))),
        Node::Var { path, default } => {
            let v = match lookup(path_keys(path), env) {
                Some(v) if !v.is_null() => v,
                _ => or_default(default.as_deref(), env)?,
            };
            if matches!(path, Path::Keys(_)) {
                env.set_prev(v.clone());
            }
            Ok(v)
        }
        Node::VarDyn { key, default } => {
            let key = eval(key, env)?;
            let path = match key.as_ref() {
                Value::Null => Path::Whole,
                Value::String(s) if s.is_empty() => Path::Whole,
                other => Path::Keys(super::split_path(&js::to_js_string(other))),
            };
            match lookup(path_keys(&path), env) {
                Some(v) if !v.is_null() => Ok(Cow::Owned(v.into_owned())),
                _ => or_default(default.as_deref(), env),
            }
        }
        Node::Op(op, args) => {
            if op.lazy() {
                let Args::List(list) = args else {
                    return Err(EvalError::InvalidArguments("a lazy operator"));
                };
                lazy(*op, list, env)
            } else {
                let values = eager_args(args, env)?;
                eager(*op, values, env)
            }
        }
    }
}

fn or_default<'a>(default: Option<&'a Node>, env: &Env<'a>) -> Res<'a> {
    match default {
        Some(d) => eval(d, env),
        None => Ok(Cow::Owned(Value::Null)),
    }
}

fn path_keys(path: &Path) -> Option<&[String]> {
    match path {
        Path::Whole => None,
        Path::Keys(k) => Some(k),
    }
}

/// Looks a path up in the data; `$flagd` at the top level is flagd's, whatever the context
/// holds under that name. `None` is JavaScript's `undefined`.
fn lookup<'a>(keys: Option<&[String]>, env: &Env<'a>) -> Option<Cow<'a, Value>> {
    let Some(keys) = keys else {
        return Some(Cow::Borrowed(env.data));
    };
    let (mut cur, rest): (Cow<'a, Value>, &[String]) = match (keys.first(), env.flagd) {
        (Some(first), Some(f)) if first == "$flagd" => match keys.get(1).map(String::as_str) {
            Some("flagKey") => (Cow::Borrowed(&f.flag_key), &keys[2..]),
            Some("timestamp") => (Cow::Borrowed(&f.timestamp), &keys[2..]),
            Some(_) => return None,
            None => {
                let mut m = serde_json::Map::new();
                m.insert("flagKey".into(), f.flag_key.clone());
                m.insert("timestamp".into(), f.timestamp.clone());
                (Cow::Owned(Value::Object(m)), &keys[1..])
            }
        },
        _ => (Cow::Borrowed(env.data), keys),
    };
    for k in rest {
        cur = match cur {
            Cow::Borrowed(v) => Cow::Borrowed(step(v, k)?),
            Cow::Owned(v) => Cow::Owned(step(&v, k)?.clone()),
        };
    }
    Some(cur)
}

/// One step of a path: an object's member, an array's element, or a string's `length`.
fn step<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => canonical_index(key).and_then(|i| a.get(i)),
        _ => None,
    }
}

fn canonical_index(key: &str) -> Option<usize> {
    let i: usize = key.parse().ok()?;
    (i.to_string() == key).then_some(i)
}

fn eager_args<'a>(args: &'a Args, env: &Env<'a>) -> Result<Vec<Cow<'a, Value>>, EvalError> {
    match args {
        Args::List(list) => list.iter().map(|n| eval(n, env)).collect(),
        Args::One(n) => Ok(match eval(n, env)? {
            Cow::Borrowed(Value::Array(a)) => a.iter().map(Cow::Borrowed).collect(),
            Cow::Owned(Value::Array(a)) => a.into_iter().map(Cow::Owned).collect(),
            other => vec![other],
        }),
    }
}

fn boolean<'a>(b: bool) -> Res<'a> {
    Ok(Cow::Owned(Value::Bool(b)))
}

fn null<'a>() -> Res<'a> {
    Ok(Cow::Owned(Value::Null))
}

fn lazy<'a>(op: Op, args: &'a [Node], env: &Env<'a>) -> Res<'a> {
    match op {
        Op::If => {
            match args.len() {
                0 => return null(),
                1 => return eval(&args[0], env),
                _ => {}
            }
            let mut pairs = args.chunks_exact(2);
            for pair in pairs.by_ref() {
                if js::truthy(eval(&pair[0], env)?.as_ref()) {
                    return eval(&pair[1], env);
                }
            }
            match pairs.remainder().first() {
                Some(otherwise) => eval(otherwise, env),
                None => null(),
            }
        }
        Op::Or | Op::And => {
            let want = op == Op::Or;
            let mut last = None;
            for a in args {
                let v = eval(a, env)?;
                env.set_prev(v.clone());
                if js::truthy(&v) == want {
                    return Ok(v);
                }
                last = Some(v);
            }
            Ok(last.unwrap_or(Cow::Owned(Value::Null)))
        }
        Op::Cmp(cmp) => comparison(Some(cmp), args, env),
        Op::StrictEq => comparison(None, args, env),
        Op::StrictNe => Ok(Cow::Owned(Value::Bool(!js::truthy(
            comparison(None, args, env)?.as_ref(),
        )))),
        Op::Some | Op::All | Op::None | Op::Map | Op::Filter => iterate(op, args, env),
        _ => Err(EvalError::InvalidArguments("an eager operator")),
    }
}

/// `==`, `<`, … (`cmp`) or `===` (`None`) in the compiled form of the reference: two
/// strings (or nulls) compare as strings; otherwise both must be numbers or coercible to one,
/// `null` next to a falsy value counts as equal to it. With three or more arguments the
/// comparison chains (`{"<": [1, x, 10]}`), stopping at the first false. See [`Env`] for
/// which value the right operand is checked against.
fn comparison<'a>(cmp: Option<Cmp>, args: &'a [Node], env: &Env<'a>) -> Res<'a> {
    if args.len() < 2 {
        return Err(EvalError::InvalidArguments("a comparison"));
    }
    let chained = args.len() > 2;
    let mut left = eval(&args[0], env)?;
    env.set_prev(left.clone());
    for a in &args[1..] {
        let item = eval(a, env)?;
        let checked = match cmp {
            Some(_) => Cow::Owned(compare_check(&item, &env.prev())?),
            None => item,
        };
        let holds = match cmp {
            Some(c) => js::compare(c, &left, &checked),
            None => js::strict_eq(&left, &checked),
        };
        if chained {
            env.set_prev(checked.clone());
        }
        if !holds {
            return boolean(false);
        }
        left = checked;
    }
    boolean(true)
}

fn is_str_or_null(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Null)
}

/// The reference's `compareCheck(item, prev)`: refuses what it will not coerce and maps
/// `null` beside a falsy value.
fn compare_check(item: &Value, prev: &Value) -> Result<Value, EvalError> {
    if is_str_or_null(item) && is_str_or_null(prev) {
        return Ok(item.clone());
    }
    let item_nan = coerce(item)?.is_nan();
    if item_nan && !prev.is_null() {
        return Err(EvalError::NotANumber("comparison"));
    }
    if coerce(prev)?.is_nan() {
        return Err(EvalError::NotANumber("comparison"));
    }
    if prev.is_null() && !js::truthy(item) {
        return Ok(Value::Null);
    }
    if item.is_null() && !js::truthy(prev) {
        return Ok(Value::from(0));
    }
    Ok(item.clone())
}

/// `+precoerceNumber(v)`: a number, or NaN; arrays and objects (even empty) fail.
fn coerce(v: &Value) -> Result<f64, EvalError> {
    match v {
        Value::Array(_) | Value::Object(_) => Err(EvalError::NotANumber("array or object")),
        _ => Ok(js::to_number(v).unwrap_or(f64::NAN)),
    }
}

fn iterate<'a>(op: Op, args: &'a [Node], env: &Env<'a>) -> Res<'a> {
    let (Some(selector), mapper) = (args.first(), args.get(1)) else {
        return Err(EvalError::InvalidArguments("an iterator"));
    };
    let selected = eval(selector, env)?;
    if op == Op::All {
        env.set_prev(selected.clone());
    }
    let items: Vec<Value> = match selected.as_ref() {
        Value::Array(a) => a.clone(),
        v if is_js_falsy(v) => Vec::new(),
        _ => {
            return Err(EvalError::TypeError(
                "iterating over a value that is not an array",
            ));
        }
    };
    let run = |item: &Value| -> Result<Value, EvalError> {
        match mapper {
            Some(m) => eval(m, &Env::new(item, None)).map(Cow::into_owned),
            None => Ok(Value::Null),
        }
    };
    match op {
        Op::Some | Op::None => {
            let mut any = false;
            for item in &items {
                if js::truthy(&run(item)?) {
                    any = true;
                    break;
                }
            }
            boolean(any == (op == Op::Some))
        }
        Op::All => {
            if matches!(selected.as_ref(), Value::Array(a) if a.is_empty()) {
                return boolean(false);
            }
            for item in &items {
                if !js::truthy(&run(item)?) {
                    return boolean(false);
                }
            }
            boolean(true)
        }
        Op::Map => Ok(Cow::Owned(Value::Array(
            items.iter().map(run).collect::<Result<_, _>>()?,
        ))),
        _ => {
            let mut kept = Vec::new();
            for item in items {
                if js::truthy(&run(&item)?) {
                    kept.push(item);
                }
            }
            Ok(Cow::Owned(Value::Array(kept)))
        }
    }
}

/// A number for arithmetic: arrays and objects (even empty: JavaScript holds them true)
/// fail the evaluation.
fn arith(v: &Value) -> Result<f64, EvalError> {
    js::to_number(v).ok_or(EvalError::NotANumber("arithmetic on an array or object"))
}

/// JavaScript's falsy values among JSON's: `null`, `false`, `0`, `""` (an empty array or
/// object is true in JavaScript, unlike JsonLogic's truthiness).
fn is_js_falsy(v: &Value) -> bool {
    !js::truthy(v) && !matches!(v, Value::Array(_) | Value::Object(_))
}

fn number<'a>(f: f64) -> Res<'a> {
    if f.is_nan() {
        return Err(EvalError::NotANumber("arithmetic"));
    }
    Ok(Cow::Owned(js::number_value(f)))
}

fn eager<'a>(op: Op, args: Vec<Cow<'a, Value>>, env: &Env<'a>) -> Res<'a> {
    let first = || args.first().map_or(&Value::Null, |v| v.as_ref());
    match op {
        Op::Not => boolean(!js::truthy(first())),
        Op::NotNot => boolean(js::truthy(first())),
        Op::In => {
            let (item, within) = (first(), args.get(1).map_or(&Value::Null, |v| v.as_ref()));
            match within {
                w if is_js_falsy(w) => boolean(false),
                Value::String(s) => boolean(s.contains(js::to_js_string(item).as_str())),
                Value::Array(a) => boolean(a.iter().any(|e| js::strict_eq(e, item))),
                _ => Err(EvalError::TypeError(
                    "in: the second argument has no includes",
                )),
            }
        }
        Op::Cat => {
            // The compiled form joins with JavaScript's `+`: a null argument is "null".
            let mut out = String::new();
            for a in &args {
                js::push_js_string(&mut out, a);
            }
            Ok(Cow::Owned(Value::String(out)))
        }
        Op::Substr => substr(&args),
        Op::Add => {
            let mut sum = 0.0;
            for a in &args {
                sum += arith(a)?;
            }
            number(sum)
        }
        Op::Mul => {
            let mut product = 1.0;
            for a in &args {
                product *= arith(a)?;
            }
            number(product)
        }
        Op::Sub => match args.as_slice() {
            [] => Err(EvalError::InvalidArguments("-")),
            [only] => number(-arith(only)?),
            [head, rest @ ..] => {
                let mut acc = arith(head)?;
                for a in rest {
                    acc -= arith(a)?;
                }
                number(acc)
            }
        },
        Op::Div => match args.as_slice() {
            [] => Err(EvalError::InvalidArguments("/")),
            [head, rest @ ..] => {
                let mut acc = if rest.is_empty() { 1.0 } else { arith(head)? };
                let divisors: Vec<&Cow<'a, Value>> = if rest.is_empty() {
                    vec![head]
                } else {
                    rest.iter().collect()
                };
                for d in divisors {
                    let d = arith(d)?;
                    if d == 0.0 || d.is_nan() {
                        return Err(EvalError::NotANumber("division by zero"));
                    }
                    acc /= d;
                }
                if acc.is_infinite() {
                    return Err(EvalError::NotANumber("division overflow"));
                }
                number(acc)
            }
        },
        Op::Mod => match args.as_slice() {
            [head, rest @ ..] if !rest.is_empty() => {
                let mut acc = arith(head)?;
                for a in rest {
                    acc %= arith(a)?;
                }
                number(acc)
            }
            _ => Err(EvalError::InvalidArguments("%")),
        },
        Op::Max | Op::Min => {
            let mut best: Option<f64> = None;
            for a in &args {
                let Value::Number(n) = a.as_ref() else {
                    return Err(EvalError::InvalidArguments("max/min takes numbers"));
                };
                let n = js::num(n);
                best = Some(match best {
                    Some(b) if (op == Op::Max && b >= n) || (op == Op::Min && b <= n) => b,
                    _ => n,
                });
            }
            best.map_or(
                Err(EvalError::InvalidArguments("max/min of nothing")),
                number,
            )
        }
        Op::Merge => {
            let mut out = Vec::new();
            for a in args {
                match a.into_owned() {
                    Value::Array(items) => out.extend(items),
                    other => out.push(other),
                }
            }
            Ok(Cow::Owned(Value::Array(out)))
        }
        Op::Missing => Ok(Cow::Owned(Value::Array(missing(&args, env)))),
        Op::MissingSome => {
            let need = args.first().and_then(|v| js::to_number(v)).unwrap_or(0.0);
            let options: &[Value] = match args.get(1).map(|v| v.as_ref()) {
                Some(Value::Array(a)) => a,
                _ => return Err(EvalError::InvalidArguments("missing_some")),
            };
            let options: Vec<Cow<'_, Value>> = options.iter().map(Cow::Borrowed).collect();
            let absent = missing(&options, env);
            env.set_prev(Cow::Owned(Value::Array(absent.clone())));
            if (options.len() - absent.len()) as f64 >= need {
                Ok(Cow::Owned(Value::Array(Vec::new())))
            } else {
                Ok(Cow::Owned(Value::Array(absent)))
            }
        }
        Op::Fractional => flagd::fractional(&args, env),
        Op::SemVer => Ok(Cow::Owned(flagd::sem_ver(&args))),
        Op::StartsWith | Op::EndsWith => Ok(Cow::Owned(flagd::affix(&args, op == Op::StartsWith))),
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
        | Op::Filter => Err(EvalError::InvalidArguments("a lazy operator")),
    }
}

/// The keys among `keys` that the data lacks: a step through a falsy value, or a key with
/// no member (a `null` member is present).
fn missing(keys: &[Cow<'_, Value>], env: &Env<'_>) -> Vec<Value> {
    let mut out = Vec::new();
    for k in keys {
        let path = super::split_path(&js::to_js_string(k));
        let mut data = env.data;
        let mut found = true;
        for p in &path {
            if is_js_falsy(data) {
                found = false;
                break;
            }
            match step(data, p) {
                Some(v) => data = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            out.push(k.as_ref().clone());
        }
    }
    out
}

/// JavaScript's `String.prototype.substr(from, length)`, a negative length counting back
/// from the end.
fn substr<'a>(args: &[Cow<'a, Value>]) -> Res<'a> {
    let Some(Value::String(s)) = args.first().map(|v| v.as_ref()) else {
        return Err(EvalError::TypeError(
            "substr of a value that is not a string",
        ));
    };
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i64;
    let int = |v: Option<&Cow<'a, Value>>| -> Option<i64> {
        v.and_then(|v| js::to_number(v))
            .map(|f| if f.is_nan() { 0 } else { f.trunc() as i64 })
    };
    let from = int(args.get(1)).unwrap_or(0);
    let start = if from < 0 {
        (len + from).max(0)
    } else {
        from.min(len)
    };
    let end = match int(args.get(2)) {
        None => len,
        Some(n) if n < 0 => (len + n).max(start),
        Some(n) => (start + n).min(len),
    };
    let out: String = chars[start as usize..end.max(start) as usize]
        .iter()
        .collect();
    Ok(Cow::Owned(Value::String(out)))
}
