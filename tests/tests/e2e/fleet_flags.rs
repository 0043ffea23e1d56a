//! Flag sets across the fleet: a signed set handed to the controller service reaches every
//! agent it targets (and no other), each agent admitting it under its own policy; an agent
//! that is down gets the fleet's kill switch once it is back; a set the agents' policies do
//! not trust is refused by each of them and reported, and the served set stays.

use std::net::SocketAddr;
use std::time::Duration;

use gantry_tests::ofrep;
use gantry_tests::service::Fleet;
use gantry_tests::{audit_events, wait_until};
use serde_json::{Value, json};

use crate::fleet_service::start_service;

/// `new-checkout` for one staff user on an agent's OFREP endpoint: (HTTP status, value,
/// reason); `None` while it does not answer.
fn checkout(ofrep: SocketAddr) -> Option<(u16, Value, Value)> {
    let context = json!({"targetingKey": "u-1", "email": "a@corp.example"});
    let a = ofrep::evaluate(ofrep, "new-checkout", context).ok()?;
    Some((a.status, a.body["value"].clone(), a.body["reason"].clone()))
}

/// `gantry flags show --server ADDR --app web EXTRA...`, which must exit 0.
fn show(svc: &gantry_tests::service::Service, extra: &[&str]) -> gantry_tests::Output {
    let server = svc.addr.to_string();
    let mut args = vec!["flags", "show", "--server", &server, "--app", "web"];
    args.extend_from_slice(extra);
    let out = svc.gantry(&args).unwrap();
    out.assert_code(0);
    out
}

/// [`show`] `--json`, parsed.
fn shown(svc: &gantry_tests::service::Service) -> Value {
    serde_json::from_str(&show(svc, &["--json"]).stdout).unwrap()
}

