//! flagd's own operators: `fractional` (deterministic percentage buckets), `sem_ver`,
//! `starts_with` and `ends_with`.
//!
//! Each answers `null` rather than failing when its arguments are unusable, as flagd's do:
//! a rule then falls through to the flag's default variant.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::Cursor;

use serde_json::Value;

use super::eval::{Env, EvalError};
use super::js;

/// The largest sum of weights flagd accepts (`i32::MAX`).
const MAX_TOTAL_WEIGHT: f64 = 2_147_483_647.0;

/// `fractional`: `[bucketBy?, [variant, weight?]...]`.
///
/// The string hashed is `bucketBy` when the first argument is a string, else the flag key
/// followed by the context's `targetingKey` (none: no bucket). Its 32-bit murmur3 hash (seed
/// 0, over the UTF-8 bytes) `h` selects bucket `(h × total) >> 32` in `0..total`, where
/// `total` is the sum of the weights; the variant is the first whose running sum of weights
/// exceeds it. Weights are integers (missing: 1, negative: 0) summing to at most `i32::MAX`,
/// so `[1, 99999]` splits 1 : 99999 rather than being rounded to percent.
pub(crate) fn fractional<'a>(
    args: &[Cow<'a, Value>],
    env: &Env<'a>,
) -> Result<Cow<'a, Value>, EvalError> {
    let null = Ok(Cow::Owned(Value::Null));
    let (Some(first), Some(flagd)) = (args.first(), env.flagd) else {
        return null;
    };
    let (bucket_by, buckets) = match first.as_ref() {
        Value::String(s) => (Cow::Borrowed(s.as_str()), &args[1..]),
        _ => {
            let key = match env.data {
                Value::Object(m) => m.get("targetingKey"),
                _ => None,
            };
            // JavaScript's `!targetingKey`: missing, null, "", 0 and false all mean none.
            let Some(key) = key.filter(|k| js::truthy(k) || k.is_array() || k.is_object()) else {
                return null;
            };
            let mut s = js::to_js_string(&flagd.flag_key);
            js::push_js_string(&mut s, key);
            (Cow::Owned(s), args)
        }
    };
    let Some((entries, total)) = bucket_list(buckets) else {
        return null;
    };
    // Reading from a byte slice cannot fail; a failure would mean no bucket.
    let Ok(hash) = murmur3::murmur3_32(&mut Cursor::new(bucket_by.as_bytes()), 0) else {
        return null;
    };
    let bucket = (u64::from(hash) * total) >> 32;
    let mut sum = 0u64;
    for (variant, weight) in entries {
        sum += weight;
        if sum > bucket {
            return Ok(Cow::Owned(variant.clone()));
        }
    }
    null
}

/// The `[variant, weight]` entries and the total weight; `None` for a malformed list.
fn bucket_list<'v>(buckets: &'v [Cow<'_, Value>]) -> Option<(Vec<(&'v Value, u64)>, u64)> {
    let mut entries = Vec::with_capacity(buckets.len());
    let mut total = 0.0f64;
    for b in buckets {
        let Value::Array(entry) = b.as_ref() else {
            return None;
        };
        let variant = match entry.as_slice() {
            [v] | [v, _] => v,
            _ => return None,
        };
        if matches!(variant, Value::Array(_) | Value::Object(_)) {
            return None;
        }
        let weight = match entry.get(1) {
            None => 1.0,
            Some(Value::Number(n)) => {
                let w = js::num(n);
                if !w.is_finite() || w.fract() != 0.0 {
                    return None;
                }
                w.max(0.0)
            }
            Some(_) => return None,
        };
        total += weight;
        entries.push((variant, weight));
    }
    if total > MAX_TOTAL_WEIGHT {
        return None;
    }
    // Every weight is an integer in 0..=i32::MAX here, so the conversions are exact.
    let entries = entries.into_iter().map(|(v, w)| (v, w as u64)).collect();
    Some((entries, total as u64))
}

/// `sem_ver`: `[version, operator, version]` with `=`, `!=`, `<`, `<=`, `>`, `>=`, `^` (same
/// major) and `~` (same major and minor). Versions may start with `v` and may be partial
/// (`"1"`, `"1.2"`); anything else that is not SemVer gives `null`.
pub(crate) fn sem_ver(args: &[Cow<'_, Value>]) -> Value {
    let [a, op, b] = args else {
        return Value::Null;
    };
    let (Some(a), Some(b)) = (version(a), version(b)) else {
        return Value::Null;
    };
    let ord = a.cmp_precedence(&b);
    Value::Bool(match js::to_js_string(op).as_str() {
        "=" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        ">=" => ord != Ordering::Less,
        "^" => a.major == b.major,
        "~" => a.major == b.major && a.minor == b.minor,
        _ => return Value::Null,
    })
}

/// The longest version string the reference parses.
const MAX_VERSION_LEN: usize = 256;

fn version(v: &Value) -> Option<semver::Version> {
    let s = js::to_js_string(v);
    let s = s
        .strip_prefix('v')
        .or_else(|| s.strip_prefix('V'))
        .unwrap_or(&s);
    if s.len() > MAX_VERSION_LEN {
        return None;
    }
    let trimmed = s.trim();
    let plain = trimmed.strip_prefix('v').unwrap_or(trimmed);
    if let Ok(v) = semver::Version::parse(plain) {
        // Components beyond JavaScript's safe integers are refused there.
        const MAX_SAFE: u64 = (1 << 53) - 1;
        if v.major <= MAX_SAFE && v.minor <= MAX_SAFE && v.patch <= MAX_SAFE {
            return Some(v);
        }
        return None;
    }
    partial(s)
}

/// `"1"` and `"1.2"` as `1.0.0` and `1.2.0`.
fn partial(s: &str) -> Option<semver::Version> {
    let mut parts = s.split('.');
    let (major, minor, rest) = (parts.next()?, parts.next(), parts.next());
    if rest.is_some() {
        return None;
    }
    let num = |p: &str| -> Option<u64> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // The reference reads at most 16 digits per component.
        if p.len() > 16 {
            return None;
        }
        p.parse().ok()
    };
    Some(semver::Version::new(
        num(major)?,
        minor.map(num).unwrap_or(Some(0))?,
        0,
    ))
}

/// `starts_with` / `ends_with`: `[string, affix]`, both strings, else `null`.
pub(crate) fn affix(args: &[Cow<'_, Value>], starts: bool) -> Value {
    let [s, affix] = args else {
        return Value::Null;
    };
    match (s.as_ref(), affix.as_ref()) {
        (Value::String(s), Value::String(a)) => Value::Bool(if starts {
            s.starts_with(a.as_str())
        } else {
            s.ends_with(a.as_str())
        }),
        _ => Value::Null,
    }
}
