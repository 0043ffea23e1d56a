//! Parity with flagd's JavaScript evaluator, `@openfeature/flagd-core`: for every flag of a
//! corpus of flag sets (`tests/data/parity/`) and 100,000 generated contexts, Gantry's
//! variant, reason and error code equal those of the real package, installed with npm and
//! run by node in this test.
//!
//! Without npm (a developer machine) the test says so and passes; under CI (`CI` set) a
//! missing npm fails it. The package is installed once into `GANTRY_NODE_CACHE` (default: the
//! test's target tmp dir).
//!
//! Targeting keys are ASCII: flagd-core's murmur3 (`imurmurhash`) hashes UTF-16 code units,
//! not UTF-8 bytes as flagd's Go evaluator and Gantry do, so for non-ASCII keys the
//! JavaScript evaluator disagrees with flagd itself (see docs/flags.md).

#![allow(
    clippy::unwrap_used,
    reason = "test code: an unwrap that fails is a failed test, and its message says why"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_flags::{FlagSet, ValueType};
use serde_json::{Value, json};

const FLAGD_CORE: &str = "@openfeature/flagd-core@4.0.1";
const OPENFEATURE_CORE: &str = "@openfeature/core@1.12.0";
const CONTEXTS: usize = 100_000;
const NOW: i64 = 1_750_000_000;

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn node_modules() -> Option<PathBuf> {
    if !have("npm") || !have("node") {
        assert!(
            std::env::var_os("CI").is_none(),
            "npm and node are needed for the flagd-core parity test under CI"
        );
        eprintln!("SKIPPED: flagd-core parity needs npm and node, and they are not installed");
        return None;
    }
    let dir = std::env::var_os("GANTRY_NODE_CACHE").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("node"),
        PathBuf::from,
    );
    let modules = dir.join("node_modules");
    if !modules
        .join("@openfeature/flagd-core/package.json")
        .exists()
    {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&dir)
            .args([FLAGD_CORE, OPENFEATURE_CORE])
            .status()
            .unwrap();
        assert!(status.success(), "npm install {FLAGD_CORE} failed");
    }
    Some(modules)
}

/// A small deterministic generator (xorshift64*), so a failure can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn word(&mut self, len: u64) -> String {
        const ALPHABET: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// Contexts with the fields the corpus reads, in all the shapes an app may send: missing,
/// null, the wrong type, numeric strings, odd versions.
fn contexts(n: usize) -> Vec<Value> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let mut c = serde_json::Map::new();
            match rng.below(10) {
                0 => {}
                1 => {
                    c.insert("targetingKey".into(), json!(""));
                }
                2 => {
                    let len = 1 + rng.below(24);
                    c.insert("targetingKey".into(), json!(rng.word(len)));
                }
                _ => {
                    c.insert("targetingKey".into(), json!(format!("user-{i}")));
                }
            }
            match rng.below(6) {
                0 => {}
                1 => {
                    c.insert("email".into(), Value::Null);
                }
                _ => {
                    let domain = rng.pick(&[
                        "corp.example",
                        "example.com",
                        "mail.test",
                        "corp.example.org",
                    ]);
                    let len = 1 + rng.below(10);
                    c.insert("email".into(), json!(format!("{}@{domain}", rng.word(len))));
                }
            }
            let age = match rng.below(12) {
                0 => None,
                1 => Some(json!(format!("{}", rng.below(100)))),
                2 => Some(json!("old")),
                3 => Some(Value::Null),
                4 => Some(json!(rng.below(1000) as f64 / 10.0)),
                5 => Some(json!(true)),
                _ => Some(json!(rng.below(100))),
            };
            if let Some(age) = age {
                c.insert("age".into(), age);
            }
            if rng.below(8) != 0 {
                let v = rng.pick(&[
                    "1.2.3",
                    "1.2.10",
                    "v2.0.0",
                    "2.0.0-beta.1",
                    "1",
                    "1.3",
                    "0.9.9",
                    "3.1.4+build.5",
                    "garbage",
                    "1.2.3.4",
                    "V1.2.0",
                    "01.2.3",
                ]);
                c.insert("version".into(), json!(v));
            }
            if rng.below(5) != 0 {
                let plan = rng.pick(&["free", "pro", "enterprise", "trial", ""]);
                c.insert("plan".into(), json!(plan));
            }
            if rng.below(4) != 0 {
                let country = rng.pick(&["DE", "FR", "US", "NL", "MX", "m", "Z", ""]);
                c.insert("country".into(), json!(country));
            }
            match rng.below(5) {
                0 => {}
                1 => {
                    c.insert("tags".into(), json!([]));
                }
                2 => {
                    c.insert("tags".into(), json!("beta-tester"));
                }
                _ => {
                    let tag = rng.pick(&["beta", "alpha", "staff"]);
                    c.insert("tags".into(), json!([tag, "x"]));
                }
            }
            if rng.below(10) == 0 {
                c.insert("meta".into(), json!({"a": 1}));
            } else if rng.below(3) == 0 {
                c.insert("meta".into(), json!(rng.below(3)));
            }
            Value::Object(c)
        })
        .collect()
}

