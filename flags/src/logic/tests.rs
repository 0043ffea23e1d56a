use serde_json::{Value, json};

use super::{CompileError, FlagdProps, compile, split_path};

fn run(rule: Value, ctx: Value) -> Result<Value, super::EvalError> {
    let rule = compile(&rule).unwrap();
    let props = FlagdProps::new("my-flag", 1_700_000_000);
    rule.evaluate(&ctx, &props).map(|v| v.into_owned())
}

fn ok(rule: Value, ctx: Value) -> Value {
    run(rule, ctx).unwrap()
}

#[test]
fn var_reads_paths_defaults_and_flagd_properties() {
    let ctx = json!({"user": {"email": "a@b.c", "tags": ["x", "y"]}, "n": null});
    assert_eq!(
        ok(json!({"var": "user.email"}), ctx.clone()),
        json!("a@b.c")
    );
    assert_eq!(ok(json!({"var": "user.tags.1"}), ctx.clone()), json!("y"));
    assert_eq!(ok(json!({"var": ["nope", 7]}), ctx.clone()), json!(7));
    // A null member falls back to the default, as `??` does in the reference.
    assert_eq!(ok(json!({"var": ["n", "d"]}), ctx.clone()), json!("d"));
    assert_eq!(
        ok(json!({"var": "$flagd.flagKey"}), ctx.clone()),
        json!("my-flag")
    );
    assert_eq!(
        ok(json!({"var": "$flagd.timestamp"}), ctx.clone()),
        json!(1_700_000_000)
    );
    // A context's own `$flagd` is overridden.
    assert_eq!(
        ok(
            json!({"var": "$flagd.flagKey"}),
            json!({"$flagd": {"flagKey": "spoof"}})
        ),
        json!("my-flag")
    );
    assert_eq!(split_path("a\\.b.c"), vec!["a.b", "c"]);
}

#[test]
fn comparisons_coerce_as_the_reference_does() {
    assert_eq!(
        ok(json!({"==": [{"var": "age"}, 42]}), json!({"age": "42"})),
        json!(true)
    );
    assert_eq!(
        ok(json!({"<": [18, {"var": "age"}, 65]}), json!({"age": 30})),
        json!(true)
    );
    assert_eq!(
        ok(json!({"<": [18, {"var": "age"}, 65]}), json!({"age": 70})),
        json!(false)
    );
    assert_eq!(ok(json!({"===": [1, "1"]}), json!({})), json!(false));
    assert_eq!(ok(json!({"==": [{"var": "x"}, 0]}), json!({})), json!(true));
    // The reference throws on these: the flag resolves to an error.
    assert!(run(json!({"==": [{"var": "age"}, 5]}), json!({"age": "old"})).is_err());
    assert!(run(json!({">": [{"var": "o"}, 1]}), json!({"o": {"a": 1}})).is_err());
}

#[test]
fn logic_and_strings() {
    assert_eq!(
        ok(json!({"if": [false, "a", true, "b", "c"]}), json!({})),
        json!("b")
    );
    assert_eq!(ok(json!({"if": [false, "a"]}), json!({})), Value::Null);
    assert_eq!(ok(json!({"or": [0, "", "x"]}), json!({})), json!("x"));
    assert_eq!(ok(json!({"and": [1, [], 2]}), json!({})), json!([]));
    assert_eq!(ok(json!({"!": [[]]}), json!({})), json!(true));
    assert_eq!(ok(json!({"in": ["b", ["a", "b"]]}), json!({})), json!(true));
    assert_eq!(ok(json!({"in": ["ell", "hello"]}), json!({})), json!(true));
    assert_eq!(
        ok(json!({"cat": ["a", 1, null, 2.5]}), json!({})),
        json!("a1null2.5")
    );
    assert_eq!(
        ok(json!({"substr": ["jsonlogic", -5]}), json!({})),
        json!("logic")
    );
    assert_eq!(
        ok(json!({"substr": ["jsonlogic", 1, -4]}), json!({})),
        json!("sonl")
    );
    assert_eq!(ok(json!({"+": [1, "2", true]}), json!({})), json!(4));
    assert_eq!(
        ok(json!({"%": [{"var": "n"}, 3]}), json!({"n": 10})),
        json!(1)
    );
    assert_eq!(
        ok(
            json!({"missing": ["a", "b.c"]}),
            json!({"a": null, "b": {}})
        ),
        json!(["b.c"])
    );
    assert_eq!(
        ok(
            json!({"some": [{"var": "tags"}, {"==": [{"var": ""}, "beta"]}]}),
            json!({"tags": ["a", "beta"]})
        ),
        json!(true)
    );
    assert!(run(json!({"in": ["a", 5]}), json!({})).is_err());
}