fn states(v: &Value) -> Vec<(String, String, u64)> {
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["agent_id"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
                d["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_set_handed_to_the_service_reaches_its_targets_and_an_agent_back_from_down_gets_the_kill_switch()
 {
    let mut first_root = None;
    let mut ofreps = Vec::new();
    let mut fleet = Fleet::start_configured(
        &[
            ("web-1", &[("ring", "1")]),
            ("web-2", &[("ring", "1")]),
            ("web-3", &[("ring", "2")]),
        ],
        &mut |env, raw| {
            let (raw, addr) = match &first_root {
                None => {
                    let (raw, _, _, addr) = ofrep::flags_config(env, raw, 0, None)?;
                    first_root = Some(env.root.clone());
                    (raw, addr)
                }
                Some(first) => ofrep::share_flags_config(env, raw, first)?,
            };
            ofreps.push(addr);
            // A fixed port, so that an agent restarted is where the service dials it.
            let mut raw = raw;
            let port = *gantry_tests::probe::free_port_range(1)?.start();
            raw.listen = Some(format!("127.0.0.1:{port}"));
            Ok(raw)
        },
    )
    .unwrap();
    let mut svc = start_service(&fleet, "ctl-1", None, "10s");
    let keys = fleet.env().root.join("keys");
    let key = |name: &str| {
        keys.join(format!("{name}.key"))
            .to_string_lossy()
            .into_owned()
    };
    let set = fleet.env().root.join("fleet-flags.json");
    std::fs::write(
        &set,
        serde_json::to_vec(&json!({"flags": {"new-checkout": {
            "state": "ENABLED", "defaultVariant": "off",
            "variants": {"on": true, "off": false},
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "@corp.example"]}, "on", null]}}}}))
        .unwrap(),
    )
    .unwrap();
    let set = set.to_string_lossy().into_owned();
    // `gantry flags VERB --server ADDR --key NAME.key --app web EXTRA...` against the service.
    let signed = |svc: &gantry_tests::service::Service, verb: &str, name: &str, extra: &[&str]| {
        let (server, key) = (svc.addr.to_string(), key(name));
        let mut args = vec![
            "flags", verb, "--server", &server, "--key", &key, "--app", "web",
        ];
        args.extend_from_slice(extra);
        svc.gantry(&args).unwrap()
    };

    // Through the service, a set must name its agents.
    let out = signed(&svc, "push", "flagger", &[&set]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("--for-agent"), "{}", out.all());

    // Version 1 for ring 1: both of its agents admit it, web-3 is not sent it.
    let out = signed(
        &svc,
        "push",
        "flagger",
        &["--label", "ring=1", "--reason", "launch", &set],
    );
    out.assert_code(0);
    assert!(
        out.stdout
            .contains("flags of web across the fleet: version 1")
            && out.stdout.contains("2 agent(s) targeted: 2 applied"),
        "{}",
        out.all()
    );
    for ofrep in &ofreps[..2] {
        assert_eq!(
            checkout(*ofrep),
            Some((200, json!(true), json!("TARGETING_MATCH")))
        );
    }
    assert_eq!(
        checkout(ofreps[2]).map(|c| c.0),
        Some(404),
        "web-3 has no set"
    );
    for id in ["web-1", "web-2"] {
        let changed = audit_events(&fleet.member(id).env, "flags.changed").unwrap();
        assert_eq!(changed.len(), 1, "{id}: {changed:#?}");
        assert_eq!(changed[0]["version"], 1);
    }
    assert!(
        audit_events(&fleet.member("web-3").env, "flags.changed")
            .unwrap()
            .is_empty()
    );

    // web-2 goes down; the fleet's kill switch reaches web-1 now, web-2 stays pending.
    fleet.members[1].agent.kill_9().unwrap();
    let out = signed(&svc, "kill", "killer", &["new-checkout"]);
    out.assert_code(0);
    assert!(
        out.stdout.contains("version 2") && out.stdout.contains("1 applied, 1 pending"),
        "{}",
        out.all()
    );
    assert_eq!(
        checkout(ofreps[0]),
        Some((200, json!(false), json!("DISABLED")))
    );

    // Back up, it serves its last set, then the service delivers the kill switch.
    let m = &mut fleet.members[1];
    m.agent.restart(&m.env, &[]).unwrap();
    wait_until(Duration::from_secs(30), "web-2 to get version 2", || {
        states(&shown(&svc)).contains(&("web-2".into(), "applied".into(), 2))
    })
    .unwrap_or_else(|e| panic!("{e}\n{:#}\n{}", shown(&svc), svc.log_tail()));
    assert_eq!(
        checkout(ofreps[1]),
        Some((200, json!(false), json!("DISABLED")))
    );
    let v = shown(&svc);
    assert_eq!(v["version"], 2, "{v:#}");
    assert_eq!(v["labels"], json!({"ring": "1"}), "{v:#}");
    assert!(
        v["deliveries"][1]["attempts"].as_u64().unwrap() >= 2,
        "{v:#}"
    );

    // A set signed by a key no agent trusts for flags: each refuses it (exit 3), nothing
    // changes where it is served.
    let out = signed(&svc, "push", "deployer", &["--label", "ring=1", &set]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stdout.contains("2 refused"), "{}", out.all());
    for ofrep in &ofreps[..2] {
        assert_eq!(
            checkout(*ofrep),
            Some((200, json!(false), json!("DISABLED")))
        );
    }

    // An older version is refused by the service itself, naming the versions.
    let out = signed(
        &svc,
        "push",
        "flagger",
        &["--label", "ring=1", "--version", "2", &set],
    );
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains("version 2 is not above version 3"),
        "{}",
        out.all()
    );

    // The service recorded it all, and its store keeps it across a restart.
    let entries = svc.audit_entries().unwrap();
    let of =
        |event: &str| -> Vec<&Value> { entries.iter().filter(|e| e["event"] == event).collect() };
    let published = of("flags.published");
    assert_eq!(published.len(), 3, "{published:#?}");
    assert_eq!(published[0]["by"], "ops-1");
    assert_eq!(published[0]["targets"], json!(["web-1", "web-2"]));
    assert_eq!(of("flags.refused").len(), 1);
    let delivered: Vec<_> = of("flags.delivered")
        .iter()
        .map(|e| {
            (
                e["agent_id"].clone(),
                e["version"].clone(),
                e["state"].clone(),
            )
        })
        .collect();
    assert!(
        delivered.contains(&(json!("web-2"), json!(2), json!("pending")))
            && delivered.contains(&(json!("web-2"), json!(2), json!("applied")))
            && delivered.contains(&(json!("web-1"), json!(3), json!("refused"))),
        "{delivered:#?}"
    );
    svc.kill_9().unwrap();
    svc.restart().unwrap();
    assert_eq!(shown(&svc)["version"], 3);
    let out = show(&svc, &[]);
    assert!(
        out.stdout.contains("2 agent(s) targeted: 2 refused"),
        "{}",
        out.all()
    );
}
