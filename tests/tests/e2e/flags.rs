//! Feature flags end to end: `gantry flags push|kill|show` against a real agent, the app's
//! OFREP endpoint answering, every refusal audited with the served set unchanged, and the set
//! in force served again after a kill -9 of the agent.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gantry_tests::ofrep::{self, FlagKeys};
use gantry_tests::sse::Watchers;
use gantry_tests::{
    Agent, Controller, TestEnv, audit_events, audit_lines, make_artifact, wait_until,
};
use serde_json::{Value, json};

/// One agent with `[apps.web.flags]`, the flag keys, and a controller.
struct Flags {
    env: TestEnv,
    agent: Agent,
    ctl: Controller,
    keys: FlagKeys,
    ofrep: SocketAddr,
}

impl Flags {
    fn new() -> Flags {
        let env = TestEnv::new().unwrap();
        let (keys, ofrep) = ofrep::enable_flags(&env).unwrap();
        let agent = Agent::start(&env).unwrap();
        let ctl = Controller::new(&env, &agent);
        Flags {
            env,
            agent,
            ctl,
            keys,
            ofrep,
        }
    }

    fn write(&self, name: &str, doc: &Value) -> PathBuf {
        let path = self.env.root.join(name);
        fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        path
    }

    fn key(k: &gantry_tests::KeyPair) -> String {
        k.key.to_string_lossy().into_owned()
    }

    /// `gantry flags push --key KEY --app web FILE EXTRA...`.
    fn push(
        &self,
        key: &gantry_tests::KeyPair,
        file: &std::path::Path,
        extra: &[&str],
    ) -> gantry_tests::Output {
        let key = Self::key(key);
        let file = file.to_string_lossy().into_owned();
        let mut args = vec!["flags", "push", "--key", &key, "--app", "web"];
        args.extend_from_slice(extra);
        args.push(&file);
        self.ctl.run(&args).unwrap()
    }

    /// `gantry flags sign --key KEY --app web --version N --for-agent THIS EXTRA... --out OUT
    /// FILE`, which must succeed.
    fn sign(
        &self,
        key: &gantry_tests::KeyPair,
        version: &str,
        file: &std::path::Path,
        out: &std::path::Path,
        extra: &[&str],
    ) {
        let (key, file, out) = (
            Self::key(key),
            file.to_string_lossy().into_owned(),
            out.to_string_lossy().into_owned(),
        );
        let mut args = vec![
            "flags",
            "sign",
            "--key",
            &key,
            "--app",
            "web",
            "--version",
            version,
            "--for-agent",
            &self.env.agent_id,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", &out, &file]);
        self.env.gantry(&args).unwrap().assert_code(0);
    }

    /// `gantry flags kill --key killer.key --app web FLAG`.
    fn kill(&self, flag: &str) -> gantry_tests::Output {
        let key = Self::key(&self.keys.killer);
        self.ctl
            .run(&["flags", "kill", "--key", &key, "--app", "web", flag])
            .unwrap()
    }

    fn bulk(&self) -> Value {
        ofrep::bulk(
            self.ofrep,
            json!({"targetingKey": "u-1", "email": "a@corp.example"}),
            None,
        )
        .unwrap()
        .body
    }
}

/// The CD model's patterns in one set: a boolean, a percentage, users and groups, a number and
/// an object; `legacy` is off.
fn flag_set(checkout_on: u32) -> Value {
    json!({
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@corp.example"]}},
        "flags": {
            "new-checkout": {"state": "ENABLED", "defaultVariant": "off",
                "variants": {"on": true, "off": false},
                "targeting": {"fractional": [["on", checkout_on], ["off", 100 - checkout_on]]}},
            "banner": {"state": "ENABLED", "defaultVariant": "public",
                "variants": {"public": "Welcome", "staff": "Hello, colleague"},
                "targeting": {"if": [{"$ref": "staff"}, "staff", null]}},
            "page-size": {"state": "ENABLED", "defaultVariant": "ten", "variants": {"ten": 10, "fifty": 50}},
            "theme": {"state": "ENABLED", "defaultVariant": "light",
                "variants": {"light": {"bg": "white"}, "dark": {"bg": "black"}}},
            "legacy": {"state": "DISABLED", "defaultVariant": "off", "variants": {"on": true, "off": false}},
            "api-token": {"state": "ENABLED", "defaultVariant": "t", "variants": {"t": "s3cr3t-value"},
                "metadata": {"secret": true}}
        }
    })
}

#[test]
fn pushed_flags_are_served_over_ofrep_and_a_kill_switch_turns_one_off() {
    let f = Flags::new();
    let file = f.write("flags.json", &flag_set(100));
    let out = f.push(&f.keys.flagger, &file, &[]);
    out.assert_code(0);
    assert!(out.stdout.contains("version 1 in force"), "{}", out.all());

    let staff = json!({"targetingKey": "u-1", "email": "a@corp.example"});
    let a = ofrep::evaluate(f.ofrep, "banner", staff.clone()).unwrap();
    assert_eq!(
        (a.status, &a.body["value"], &a.body["reason"]),
        (200, &json!("Hello, colleague"), &json!("TARGETING_MATCH"))
    );
    let a = ofrep::evaluate(f.ofrep, "banner", json!({"email": "x@else.example"})).unwrap();
    assert_eq!(
        (&a.body["value"], &a.body["reason"]),
        (&json!("Welcome"), &json!("DEFAULT"))
    );
    let a = ofrep::evaluate(f.ofrep, "page-size", json!({})).unwrap();
    assert_eq!(
        (&a.body["value"], &a.body["reason"]),
        (&json!(10), &json!("STATIC"))
    );
    let a = ofrep::evaluate(f.ofrep, "theme", json!({})).unwrap();
    assert_eq!(a.body["value"], json!({"bg": "white"}));
    let a = ofrep::evaluate(f.ofrep, "new-checkout", staff.clone()).unwrap();
    assert_eq!(
        (&a.body["value"], &a.body["variant"]),
        (&json!(true), &json!("on"))
    );
    let a = ofrep::evaluate(f.ofrep, "nope", json!({})).unwrap();
    assert_eq!(
        (a.status, &a.body["errorCode"]),
        (404, &json!("FLAG_NOT_FOUND"))
    );

    // Bulk evaluation with an ETag; the same answer again is 304.
    let first = ofrep::bulk(f.ofrep, staff.clone(), None).unwrap();
    assert_eq!(first.status, 200);
    let etag = first.etag.clone().unwrap();
    assert_eq!(first.body["flags"].as_array().unwrap().len(), 6);
    let again = ofrep::bulk(f.ofrep, staff.clone(), Some(&etag)).unwrap();
    assert_eq!(again.status, 304);
    let conf = ofrep::request(
        f.ofrep,
        "GET",
        "/ofrep/v1/configuration",
        &Value::Null,
        None,
    )
    .unwrap();
    assert_eq!(
        conf.body["capabilities"]["cacheInvalidation"]["polling"]["enabled"],
        json!(true)
    );
    assert_eq!(
        conf.body["capabilities"]["cacheInvalidation"]["gantryEvents"]["path"],
        json!("/ofrep/v1/events")
    );

    // The kill switch: a key that may only switch flags off.
    let out = f.kill("new-checkout");
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("version 2 in force (changed new-checkout)"),
        "{}",
        out.all()
    );
    let a = ofrep::evaluate(f.ofrep, "new-checkout", staff.clone()).unwrap();
    assert_eq!(
        (&a.body["value"], &a.body["reason"]),
        (&json!(false), &json!("DISABLED"))
    );
    let after = ofrep::bulk(f.ofrep, staff, Some(&etag)).unwrap();
    assert_eq!(
        after.status, 200,
        "the bulk answer changed, so its ETag did"
    );