fn value_type(set: &FlagSet, key: &str) -> ValueType {
    let flag = &set.flags[key];
    match flag
        .default_variant
        .as_ref()
        .and_then(|d| flag.variants.get(d))
    {
        Some(Value::Bool(_)) => ValueType::Boolean,
        Some(Value::String(_)) => ValueType::String,
        Some(Value::Number(_)) => ValueType::Number,
        _ => ValueType::Object,
    }
}

#[test]
fn variants_and_reasons_equal_flagd_core() {
    let Some(modules) = node_modules() else {
        return;
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    let texts: Vec<String> = names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let sets: Vec<FlagSet> = texts
        .iter()
        .map(|t| FlagSet::parse(t.as_bytes()).unwrap())
        .collect();
    let contexts = contexts(CONTEXTS);

    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parity");
    std::fs::create_dir_all(&work).unwrap();
    let input = work.join("input.json");
    let output = work.join("output.txt");
    let corpus = json!({"now": NOW, "sets": texts, "contexts": contexts});
    std::fs::write(&input, serde_json::to_vec(&corpus).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity-flagd-core.js");
    let status = Command::new("node")
        .arg(&script)
        .arg(&input)
        .arg(&output)
        .env("NODE_PATH", &modules)
        .status()
        .unwrap();
    assert!(status.success(), "node {} failed", script.display());
    let theirs = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<&str> = theirs.lines().collect();
    assert_eq!(
        rows.len(),
        contexts.len(),
        "flagd-core answered for every context"
    );

    let mut evaluations = 0usize;
    let mut mismatches = 0usize;
    let mut first: Option<String> = None;
    for (ctx, row) in contexts.iter().zip(&rows) {
        let mut cells = row.split('\t');
        for (name, set) in names.iter().zip(&sets) {
            for key in set.flags.keys() {
                let r = set.evaluate_typed(key, ctx, NOW, value_type(set, key));
                let ours = format!(
                    "{}\u{1}{}\u{1}{}",
                    r.variant.as_deref().unwrap_or(""),
                    r.reason,
                    r.error.as_ref().map_or("", |e| e.0.as_str())
                );
                let theirs = cells.next().unwrap_or("<missing>");
                evaluations += 1;
                if ours != theirs {
                    mismatches += 1;
                    first.get_or_insert_with(|| {
                        format!(
                            "set {}, flag {key:?}, context {ctx}\n  gantry:     {}\n  flagd-core: {}",
                            name.display(),
                            ours.replace('\u{1}', " | "),
                            theirs.replace('\u{1}', " | ")
                        )
                    });
                }
            }
        }
    }
    eprintln!(
        "flagd-core parity: {evaluations} evaluations over {} contexts and {} flag sets, {mismatches} mismatches",
        contexts.len(),
        sets.len()
    );
    assert!(
        first.is_none(),
        "{mismatches} of {evaluations} evaluations differ from flagd-core; the first:\n{}",
        first.unwrap_or_default()
    );
}