#[test]
fn flagd_string_and_semver_operators() {
    assert_eq!(
        ok(
            json!({"starts_with": [{"var": "e"}, "adm"]}),
            json!({"e": "admin@x"})
        ),
        json!(true)
    );
    assert_eq!(
        ok(
            json!({"ends_with": [{"var": "e"}, "@x.io"]}),
            json!({"e": "a@x.io"})
        ),
        json!(true)
    );
    assert_eq!(
        ok(
            json!({"ends_with": [{"var": "e"}, "@x.io"]}),
            json!({"e": 5})
        ),
        Value::Null
    );
    assert_eq!(
        ok(json!({"sem_ver": ["v1.2.3", ">=", "1.2"]}), json!({})),
        json!(true)
    );
    assert_eq!(
        ok(
            json!({"sem_ver": ["1.2.3-beta.1", "<", "1.2.3"]}),
            json!({})
        ),
        json!(true)
    );
    assert_eq!(
        ok(json!({"sem_ver": ["1.2.3+b1", "=", "1.2.3+b2"]}), json!({})),
        json!(true)
    );
    assert_eq!(
        ok(json!({"sem_ver": ["2.9.0", "^", "2.0.0"]}), json!({})),
        json!(true)
    );
    assert_eq!(
        ok(json!({"sem_ver": ["2.1.0", "~", "2.0.0"]}), json!({})),
        json!(false)
    );
    assert_eq!(
        ok(json!({"sem_ver": ["nope", "=", "1.0.0"]}), json!({})),
        Value::Null
    );
    assert_eq!(
        ok(json!({"sem_ver": ["1.0.0", "=~", "1.0.0"]}), json!({})),
        Value::Null
    );
}

// Expected buckets come from @openfeature/flagd-core 4.0.1 run on the same inputs.
#[test]
fn fractional_buckets_as_flagd() {
    let three = json!({"fractional": [["a", 1], ["b", 1], ["c", 1]]});
    let skewed = json!({"fractional": [["a", 1], ["b", 99999]]});
    let by_email = json!({"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]});
    for (key, want) in [
        ("user-1", ["a", "b", "a"]),
        ("user-2", ["a", "b", "a"]),
        ("user-3", ["c", "b", "b"]),
        ("alice", ["b", "b", "b"]),
        ("bob", ["b", "b", "a"]),
    ] {
        let ctx = json!({"targetingKey": key, "email": format!("{key}@x.io")});
        // The flag key is part of the hashed string: each rule ran as its own flag in the
        // reference ("f", "g", "h").
        let keyed = |rule: &Value, flag: &str| {
            compile(rule)
                .unwrap()
                .evaluate(&ctx, &FlagdProps::new(flag, 0))
                .unwrap()
                .into_owned()
        };
        assert_eq!(keyed(&three, "f"), json!(want[0]), "{key} three-way");
        assert_eq!(keyed(&skewed, "g"), json!(want[1]), "{key} 1:99999");
        assert_eq!(keyed(&by_email, "h"), json!(want[2]), "{key} by email");
    }
    // No targeting key and no bucketBy: no bucket.
    assert_eq!(ok(three.clone(), json!({})), Value::Null);
    // Weights over i32::MAX: no bucket.
    assert_eq!(
        ok(
            json!({"fractional": [["a", 2147483647], ["b", 1]]}),
            json!({"targetingKey": "k"})
        ),
        Value::Null
    );
    // A zero total weight: no bucket.
    assert_eq!(
        ok(
            json!({"fractional": [["a", 0]]}),
            json!({"targetingKey": "k"})
        ),
        Value::Null
    );
}

#[test]
fn unknown_and_malformed_operators_do_not_compile() {
    assert_eq!(
        compile(&json!({"regex": ["a", "b"]})).unwrap_err(),
        CompileError::UnknownOperator("regex".into())
    );
    assert!(matches!(
        compile(&json!({"==": [1, 1], "!=": [1, 2]})).unwrap_err(),
        CompileError::MultipleKeys(_)
    ));
    assert!(matches!(
        compile(&json!({"if": "x"})).unwrap_err(),
        CompileError::BadArguments { .. }
    ));
}
