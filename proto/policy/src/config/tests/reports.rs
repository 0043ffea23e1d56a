//! The policy report: keys, rights, users, ports, listen and router.

use super::*;

#[test]
fn policy_report_shows_keys_rights_users_and_ports() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    let text = render_policy(&cfg, false);
    let ci = cfg.policy.keys[0].key_id.to_string();
    assert!(
        text.contains(&format!("ci               {ci}  deployer")),
        "{text}"
    );
    assert!(
        text.contains("runs as        user nobody (uid 65534, gid 65534"),
        "{text}"
    );
    assert!(
        text.contains("ports          18000-18009 (10 port(s)"),
        "{text}"
    );
    assert!(
        text.contains("    release-manager  abort; approve\n"),
        "{text}"
    );
    assert!(text.contains("    promote   deployer\n"), "{text}");
    assert!(
        text.contains(
            "  limits         65536 open files per process, 4096 processes of its user, no limit of address space per process\n"
        ),
        "{text}"
    );
    assert!(text.contains("environment  production\n"), "{text}");
    assert!(
        text.contains("labels       region=eu-west, ring=2\n"),
        "{text}"
    );
    assert!(
        text.contains("CA-signed client certificates named controller"),
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["format"], "gantry.policy.v1");
    assert_eq!(json["environment"], "production");
    assert_eq!(json["labels"]["ring"], "2");
    assert_eq!(json["keys"][0]["key_id"], ci.as_str());
    let web = &json["apps"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["run_as"]["uid"], 65534);
    assert_eq!(web["ports"]["first"], 18000);
    assert_eq!(web["approvals"], 1);
    assert_eq!(web["limits"]["max_open_files"], 65536);
    assert_eq!(web["limits"]["max_processes"], 4096);
    assert!(web["limits"]["max_memory"].is_null());
    assert_eq!(web["allow"]["deploy"][0], "deployer");
    assert_eq!(web["keys"][1]["actions"], serde_json::json!(["abort"]));
    assert_eq!(web["keys"][1]["approves"], true);
    assert_eq!(json["notes"].as_array().map(Vec::len), Some(0));
    // Stable: rendering twice gives the same bytes.
    assert_eq!(render_policy(&cfg, true), render_policy(&cfg, true));
}

#[test]
fn policy_report_shows_listen_and_router() {
    let dir = fixture();
    let text = with_web("listen = \"127.0.0.1:8080\"");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let out = render_policy(&cfg, false);
    assert!(out.contains("  listen         127.0.0.1:8080\n"), "{out}");
    assert!(out.contains("  router         front door"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["apps"][0]["listen"], "127.0.0.1:8080");
    assert_eq!(json["apps"][0]["router"]["kind"], "front-door");

    let text = format!(
        "{text}\n[apps.web.nginx]\nupstream_file = \"/etc/nginx/gantry/web.conf\"\n\
         reload_command = [\"nginx\", \"-s\", \"reload\"]\ncheck_command = [\"nginx\", \"-t\"]\n"
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let out = render_policy(&cfg, false);
    assert!(
        out.contains(
            "  router         nginx: upstream file /etc/nginx/gantry/web.conf, reload \
             `nginx -s reload`, check `nginx -t`, no pid_file (a reload counts once its \
             command returns)\n"
        ),
        "{out}"
    );
    assert!(out.contains("127.0.0.1:8080 (nginx's address"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    let router = &json["apps"][0]["router"];
    assert_eq!(router["kind"], "nginx");
    assert_eq!(router["upstream_file"], "/etc/nginx/gantry/web.conf");
    assert_eq!(
        router["reload_command"],
        serde_json::json!(["nginx", "-s", "reload"])
    );
    assert_eq!(router["check_command"], serde_json::json!(["nginx", "-t"]));
    assert_eq!(router["pid_file"], serde_json::Value::Null);

    // Without a router.
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    let out = render_policy(&cfg, false);
    assert!(out.contains("  listen         -\n"), "{out}");
    assert!(
        out.contains("  router         none (hot deploys only"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["apps"][0]["listen"], serde_json::Value::Null);
    assert_eq!(json["apps"][0]["router"]["kind"], "none");
}

#[test]
fn policy_report_shows_who_signs_plans_and_dispatches() {
    let dir = fixture();
    let text = EXAMPLE.replace(
        "# dispatch = [\"orchestrator\"]",
        "dispatch = [\"approver\"]",
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let text = render_policy(&cfg, false);
    assert!(
        text.contains(
            "    sign plans       deployer (as for a deploy, with the approvals above)\n"
        ),
        "{text}"
    );
    assert!(text.contains("    sign dispatches  approver\n"), "{text}");
    assert!(
        text.contains("    release-manager  abort; approve; dispatch plans\n"),
        "{text}"
    );
    assert!(text.contains("max plan validity"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    let web = &json["apps"][0];
    assert_eq!(web["fleet"]["dispatch"], serde_json::json!(["approver"]));
    assert_eq!(
        web["fleet"]["plan_signers"],
        serde_json::json!(["deployer"])
    );
    assert_eq!(json["limits"]["max_plan_validity_ms"], 14 * 86_400_000_u64);
    let rm = web["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "release-manager")
        .unwrap();
    assert_eq!(rm["dispatches"], true);
    assert_eq!(rm["signs_plans"], false);
}

#[test]
fn j5_policy_says_how_each_apps_user_is_reached_and_flags_the_agents_own() {
    let dir = fixture();
    let path = write(dir.path(), EXAMPLE);
    let cfg = load(&path, &root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        render_policy(&cfg, false).contains("), switched to by the agent running as root\n"),
        "{}",
        render_policy(&cfg, false)
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["apps"][0]["run_as"]["via"], "root");

    // An agent without the capabilities, running its app as itself: said, and flagged.
    let own = EXAMPLE.replace("approvals = 1", "approvals = 0");
    let cfg = load(&write(dir.path(), &own), &nobody()).unwrap_or_else(|e| panic!("{e}"));
    let text = render_policy(&cfg, false);
    assert!(
        text.contains("runs as        user nobody = the agent's own user (uid 65534, gid 65534)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "app web runs as the agent's own user: its instances can read the agent's keys and \
             write its data dir"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["apps"][0]["run_as"]["via"], "agent_user");
    assert!(
        json["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("app web runs as the agent's own user")),
        "{}",
        json["notes"]
    );
}