    let changed = audit_events(&f.env, "flags.changed").unwrap();
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[0]["signers"], json!(["flagger"]));
    assert_eq!(changed[0]["kill_switch"], json!(false));
    assert_eq!(changed[1]["signers"], json!(["killer"]));
    assert_eq!(changed[1]["kill_switch"], json!(true));
    assert_eq!(changed[1]["changed"], json!(["new-checkout"]));
    assert_eq!(changed[0]["flags"]["api-token"], json!({"secret": true}));
    let log: Vec<String> = audit_lines(&f.env)
        .unwrap()
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(
        !log.concat().contains("s3cr3t-value"),
        "a secret flag's value is in the audit log"
    );

    let out = f
        .ctl
        .run(&["flags", "show", "--app", "web", "--json"])
        .unwrap();
    out.assert_code(0);
    let shown: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(shown["version"], json!(2));
    assert_eq!(shown["signers"], json!(["killer"]));
    let secret = shown["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "api-token")
        .unwrap();
    assert_eq!(secret["variants"], Value::Null);
    let out = f.ctl.run(&["flags", "show", "--app", "web"]).unwrap();
    assert!(
        out.stdout.contains("new-checkout") && out.stdout.contains("DISABLED"),
        "{}",
        out.all()
    );
}

/// Asserts a refusal: exit 3, `reason` in a new `flags.rejected` entry, the served set as before.
fn assert_refused(f: &Flags, out: &gantry_tests::Output, reason: &str, before: &Value) {
    assert_eq!(out.code, 3, "expected a refusal ({reason}):\n{}", out.all());
    let rejected = audit_events(&f.env, "flags.rejected").unwrap();
    let last = rejected.last().expect("a flags.rejected entry");
    assert_eq!(last["reason"], json!(reason), "{last}");
    assert_eq!(
        &f.bulk(),
        before,
        "the served set changed after a refused push ({reason})"
    );
}

