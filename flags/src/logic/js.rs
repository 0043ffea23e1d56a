//! JavaScript's value semantics, as flagd's reference evaluator (JavaScript) applies them to
//! JSON values: truthiness, `Number(x)`, `String(x)`, loose and strict equality and the
//! relational operators.
//!
//! Targeting rules are written against that evaluator, so the same rule must give the same
//! answer here for every JSON value a context can hold, including the odd ones (`"5" == 5`,
//! `null < 1`, `[] ` being false).

use std::cmp::Ordering;

use serde_json::Value;

/// JsonLogic truthiness: JavaScript's, except that an empty array or object is false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A JSON number as JavaScript holds it (every number is an `f64`).
pub fn num(n: &serde_json::Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

/// JavaScript's `Number(v)` for a primitive; `None` for an array or object (the reference
/// evaluator refuses to coerce those and fails the evaluation).
pub fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Null => Some(0.0),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => Some(num(n)),
        Value::String(s) => Some(string_to_number(s)),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// JavaScript's `Number(s)` for a string: trimmed, empty is 0, `0x`/`0o`/`0b` prefixes,
/// `Infinity`, decimal otherwise, `NaN` for anything else.
pub fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_space);
    if t.is_empty() {
        return 0.0;
    }
    let radix = |p: &str, r: u32| {
        t.strip_prefix(p)
            .or_else(|| t.strip_prefix(&p.to_uppercase()))
            .map(|d| {
                if d.is_empty() {
                    f64::NAN
                } else {
                    u128::from_str_radix(d, r).map_or(f64::NAN, |v| v as f64)
                }
            })
    };
    if let Some(v) = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
    {
        return v;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    // Rust also parses "inf" and "nan"; JavaScript does not.
    if !t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

fn is_js_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// JavaScript's `String(v)`: numbers as JavaScript prints them, arrays joined with commas,
/// objects as `[object Object]`.
pub fn to_js_string(v: &Value) -> String {
    let mut out = String::new();
    push_js_string(&mut out, v);
    out
}

/// Appends `String(v)` to `out`.
pub fn push_js_string(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_js_number(out, num(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Array.prototype.join writes null (and undefined) as the empty string.
                if !e.is_null() {
                    push_js_string(out, e);
                }
            }
        }
        Value::Object(_) => out.push_str("[object Object]"),
    }
}

/// Appends a number as JavaScript's `Number.prototype.toString` writes it in the common
/// range: integers without a fraction, others in their shortest round-trip form.
pub fn push_js_number(out: &mut String, f: f64) {
    use std::fmt::Write as _;
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == 0.0 {
        out.push('0');
    } else if f.fract() == 0.0 && f.abs() < 1e21 {
        // Writing to a String cannot fail.
        let _ = write!(out, "{f:.0}");
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A JSON number from an `f64`, as an integer when it is one (so that `1 + 1` is `2`, not
/// `2.0`, when the result is shown); `null` for NaN and infinities, which JSON cannot hold.
pub fn number_value(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        // Exact: |f| < 2^53 and integral.
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// JavaScript's strict equality `a === b` on JSON values: same type and value; arrays and
/// objects are distinct references, so never equal.
pub fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => num(x) == num(y),
        (Value::String(x), Value::String(y)) => x == y,
        _ => false,
    }
}

/// The relational and equality operators of JavaScript on two primitives, as the compiled
/// form of flagd's evaluator applies them (after its coercion checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// `a OP b` with JavaScript's abstract equality and relational comparison (arrays and
/// objects compare as their strings).
pub fn compare(op: Cmp, a: &Value, b: &Value) -> bool {
    match op {
        Cmp::Eq => loose_eq(a, b),
        Cmp::Ne => !loose_eq(a, b),
        Cmp::Lt => relational(a, b) == Some(Ordering::Less),
        Cmp::Gt => relational(a, b) == Some(Ordering::Greater),
        Cmp::Le => matches!(relational(a, b), Some(Ordering::Less | Ordering::Equal)),
        Cmp::Ge => matches!(relational(a, b), Some(Ordering::Greater | Ordering::Equal)),
    }
}

/// JavaScript's `ToPrimitive` for JSON: an array or object becomes its string.
fn to_primitive(v: &Value) -> std::borrow::Cow<'_, Value> {
    match v {
        Value::Array(_) | Value::Object(_) => {
            std::borrow::Cow::Owned(Value::String(to_js_string(v)))
        }
        _ => std::borrow::Cow::Borrowed(v),
    }
}

fn is_reference(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_))
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    // Two arrays or objects are equal only as the same reference, which JSON values never are.
    if is_reference(a) && is_reference(b) {
        return false;
    }
    if (a.is_null() && is_reference(b)) || (b.is_null() && is_reference(a)) {
        return false;
    }
    let (a, b) = (to_primitive(a), to_primitive(b));
    let (a, b) = (a.as_ref(), b.as_ref());
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::String(x), Value::String(y)) => x == y,
        _ => match (to_number(a), to_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn relational(a: &Value, b: &Value) -> Option<Ordering> {
    let (a, b) = (to_primitive(a), to_primitive(b));
    let (a, b) = (a.as_ref(), b.as_ref());
    if let (Value::String(x), Value::String(y)) = (a, b) {
        return Some(utf16_cmp(x, y));
    }
    let (x, y) = (to_number(a)?, to_number(b)?);
    x.partial_cmp(&y)
}

/// JavaScript compares strings by UTF-16 code units.
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_coerce_as_in_javascript() {
        assert_eq!(string_to_number(" 12 "), 12.0);
        assert_eq!(string_to_number(""), 0.0);
        assert_eq!(string_to_number("0x1A"), 26.0);
        assert_eq!(string_to_number("1e3"), 1000.0);
        assert!(string_to_number("inf").is_nan());
        assert!(string_to_number("12abc").is_nan());
        assert_eq!(string_to_number("-Infinity"), f64::NEG_INFINITY);
    }

    #[test]
    fn strings_are_written_as_in_javascript() {
        assert_eq!(to_js_string(&json!(5.0)), "5");
        assert_eq!(to_js_string(&json!(5.5)), "5.5");
        assert_eq!(to_js_string(&json!([1, null, "a"])), "1,,a");
        assert_eq!(to_js_string(&json!({"a": 1})), "[object Object]");
        assert_eq!(to_js_string(&json!(true)), "true");
    }

    #[test]
    fn comparisons_follow_javascript() {
        assert!(compare(Cmp::Eq, &json!("5"), &json!(5)));
        assert!(compare(Cmp::Eq, &json!(true), &json!(1)));
        assert!(!compare(Cmp::Eq, &json!(null), &json!(0)));
        assert!(compare(Cmp::Lt, &json!(null), &json!(1)));
        assert!(compare(Cmp::Lt, &json!("B"), &json!("a")));
        assert!(!compare(Cmp::Lt, &json!("x"), &json!(1)));
        assert!(!truthy(&json!([])));
        assert!(!truthy(&json!({})));
        assert!(truthy(&json!("0")));
    }
}