#[test]
fn forged_replayed_older_wrong_role_and_expired_flag_sets_are_refused_and_audited() {
    let f = Flags::new();
    let v1 = f.write("v1.json", &flag_set(10));
    // Sign v1 into a file first, so that it can be replayed later.
    let v1_signed = f.env.root.join("v1.flags");
    f.sign(&f.keys.flagger, "1", &v1, &v1_signed, &[]);
    let push_file = |file: &std::path::Path| {
        f.ctl
            .run(&["flags", "push", &file.to_string_lossy()])
            .unwrap()
    };
    push_file(&v1_signed).assert_code(0);
    let v2 = f.write("v2.json", &flag_set(20));
    f.push(&f.keys.flagger, &v2, &[]).assert_code(0);
    let before = f.bulk();

    // Forged: a key the agent does not trust.
    let v3 = f.write("v3.json", &flag_set(30));
    let out = f.push(&f.env.keys.attacker, &v3, &[]);
    assert_refused(&f, &out, "unknown_key", &before);

    // Forged: the signed bytes altered after signing.
    let mut bytes = fs::read(&v1_signed).unwrap();
    let at = bytes.windows(2).position(|w| w == b"10").unwrap();
    bytes[at] = b'9';
    let tampered = f.env.root.join("tampered.flags");
    fs::write(&tampered, &bytes).unwrap();
    let out = push_file(&tampered);
    assert_refused(&f, &out, "bad_signature", &before);

    // Replayed: version 1, admitted before and replaced since.
    let out = push_file(&v1_signed);
    assert_refused(&f, &out, "replayed", &before);

    // Older version: new bytes, but not above version 2.
    let out = f.push(&f.keys.flagger, &v3, &["--version", "2"]);
    assert_refused(&f, &out, "older_version", &before);

    // Wrong role: the kill-switch key turning a disabled flag on.
    let mut on = flag_set(20);
    on["flags"]["legacy"]["state"] = json!("ENABLED");
    let on = f.write("on.json", &on);
    let out = f.push(&f.keys.killer, &on, &[]);
    assert_refused(&f, &out, "kill_switch_exceeded", &before);
    // ... or ramping a percentage up.
    let out = f.push(&f.keys.killer, &v3, &[]);
    assert_refused(&f, &out, "kill_switch_exceeded", &before);

    // Expired: valid for one second, pushed later.
    let late = f.env.root.join("late.flags");
    f.sign(&f.keys.flagger, "9", &v3, &late, &["--valid-for", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let out = push_file(&late);
    assert_refused(&f, &out, "expired", &before);

    // For another agent.
    let out = f.push(&f.keys.flagger, &v3, &["--for-agent", "agent-2"]);
    assert_refused(&f, &out, "wrong_agent", &before);

    // An invalid definition.
    let bad = f.write(
        "bad.json",
        &json!({"flags": {"x": {"state": "ON", "variants": {}}}}),
    );
    let out = f.push(&f.keys.flagger, &bad, &[]);
    assert_eq!(
        out.code,
        2,
        "the CLI refuses to sign an invalid definition:\n{}",
        out.all()
    );

    assert_eq!(audit_events(&f.env, "flags.changed").unwrap().len(), 2);
}

#[test]
fn a_kill_switch_reaches_100_event_stream_watchers_and_survives_a_kill_9() {
    let mut f = Flags::new();
    let file = f.write("flags.json", &flag_set(100));
    f.push(&f.keys.flagger, &file, &[]).assert_code(0);
    let watchers = Watchers::start(f.ofrep, 100, false).unwrap();
    let reconnecting = Watchers::start(f.ofrep, 1, true).unwrap();
    wait_until(
        Duration::from_secs(20),
        "100 watchers got version 1",
        || watchers.count_with(1, 0) == 100 && reconnecting.count_with(1, 0) == 1,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", watchers.describe()));
    let first = &watchers.events(0)[0];
    assert_eq!(first.id, "1");
    assert_eq!(first.data["type"], json!("refetchEvaluation"));
    assert_eq!(first.data["changed"].as_array().map(Vec::len), Some(6));

    let out = f.kill("new-checkout");
    out.assert_code(0);
    wait_until(
        Duration::from_secs(20),
        "all 100 watchers got version 2",
        || watchers.count_with(2, 0) == 100,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", watchers.describe()));
    for i in 0..watchers.len() {
        let events = watchers.events(i);
        let killed = events.iter().find(|e| e.version() == Some(2)).unwrap();
        assert_eq!(
            killed.data["changed"],
            json!(["new-checkout"]),
            "watcher {i}"
        );
        assert!(
            killed.data["etag"].is_string(),
            "watcher {i}: {:?}",
            killed.data
        );
        assert_ne!(killed.data["etag"], events[0].data["etag"], "watcher {i}");
    }
    // What a watcher does on the event: evaluate again, and the flag is off.
    let bulk = f.bulk();
    let checkout = bulk["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == "new-checkout")
        .unwrap();
    assert_eq!(
        (&checkout["reason"], &checkout["value"]),
        (&json!("DISABLED"), &json!(false))
    );

    // kill -9: the stream breaks; the watcher reconnects to the restarted agent and is sent
    // the persisted set first.
    f.agent.kill_9().unwrap();
    let restarted = Agent::start(&f.env).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the watcher reconnected and got version 2 again",
        || reconnecting.count_with(2, 1) == 1,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", reconnecting.describe(), restarted.log_tail()));
}

/// A flood of flag sets signed by a key the agent does not know, 90 at once over two
/// connections (within the certificate's rejection budget of 100): every one is refused as
/// `unknown_key`, and every refusal is on record, one by one as `flags.rejected` or, past 50 a
/// second, counted in a `flags.rejected.summary`; the served set is unchanged.
#[test]
fn a_flood_of_forged_flag_sets_is_refused_and_every_refusal_is_accounted_for() {
    const FLOOD: usize = 90;
    let f = Flags::new();
    let file = f.write("flags.json", &flag_set(100));
    f.push(&f.keys.flagger, &file, &[]).assert_code(0);
    let before = f.bulk();

    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let doc = gantry_proto::v1::FlagSet {
        app: "web".to_owned(),
        version: 2,
        issued_at: now,
        expires_at: now + 600,
        agent_ids: vec![f.env.agent_id.clone()],
        definition_json: serde_json::to_vec(&flag_set(0)).unwrap(),
        reason: "forged".to_owned(),
        ..Default::default()
    };
    let mut forged = gantry_proto::v1::SignedFlags {
        flags: prost::Message::encode_to_vec(&doc),
        signatures: Vec::new(),
    };
    let attacker = gantry_proto::keys::SigningKey::generate().unwrap();
    gantry_client::flags::add_flags_signature(&mut forged, &attacker);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let answers: Vec<Result<(), tonic::Status>> = rt.block_on(async {
        // Two connections: the agent serves at most 64 streams on one.
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(
                gantry_tests::grpc::connect_as(
                    &f.env,
                    &f.agent,
                    &f.env.pki.controller_cert,
                    &f.env.pki.controller_key,
                )
                .await
                .unwrap(),
            );
        }
        let mut set = tokio::task::JoinSet::new();
        for i in 0..FLOOD {
            let (mut client, forged) = (clients[i % 2].clone(), forged.clone());
            set.spawn(async move { client.push_flags(forged).await.map(|_| ()) });
        }
        set.join_all().await
    });
    for a in &answers {
        let status = a.as_ref().expect_err("a forged flag set was admitted");
        assert!(
            status.message().contains("unknown") || status.message().contains("key"),
            "{status:?}"
        );
    }
    let recorded = audit_events(&f.env, "flags.rejected").unwrap();
    assert!(
        recorded.iter().all(|e| e["reason"] == "unknown_key"),
        "{recorded:#?}"
    );
    let summaries = audit_events(&f.env, "flags.rejected.summary").unwrap();
    let counted: u64 = summaries.iter().filter_map(|e| e["count"].as_u64()).sum();
    for s in &summaries {
        assert_eq!(s["reasons"], json!({"unknown_key": s["count"]}), "{s:#?}");
    }
    assert_eq!(
        recorded.len() + usize::try_from(counted).unwrap(),
        FLOOD,
        "{} recorded one by one, {counted} counted",
        recorded.len()
    );
    eprintln!(
        "{} refusals recorded one by one, {counted} counted",
        recorded.len()
    );
    assert_eq!(f.bulk(), before, "the served set changed");
}

#[test]
fn the_set_in_force_is_served_again_after_a_kill_9_without_any_push() {
    let mut f = Flags::new();
    let file = f.write("flags.json", &flag_set(50));
    f.push(&f.keys.flagger, &file, &[]).assert_code(0);
    let before = f.bulk();
    f.agent.kill_9().unwrap();
    // While the agent is down nothing listens: a provider gets a connection error and
    // returns the code default with an error (the documented window).
    assert!(ofrep::evaluate(f.ofrep, "banner", json!({})).is_err());
    // A second handle: dropping the first would stop everything under the test directory.
    let restarted = Agent::start(&f.env).unwrap();
    wait_until(Duration::from_secs(10), "OFREP answers again", || {
        ofrep::bulk(f.ofrep, json!({}), None).is_ok()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", restarted.log_tail()));
    assert_eq!(f.bulk(), before);
    // Versions survive the restart: another set under version 1 is refused.
    let ctl = Controller::new(&f.env, &restarted);
    let key = Flags::key(&f.keys.flagger);
    let file = f.write("other.json", &flag_set(60));
    let out = ctl
        .run(&[
            "flags",
            "push",
            "--key",
            &key,
            "--app",
            "web",
            "--version",
            "1",
            &file.to_string_lossy(),
        ])
        .unwrap();
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("not above version 1"), "{}", out.all());
}

/// Runs the stock SDK script `script` (tests/sdk/) with `program`, `path_var` pointing at the
/// installed packages, against the OFREP endpoint; returns its JSON.
fn sdk(
    program: &str,
    script: &str,
    path_var: &str,
    packages: &std::path::Path,
    ofrep: SocketAddr,
) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sdk")
        .join(script);
    let out = std::process::Command::new(program)
        .arg(&script)
        .arg(format!("http://{ofrep}"))
        .env(path_var, packages)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What both SDKs must report before and after the kill switch.
fn assert_sdk_sees(answers: &Value, killed: bool, which: &str) {
    let got = |label: &str, field: &str| answers[label][field].clone();
    if killed {
        assert_eq!(
            got("boolean new-checkout", "value"),
            json!(false),
            "{which}: {answers}"
        );
        assert_eq!(
            got("boolean new-checkout", "reason"),
            json!("DISABLED"),
            "{which}: {answers}"
        );
    } else {
        assert_eq!(
            got("boolean new-checkout", "value"),
            json!(true),
            "{which}: {answers}"
        );
        assert_eq!(
            got("boolean new-checkout", "reason"),
            json!("TARGETING_MATCH"),
            "{which}: {answers}"
        );
    }
    assert_eq!(
        got("string banner staff", "value"),
        json!("Hello, colleague"),
        "{which}: {answers}"
    );
    assert_eq!(
        got("string banner staff", "reason"),
        json!("TARGETING_MATCH"),
        "{which}: {answers}"
    );
    assert_eq!(
        got("string banner other", "value"),
        json!("Welcome"),
        "{which}: {answers}"
    );
    assert_eq!(
        got("number page-size", "value"),
        json!(10),
        "{which}: {answers}"
    );
    assert_eq!(
        got("number page-size", "reason"),
        json!("STATIC"),
        "{which}: {answers}"
    );
    assert_eq!(
        got("object theme", "value"),
        json!({"bg": "white"}),
        "{which}: {answers}"
    );
    assert_eq!(
        got("missing flag", "value"),
        json!(true),
        "{which}: {answers}"
    );
    assert_eq!(
        got("missing flag", "errorCode"),
        json!("FLAG_NOT_FOUND"),
        "{which}: {answers}"
    );
}

#[test]
fn the_stock_openfeature_sdks_evaluate_the_flags_and_see_the_kill_switch() {
    let node = ofrep::node_modules().unwrap();
    let python = ofrep::python_path().unwrap();
    if node.is_none() && python.is_none() {
        return;
    }
    let f = Flags::new();
    let file = f.write("flags.json", &flag_set(100));
    f.push(&f.keys.flagger, &file, &[]).assert_code(0);
    let run = |killed: bool| {
        if let Some(n) = &node {
            let answers = sdk("node", "ofrep-sdk.js", "NODE_PATH", n, f.ofrep);
            assert_sdk_sees(&answers, killed, "JS SDK");
        }
        if let Some(p) = &python {
            let answers = sdk("python3", "ofrep_sdk.py", "PYTHONPATH", p, f.ofrep);
            assert_sdk_sees(&answers, killed, "Python SDK");
        }
    };
    run(false);
    f.kill("new-checkout").assert_code(0);
    run(true);
}

#[test]
fn a_flags_quorum_refuses_one_signature_admits_two_and_leaves_the_kill_switch_alone() {
    let env = TestEnv::new().unwrap();
    let (keys, more, ofrep_addr) = ofrep::enable_flags_with(&env, 1, Some(2)).unwrap();
    let policy = env
        .agent_cmd(&["policy", "--config", &env.config.to_string_lossy()])
        .unwrap();
    policy.assert_code(0);
    assert!(
        policy.stdout.contains(
            "    change          2 signature(s) by distinct keys with role flags\n    \
             kill switch     one signature by a key with role kill-switch (no quorum)\n"
        ),
        "{}",
        policy.all()
    );
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let f = Flags {
        env,
        agent,
        ctl,
        keys,
        ofrep: ofrep_addr,
    };
    let key = |k: &gantry_tests::KeyPair| Flags::key(k);
    let v1 = f.write("v1.json", &flag_set(100));
    let signed = f.env.root.join("v1.flags");
    let signed_s = signed.to_string_lossy().into_owned();
    f.sign(&f.keys.flagger, "1", &v1, &signed, &[]);

    // One flags key of the two the policy wants: refused, audited, nothing served.
    let before = f.bulk();
    let out = f.ctl.run(&["flags", "push", &signed_s]).unwrap();
    assert!(
        out.all()
            .contains("needs 2 signature(s) by distinct keys with a flags role, has 1 (flagger)"),
        "{}",
        out.all()
    );
    assert_refused(&f, &out, "quorum_not_met", &before);

    // The second key adds its signature to the same file; now it is admitted.
    let out = f
        .env
        .gantry(&["flags", "sign", "--add", "--key", &key(&more[0]), &signed_s])
        .unwrap();
    out.assert_code(0);
    assert!(out.stdout.contains("(2 signature(s))"), "{}", out.all());
    f.ctl
        .run(&["flags", "push", &signed_s])
        .unwrap()
        .assert_code(0);
    let a = ofrep::evaluate(f.ofrep, "new-checkout", json!({"targetingKey": "u-1"})).unwrap();
    assert_eq!(a.body["value"], json!(true), "{}", a.body);

    // The kill switch needs no quorum.
    f.kill("new-checkout").assert_code(0);
    let a = ofrep::evaluate(f.ofrep, "new-checkout", json!({"targetingKey": "u-1"})).unwrap();
    assert_eq!(a.body["reason"], json!("DISABLED"), "{}", a.body);

    let changed = audit_events(&f.env, "flags.changed").unwrap();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert_eq!(changed[0]["signers"], json!(["flagger", "flagger-2"]));
    assert_eq!(changed[1]["signers"], json!(["killer"]));
}

#[test]
fn a_rollback_with_restore_flags_puts_back_the_set_that_went_with_the_release() {
    let f = Flags::new();
    let deployer = Flags::key(&f.env.keys.deployer);
    let rollback = |extra: &[&str]| {
        let mut args = vec!["rollback", "--key", &deployer, "--app", "web", "--json"];
        args.extend_from_slice(extra);
        f.ctl.run(&args).unwrap()
    };
    let reason = |out: &gantry_tests::Output| {
        out.finished().unwrap_or_default()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // The sample app's page starts with its banner (then the flag it evaluates).
    let runs = |version: &str| {
        let want = format!("web {version} instance 0\n");
        let port = f.env.port(0);
        wait_until(
            Duration::from_secs(10),
            &format!("{want:?} on {port}"),
            || gantry_tests::banner(port).is_some_and(|b| b.starts_with(&want)),
        )
        .unwrap();
    };
    let served = |want: &Value, what: &str| {
        wait_until(Duration::from_secs(5), what, || &f.bulk() == want).unwrap();
    };
    for version in ["1.0.0", "2.0.0"] {
        let artifact = gantry_tests::make_artifact(&f.env, version, "").unwrap();
        crate::deploy(&f.ctl, &f.env, version, &artifact, 1, "20s").assert_code(0);
    }
    // Set A arrives while 2.0.0 runs: no set went with 1.0.0.
    let a = f.write("a.json", &flag_set(0));
    f.push(&f.keys.flagger, &a, &[]).assert_code(0);
    let with_a = f.bulk();
    let out = rollback(&["--restore-flags"]);
    out.assert_code(1);
    assert!(
        reason(&out).contains("no flag set of app web is recorded for release 1.0.0"),
        "{}",
        out.all()
    );
    assert!(
        reason(&out).contains("nothing was changed"),
        "{}",
        out.all()
    );
    runs("2.0.0");
    assert_eq!(f.bulk(), with_a);

    // A plain rollback leaves the flags alone, and records A as 2.0.0's set.
    rollback(&[]).assert_code(0);
    runs("1.0.0");
    assert_eq!(f.bulk(), with_a);
    let b = f.write("b.json", &flag_set(100));
    f.push(&f.keys.flagger, &b, &[]).assert_code(0);
    let with_b = f.bulk();
    assert_ne!(with_a, with_b);

    // Back to 2.0.0 with its set A (version 1), while B (version 2) stays the floor.
    let out = rollback(&["--restore-flags"]);
    out.assert_code(0);
    assert!(
        reason(&out).contains("flag set version 1 of release 2.0.0 is in force"),
        "{}",
        out.all()
    );
    runs("2.0.0");
    served(&with_a, "the OFREP endpoint serves set A again");
    let job = out.finished().unwrap()["job_id"].clone();
    let restored = audit_events(&f.env, "flags.restored").unwrap();
    assert_eq!(restored.len(), 1, "{restored:?}");
    let entry = &restored[0];
    assert_eq!(entry["job_id"], job, "{entry}");
    assert_eq!(entry["release"], "2.0.0", "{entry}");
    assert_eq!(entry["version"], 1, "{entry}");
    assert_eq!(entry["previous_version"], 2, "{entry}");
    assert_eq!(entry["floor"], 2, "{entry}");
    assert_eq!(entry["signers"], json!(["flagger"]), "{entry}");
    assert_eq!(entry["changed"], json!(["new-checkout"]), "{entry}");

    // The next push is above the floor: the CLI picks version 3; a version 2 is refused.
    let c = f.write("c.json", &flag_set(50));
    let stale = f.env.root.join("c-2.flags");
    f.sign(&f.keys.flagger, "2", &c, &stale, &[]);
    let out = f
        .ctl
        .run(&["flags", "push", &stale.to_string_lossy()])
        .unwrap();
    assert_refused(&f, &out, "older_version", &with_a);
    assert!(
        out.stderr.contains("highest this agent admitted"),
        "{}",
        out.all()
    );

    // And forward again: 1.0.0 comes back with B, the set it ran with.
    let out = rollback(&["--restore-flags"]);
    out.assert_code(0);
    runs("1.0.0");
    served(&with_b, "the OFREP endpoint serves set B again");
    f.push(&f.keys.flagger, &c, &[]).assert_code(0);
    let show = f
        .ctl
        .run(&["flags", "show", "--app", "web", "--json"])
        .unwrap();
    show.assert_code(0);
    let shown: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(shown["version"], 3, "{shown}");
    f.ctl.run(&["audit", "verify"]).unwrap().assert_code(0);
}

/// A set whose `new-checkout` may be released by a canary (`canaryVariant`): signed, it is on
/// only for staff; `page-size` names no canary variant.
pub(crate) fn canary_set() -> Value {
    json!({
        "flags": {
            "new-checkout": {"state": "ENABLED", "defaultVariant": "off",
                "variants": {"on": true, "off": false},
                "targeting": {"if": [{"ends_with": [{"var": "email"}, "@corp.example"]}, "on", null]},
                "metadata": {"canaryVariant": "on"}},
            "page-size": {"state": "ENABLED", "defaultVariant": "ten", "variants": {"ten": 10, "fifty": 50}}
        }
    })
}

/// `gantry flags push` of [`canary_set`] with `flagger`, which must succeed.
pub(crate) fn push_canary_set(ctl: &Controller, env: &TestEnv, flagger: &gantry_tests::KeyPair) {
    let set = env.root.join("canary.json");
    fs::write(&set, serde_json::to_vec(&canary_set()).unwrap()).unwrap();
    let key = Flags::key(flagger);
    let file = set.to_string_lossy();
    ctl.run(&["flags", "push", "--key", &key, "--app", "web", &file])
        .unwrap()
        .assert_code(0);
}

/// How many of 200 users `new-checkout` is on for; `None` while the endpoint does not answer.
pub(crate) fn checkout_on(ofrep: SocketAddr) -> Option<usize> {
    let mut on = 0;
    for u in 0..200 {
        let context = json!({"targetingKey": format!("user-{u}")});
        let answer = ofrep::evaluate(ofrep, "new-checkout", context).ok()?;
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.body["value"] == json!(true) {
            on += 1;
        }
    }
    Some(on)
}

/// Waits until `new-checkout` is on for a count of the 200 users that `ok` accepts.
#[track_caller]
fn wait_checkout_on(ofrep: SocketAddr, what: &str, ok: impl Fn(usize) -> bool) {
    let mut last = None;
    wait_until(Duration::from_secs(10), what, || {
        last = checkout_on(ofrep);
        last.is_some_and(&ok)
    })
    .unwrap_or_else(|e| panic!("{e}: on for {last:?} of 200"));
}

/// `gantry deploy` args of a 2-instance canary of `version` releasing `new-checkout`.
fn canary_of(rig: &crate::zero_downtime::Rig, version: &str, steps: &[&str]) -> Vec<String> {
    let artifact = make_artifact(&rig.env, version, "").unwrap();
    let mut flags = vec!["--strategy", "canary", "--canary-flag", "new-checkout"];
    for s in steps {
        flags.extend(["--step", s]);
    }
    flags.extend(["--analysis-interval", "300ms", "--drain-timeout", "2s"]);
    rig.deploy_args(version, &artifact, 2, &flags, "20s")
}

/// `splits` of `gantry flags show --app web --json`.
fn shown_splits(rig: &crate::zero_downtime::Rig) -> Value {
    let show = rig
        .ctl
        .run(&["flags", "show", "--app", "web", "--json"])
        .unwrap();
    show.assert_code(0);
    serde_json::from_str::<Value>(&show.stdout).unwrap()["splits"].clone()
}

#[test]
fn a_canary_step_sets_the_flags_percentage_and_an_abort_or_a_rollback_puts_the_signed_set_back() {
    use crate::zero_downtime::{Rig, assert_outcome, job_id};
    let (mut rig, (keys, ofrep)) =
        Rig::with_v1_on(gantry_tests::Options::front_door(4), 2, |env| {
            ofrep::enable_flags(env).unwrap()
        });
    push_canary_set(&rig.ctl, &rig.env, &keys.flagger);
    assert_eq!(
        checkout_on(ofrep),
        Some(0),
        "signed, it is on only for staff"
    );
    let weights = |env: &TestEnv| audit_events(env, "flags.canary_weight").unwrap();

    // A flag that names no canary variant: refused before anything changes.
    let artifact = make_artifact(&rig.env, "1.5.0", "").unwrap();
    let out = rig.deploy(
        "1.5.0",
        &artifact,
        2,
        &["--strategy", "canary", "--canary-flag", "page-size"],
        "20s",
    );
    assert_outcome(&rig, &out, 1, "failed");
    let reason = out.finished().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("the canary cannot release flag \"page-size\", so nothing was changed")
            && reason.contains("names no canary variant"),
        "{reason}"
    );
    assert_eq!(rig.app_status()["version"], "1.0.0");
    assert!(weights(&rig.env).is_empty());

    // Paused at its first step, the canary serves the flag to 20% of users; an abort puts the
    // signed set back.
    let args = canary_of(&rig, "2.0.0", &["30:promote:flag=20", "100:0s"]);
    let ctl = rig.ctl.clone();
    let deploy = std::thread::spawn(move || ctl.run(&crate::strs(&args)).unwrap());
    wait_checkout_on(ofrep, "the first step serves the flag to about 20%", |n| {
        (15..=70).contains(&n)
    });
    rig.action("abort", &["--json"]).assert_code(0);
    let out = deploy.join().unwrap();
    assert_outcome(&rig, &out, 1, "rolled_back");
    wait_checkout_on(ofrep, "the abort puts the signed set back", |n| n == 0);
    let w = weights(&rig.env);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0]["job_id"], job_id(&out), "{}", w[0]);
    assert_eq!(w[0]["percent"], 20, "{}", w[0]);
    assert_eq!(w[0]["variant"], "on", "{}", w[0]);
    assert_eq!(w[0]["default_variant"], "off", "{}", w[0]);
    assert_eq!(w[0]["served"], true, "{}", w[0]);
    assert_eq!(w[1]["percent"], Value::Null, "{}", w[1]);
    assert_eq!(w[1]["previous_percent"], 20, "{}", w[1]);
    assert!(
        w[1]["why"].as_str().unwrap().starts_with("canary aborted"),
        "{}",
        w[1]
    );

    // A canary that succeeds leaves the flag on for everyone, across a kill -9 of the agent.
    let args = canary_of(&rig, "2.0.0", &["50:0s:flag=50"]);
    let out = rig.ctl.run(&crate::strs(&args)).unwrap();
    assert_outcome(&rig, &out, 0, "succeeded");
    assert_eq!(checkout_on(ofrep), Some(200));
    let kept = weights(&rig.env);
    let percents: Vec<&Value> = kept[2..].iter().map(|e| &e["percent"]).collect();
    assert_eq!(percents, [&json!(50), &json!(100), &json!(100)], "{kept:?}");
    assert_eq!(kept[4]["why"], "kept in force: the canary succeeded");
    rig.agent.kill_9().unwrap();
    rig.restart_agent();
    wait_checkout_on(ofrep, "the kept split is served after a restart", |n| {
        n == 200
    });
    let show = rig.ctl.run(&["flags", "show", "--app", "web"]).unwrap();
    show.assert_code(0);
    assert!(
        show.stdout.contains(&format!(
            "canary split: new-checkout serves its canary variant to 100% of users (kept by job {}, release 2.0.0)\n",
            job_id(&out)
        )),
        "{}",
        show.all()
    );

    // Rolling back from the release whose canary kept the split ends it.
    let out = rig.action("rollback", &["--json"]);
    out.assert_code(0);
    let reason = out.finished().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(
            "the canary split of flag(s) new-checkout that went with release 2.0.0 ended"
        ),
        "{reason}"
    );
    wait_checkout_on(ofrep, "the rollback puts the signed set back", |n| n == 0);
    assert_eq!(shown_splits(&rig), json!([]));
    let dropped = weights(&rig.env).pop().unwrap();
    assert_eq!(dropped["percent"], Value::Null, "{dropped}");
    assert_eq!(
        dropped["why"], "rolled back from release 2.0.0",
        "{dropped}"
    );

    // The kill switch wins over a running canary: off for everyone, the step's percent is
    // recorded but not served.
    let args = canary_of(&rig, "3.0.0", &["40:promote", "100:0s"]);
    let ctl = rig.ctl.clone();
    let deploy = std::thread::spawn(move || ctl.run(&crate::strs(&args)).unwrap());
    wait_checkout_on(ofrep, "the step serves the flag to about 40%", |n| {
        (50..=120).contains(&n)
    });
    let killer = Flags::key(&keys.killer);
    rig.ctl
        .run(&[
            "flags",
            "kill",
            "--key",
            &killer,
            "--app",
            "web",
            "new-checkout",
        ])
        .unwrap()
        .assert_code(0);
    wait_checkout_on(ofrep, "the kill switch turns it off", |n| n == 0);
    rig.action("promote", &["--json"]).assert_code(0);
    let out = deploy.join().unwrap();
    assert_outcome(&rig, &out, 0, "succeeded");
    assert_eq!(checkout_on(ofrep), Some(0));
    let split = &shown_splits(&rig)[0];
    assert_eq!(
        (
            &split["key"],
            &split["percent"],
            &split["kept"],
            &split["served"]
        ),
        (
            &json!("new-checkout"),
            &json!(100),
            &json!(true),
            &json!(false)
        ),
        "{split}"
    );
    let promoted = weights(&rig.env);
    let last = promoted
        .iter()
        .rev()
        .find(|e| e["why"] == "promoted")
        .unwrap();
    assert_eq!(last["percent"], 100, "{last}");
    assert_eq!(last["served"], false, "{last}");
    rig.ctl.run(&["audit", "verify"]).unwrap().assert_code(0);
}
