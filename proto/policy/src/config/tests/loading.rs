//! Loading the agent's TOML: the examples, every problem reported at once, users and root.

use super::*;

#[test]
fn example_config_loads() {
    let dir = fixture();
    let path = write(dir.path(), EXAMPLE);
    let cfg = load(&path, &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.agent_id, "agent-1");
    assert_eq!(cfg.listen.unwrap().to_string(), "127.0.0.1:7443");
    assert_eq!(cfg.data_dir, Path::new("/var/lib/gantry"));
    assert_eq!(cfg.tls.ca, dir.path().join("pki/ca.pem"));
    assert_eq!(cfg.placement.environment.as_deref(), Some("production"));
    assert_eq!(
        cfg.placement.labels,
        BTreeMap::from([
            ("region".to_owned(), "eu-west".to_owned()),
            ("ring".to_owned(), "2".to_owned())
        ])
    );
    // A relative data_dir resolves against the config's directory, like every other path.
    let other = fixture();
    let relative = EXAMPLE.replace("data_dir = \"/var/lib/gantry\"", "data_dir = \"data\"");
    let relative = load(&write(other.path(), &relative), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(relative.data_dir, other.path().join("data"));
    assert_eq!(cfg.limits.max_validity, Duration::from_secs(3600));
    assert_eq!(cfg.limits.clock_skew, Duration::from_secs(30));
    assert_eq!(cfg.limits.client_rejections_burst, 100);
    assert_eq!(cfg.limits.client_rejections_per_second, 10);
    assert_eq!(cfg.limits.client_connections, 64);
    assert_eq!(cfg.limits.max_unpacked_bytes, 2 << 30);
    assert_eq!(
        cfg.limits.max_unpacked_bytes,
        raw::RawLimits::default().max_unpacked_bytes,
        "the example documents the default"
    );
    assert_eq!(cfg.audit.checkpoint_interval, Duration::from_secs(60));
    assert_eq!(cfg.digest, Sha256Hex::of(EXAMPLE.as_bytes()));
    let names: Vec<&str> = cfg.policy.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["ci", "release-manager"]);
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    assert_eq!(web.ports, 18000..=18009);
    assert_eq!(web.port_of(3), Some(18003));
    assert_eq!(web.port_of(10), None);
    assert_eq!(web.approvals, 1);
    assert!(matches!(&web.run_as, RunAs::User { name, uid: 65534, .. } if name == "nobody"));
    assert_eq!(
        web.actions_for(&cfg.policy.keys[0].roles),
        [
            Action::Deploy,
            Action::Rollback,
            Action::Restart,
            Action::Stop,
            Action::Promote,
            Action::Abort
        ]
    );
    assert_eq!(web.actions_for(&cfg.policy.keys[1].roles), [Action::Abort]);
}

const BAD: &str = r#"
agent_id = "Agent_1"
listen = "nowhere"
data_dir = "data"

[tls]
ca = "pki/missing-ca.pem"
cert = "pki/agent.pem"
key = "pki/agent.key"
client_fingerprints = ["abc"]

[audit]
signing_key = "keys/missing.key"
checkpoint_interval = "soon"

[limits]
max_validity = "0s"
max_job_bytes = 0
client_rejections_per_second = 0

[[keys]]
name = "ci"
public_key = "keys/ci.pub"
roles = ["deployer"]

[[keys]]
name = "ci"
public_key = "keys/garbage.pub"
roles = ["deployer"]

[[keys]]
name = "other"
public_key = "keys/ci.pub"
roles = ["deployer"]

[apps.web]
user = "no-such-user-gantry"
ports = "18000-18003"
max_instances = 5

[apps.web.allow]
deploy = ["deployr"]
deplyo = ["deployer"]

[apps."../etc"]
user = "nobody"
ports = "18002-18010"

[apps.api]
user = "root"
ports = "19010-19000"

[apps.db]
user = "nobody"
ports = "20000-20001"
approvals = 1
"#;

#[test]
fn every_problem_is_reported_at_once_with_its_entry() {
    let dir = fixture();
    let path = write(dir.path(), BAD);
    let errs = load(&path, &root()).unwrap_err();
    let expect = [
        ("agent_id", "not a DNS name"),
        ("listen", "not an IP:port"),
        ("tls.ca", "missing-ca.pem"),
        ("tls.client_fingerprints[0]", "not a SHA-256"),
        ("audit.signing_key", "missing.key"),
        ("audit.checkpoint_interval", "not a duration"),
        ("limits.max_validity", "more than 0"),
        ("limits.max_job_bytes", "more than 0"),
        ("limits.client_rejections_per_second", "more than 0"),
        ("keys[1].name", "duplicate name \"ci\""),
        ("keys[1].public_key", "garbage.pub"),
        ("keys[2].public_key", "same public key as keys[0]"),
        ("apps.web.user", "not found"),
        ("apps.web.ports", "overlaps apps.../etc.ports"),
        ("apps.web.max_instances", "more than the 4 port(s)"),
        (
            "apps.web.allow.deploy",
            "role \"deployr\" is held by no key",
        ),
        ("apps.web.allow.deplyo", "unknown action"),
        ("apps.../etc", "invalid app name"),
        ("apps.api.user", "allow_root"),
        ("apps.api.ports", "is empty"),
        ("apps.db.approvals", "no job could ever be admitted"),
    ];
    for (entry, needle) in expect {
        let p = errs
            .for_entry(entry)
            .unwrap_or_else(|| panic!("no problem for {entry}: {errs}"));
        assert!(
            p.message.contains(needle),
            "{entry}: {:?} lacks {needle:?}",
            p.message
        );
        assert_eq!(p.file, path);
    }
    assert_eq!(errs.0.len(), expect.len(), "{errs}");
    let shown = errs.to_string();
    assert!(shown.starts_with(&format!(
        "{} has {} problems:",
        path.display(),
        expect.len()
    )));
    assert!(
        shown.contains("\n  apps.web.ports: 18000-18003 overlaps"),
        "{shown}"
    );
}

#[test]
fn a_non_root_agent_runs_apps_only_as_itself() {
    let dir = fixture();
    let own = EXAMPLE.replace("approvals = 1", "approvals = 0");
    let path = write(dir.path(), &own);
    let cfg = load(&path, &nobody()).unwrap_or_else(|e| panic!("{e}"));
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    assert_eq!(
        web.run_as,
        RunAs::CurrentUser {
            uid: 65534,
            gid: 65534
        }
    );

    let other = EXAMPLE
        .replace("user = \"nobody\"", "user = \"root\"\nallow_root = true")
        .replace("allow_root = false ", "#");
    let path = write(dir.path(), &other);
    let errs = load(&path, &nobody()).unwrap_err();
    let p = errs.for_entry("apps.web.user").unwrap();
    assert!(
        p.message
            .starts_with("app web: user root needs the agent to run as root"),
        "{}",
        p.message
    );
}

#[test]
fn j5_a_non_root_agent_with_the_units_capabilities_runs_apps_as_their_own_users() {
    let dir = fixture();
    let path = write(dir.path(), EXAMPLE);
    let cfg = load(&path, &unit_agent()).unwrap_or_else(|e| panic!("{e}"));
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert!(
        matches!(
            &web.run_as,
            RunAs::User { name, uid, gid, groups, by: SwitchedBy::Capabilities }
                if name == "nobody"
                    && *uid == nobody.uid.as_raw()
                    && *gid == nobody.gid.as_raw()
                    && groups.contains(gid)
        ),
        "{:?}",
        web.run_as
    );
    let text = render_policy(&cfg, false);
    assert!(
        text.contains("switched to by the agent's CAP_SETUID and CAP_SETGID"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["apps"][0]["run_as"]["via"], "capabilities");

    // Even with the capabilities, uid 0 needs a root agent: a non-root one switching to root
    // would hand its bounding set to the app.
    let text = EXAMPLE
        .replace("user = \"nobody\"", "user = \"root\"")
        .replace("allow_root = false", "allow_root = true");
    let errs = load(&write(dir.path(), &text), &unit_agent()).unwrap_err();
    let p = errs.for_entry("apps.web.user").unwrap();
    assert_eq!(
        p.message,
        "app web: user root needs the agent to run as root (the agent runs as gantry, uid 4242)"
    );
}

#[test]
fn j5_without_the_capabilities_the_refusal_names_the_missing_ones_and_the_unit_lines() {
    let dir = fixture();
    let path = write(dir.path(), EXAMPLE);
    let mut host = unit_agent();
    host.cap_eff = 0x60; // CAP_KILL and CAP_SETGID only
    let errs = load(&path, &host).unwrap_err();
    let p = errs.for_entry("apps.web.user").unwrap();
    assert_eq!(
        p.message,
        "app web: user nobody needs the agent to run as root or to hold CAP_SETUID CAP_SETGID \
         CAP_KILL (the agent runs as gantry, uid 4242, without CAP_SETUID); the systemd unit \
         grants them with CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_KILL and \
         AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL, or set user = \"gantry\" to run \
         the app as the agent itself"
    );
}

#[test]
fn root_is_allowed_only_with_allow_root() {
    let dir = fixture();
    let text = EXAMPLE.replace("user = \"nobody\"", "user = \"root\"");
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    assert!(
        errs.for_entry("apps.web.user")
            .unwrap()
            .message
            .contains("allow_root = true")
    );
    let text = text.replace("allow_root = false", "allow_root = true");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    assert_eq!(web.run_as.uid(), 0);
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let dir = fixture();
    let text = EXAMPLE.replace("max_instances = 4", "max_instances = 4\nmax_instancs = 5");
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    let line = text
        .lines()
        .position(|l| l.starts_with("max_instancs"))
        .unwrap()
        + 1;
    assert!(
        errs.0[0].entry.starts_with(&format!("line {line},")),
        "{errs}"
    );
    assert!(errs.0[0].message.contains("max_instancs"), "{errs}");
}

#[test]
fn an_unreadable_file_is_one_problem() {
    let errs = Config::load(Path::new("/nonexistent/gantry/agent.toml")).unwrap_err();
    assert_eq!(errs.0.len(), 1);
    assert!(
        errs.to_string().contains("/nonexistent/gantry/agent.toml"),
        "{errs}"
    );
}

fn tomlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("agent_id = \"a\"\n".to_owned()),
        Just("[tls]\n".to_owned()),
        Just("[apps.web]\n".to_owned()),
        Just("[[keys]]\n".to_owned()),
        Just("ports = \"1-0\"\n".to_owned()),
        Just("max_validity = \"99999999999999999999s\"\n".to_owned()),
        "[a-z_.\\[\\]\"=0-9 -]{0,12}\n",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn config_parsing_never_panics(text in tomlish()) {
        let _ = from_bytes(Path::new("/nonexistent/agent.toml"), text.as_bytes(), &root());
    }

    #[test]
    fn mutated_example_never_panics(cut in 0..EXAMPLE.len(), insert in "[\\[\\]\"=0-9a-z\n-]{0,4}") {
        let mut text = EXAMPLE.to_owned();
        let at = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        let _ = from_bytes(Path::new("/nonexistent/agent.toml"), text.as_bytes(), &root());
    }
}

#[test]
fn the_commented_examples_load() {
    // Uncommenting the example's listen and nginx lines gives a valid config.
    let dir = fixture();
    let text = EXAMPLE
        .replace(
            "# listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"",
        )
        .replace("# [apps.web.nginx]", "[apps.web.nginx]")
        .replace("# upstream_file", "upstream_file")
        .replace("# reload_command", "reload_command")
        .replace("# check_command", "check_command")
        .replace("# pid_file", "pid_file");
    assert_ne!(text, EXAMPLE);
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let web = web_of(&cfg);
    assert_eq!(web.listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(
        web.router,
        RouterConfig::Nginx {
            upstream_file: "/etc/nginx/gantry/web.conf".into(),
            reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
            check_command: Some(vec!["nginx".into(), "-t".into(), "-q".into()]),
            pid_file: Some("/run/nginx.pid".into()),
        }
    );
}

/// Issue: the unit, the example config and the README disagreed (a relative data_dir resolved
/// under /etc/gantry, which the unit makes read-only). The example's paths must be where the
/// unit lets the agent read and write.
#[test]
fn the_example_config_agrees_with_the_systemd_unit() {
    const UNIT: &str = include_str!("../../../../../deploy/gantry-agent.service");
    let directive = |name: &str| -> Vec<&str> {
        UNIT.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(directive("StateDirectory"), ["gantry"]);
    assert_eq!(directive("ConfigurationDirectory"), ["gantry"]);
    assert_eq!(directive("ProtectSystem"), ["strict"]);
    assert_eq!(directive("Type"), ["notify"]);
    let exec = directive("ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(
        exec[0].ends_with(" run --config /etc/gantry/agent.toml"),
        "{exec:?}"
    );
    // The fixture dir stands in for /etc/gantry: the example's files relative to it.
    let dir = fixture();
    let etc = dir.path().to_owned();
    let cfg = load(&write(&etc, EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    // Writable: only the state directory.
    assert_eq!(cfg.data_dir, Path::new("/var/lib/gantry"));
    // Read-only is fine for the rest, and it must all sit in the configuration directory.
    for path in [
        &cfg.tls.ca,
        &cfg.tls.cert,
        &cfg.tls.key,
        &cfg.audit.signing_key,
    ] {
        assert!(
            path.starts_with(&etc),
            "{} is outside /etc/gantry",
            path.display()
        );
    }
    // The unit's instructions name the two private keys the example uses.
    for key in ["/etc/gantry/pki/agent.key", "/etc/gantry/keys/agent.key"] {
        assert!(UNIT.contains(key), "the unit's header does not name {key}");
    }
    assert!(cfg.tls.key.ends_with("pki/agent.key"));
    assert!(cfg.audit.signing_key.ends_with("keys/agent.key"));
}

#[test]
fn a_built_config_is_what_the_loader_reads() {
    let dir = fixture();
    let mut raw = raw::RawConfig::new("agent-1")
        .client_name("controller")
        .key("ci", "keys/ci.pub", &["deployer"])
        .key("rm", "keys/release-manager.pub", &["approver"])
        .app(
            "web",
            raw::RawApp::new("nobody", "18000-18009")
                .allow(Action::Deploy, &["deployer"])
                .allow(Action::Rollback, &["deployer", "approver"]),
        );
    raw.limits.max_validity = "2h".to_owned();
    if let Some(app) = raw.apps.get_mut("web") {
        app.listen = Some("127.0.0.1:18080".to_owned());
        app.max_instances = 2;
        app.approvals = 1;
    }
    let text = raw.to_toml().unwrap();
    let back: raw::RawConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, raw, "{text}");

    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(cfg.agent_id, "agent-1");
    assert_eq!(
        cfg.limits.max_validity,
        std::time::Duration::from_secs(7200)
    );
    assert_eq!(cfg.tls.client_names, ["controller"]);
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    assert_eq!(web.approvals, 1);
    assert_eq!(web.router, RouterConfig::FrontDoor);
    assert_eq!(
        web.roles_for(Action::Rollback)
            .into_iter()
            .collect::<Vec<_>>(),
        ["approver", "deployer"]
    );
    assert!(web.roles_for(Action::Stop).is_empty());
}

#[test]
fn a_relative_config_path_gives_absolute_paths_throughout() {
    // `gantry-agent run --config try/agent.toml`: an instance is spawned in its release
    // directory, where a path relative to the agent's working directory no longer resolves.
    let cwd = std::env::current_dir().unwrap();
    let dir = tempfile::tempdir_in(&cwd).unwrap();
    let fix = fixture();
    for sub in ["pki", "keys"] {
        fs::rename(fix.path().join(sub), dir.path().join(sub)).unwrap();
    }
    let text = EXAMPLE.replace("data_dir = \"/var/lib/gantry\"", "data_dir = \"data\"");
    let path = write(dir.path(), &text);
    let relative = path.strip_prefix(&cwd).unwrap();
    assert!(relative.is_relative());
    let cfg = load(relative, &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.path, path);
    assert_eq!(cfg.data_dir, dir.path().join("data"));
    for p in [
        &cfg.tls.ca,
        &cfg.tls.cert,
        &cfg.tls.key,
        &cfg.audit.signing_key,
    ] {
        assert!(p.is_absolute(), "{}", p.display());
    }
    assert!(cfg.policy.keys.iter().all(|k| k.file.is_absolute()));
}

#[test]
fn environment_and_labels_outside_the_allowed_characters_are_refused_by_entry() {
    let dir = fixture();
    let text = EXAMPLE
        .replace("environment = \"production\"", "environment = \"prod env\"")
        .replace("ring = \"2\"", "ring = \"\"\n\"-bad\" = \"x\"");
    let errors = load(&write(dir.path(), &text), &root()).expect_err("refused");
    let text = errors.to_string();
    assert!(
        text.contains("environment: \"prod env\" may hold only ASCII letters"),
        "{text}"
    );
    assert!(
        text.contains("labels.ring: the value \"\" must be 1 to 63 characters long"),
        "{text}"
    );
    assert!(
        text.contains("labels.-bad: the name \"-bad\" must start with a letter or a digit"),
        "{text}"
    );
}

#[test]
fn a_config_without_environment_or_labels_has_an_empty_placement() {
    let dir = fixture();
    let text = EXAMPLE
        .replace("environment = \"production\"", "")
        .replace("[labels]\nring = \"2\"\nregion = \"eu-west\"", "");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.placement, Placement::default());
}

#[test]
fn dispatch_roles_and_fleet_validities_load_and_unknown_roles_are_refused() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(web_of(&cfg).dispatch.is_empty());
    assert_eq!(
        cfg.limits.max_plan_validity,
        Duration::from_secs(14 * 86_400)
    );
    assert_eq!(cfg.limits.max_dispatch_validity, Duration::from_secs(300));

    let text = EXAMPLE
        .replace(
            "# dispatch = [\"orchestrator\"]",
            "dispatch = [\"approver\"]",
        )
        .replace(
            "max_dispatch_validity = \"5m\"",
            "max_dispatch_validity = \"90s\"",
        );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        web_of(&cfg).dispatch,
        BTreeSet::from(["approver".to_owned()])
    );
    assert!(web_of(&cfg).roles_for(Action::Deploy).len() == 1);
    assert_eq!(cfg.limits.max_dispatch_validity, Duration::from_secs(90));

    let text = EXAMPLE.replace(
        "# dispatch = [\"orchestrator\"]",
        "dispatch = [\"orchestrator\"]",
    );
    let err = load(&write(dir.path(), &text), &root()).unwrap_err();
    let problem = err
        .for_entry("apps.web.allow.dispatch")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(problem.message.contains("held by no key"), "{problem}");
}

#[test]
fn j9_a_store_quota_below_the_largest_artifact_is_refused_and_the_defaults_hold() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits.max_store_bytes, 8 << 30);
    assert_eq!(cfg.limits.unused_artifact_ttl, Duration::from_secs(3600));
    let text = EXAMPLE.replace("max_store_bytes = 8589934592", "max_store_bytes = 1000");
    assert_ne!(text, EXAMPLE, "the example documents max_store_bytes");
    let errors = load(&write(dir.path(), &text), &root()).expect_err("refused");
    assert!(
        errors.to_string().contains(
            "limits.max_store_bytes: 1000 is less than limits.max_artifact_bytes (536870912)"
        ),
        "{errors}"
    );
}

#[test]
fn j9_a_client_budget_below_the_largest_artifact_is_refused_and_the_default_holds() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits.max_unused_bytes_per_client, 2 << 30);
    let text = EXAMPLE.replace(
        "max_unused_bytes_per_client = 2147483648",
        "max_unused_bytes_per_client = 536870911",
    );
    assert_ne!(
        text, EXAMPLE,
        "the example documents max_unused_bytes_per_client"
    );
    let errors = load(&write(dir.path(), &text), &root()).expect_err("refused");
    assert!(
        errors.to_string().contains(
            "limits.max_unused_bytes_per_client: 536870911 is less than limits.max_artifact_bytes (536870912)"
        ),
        "{errors}"
    );
    // At the largest artifact exactly is fine.
    let text = EXAMPLE.replace(
        "max_unused_bytes_per_client = 2147483648",
        "max_unused_bytes_per_client = 536870912",
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.limits.max_unused_bytes_per_client, 536_870_912);
}

#[test]
fn j9_instance_limits_default_parse_and_refuse_zero() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        web_of(&cfg).limits,
        InstanceLimits {
            max_open_files: 65_536,
            max_processes: 4096,
            max_memory: None,
        }
    );
    let with =
        |table: &str| EXAMPLE.replace("[apps.web.allow]", &format!("{table}\n[apps.web.allow]"));
    let text = with("[apps.web.limits]\nmax_processes = 64\nmax_memory = 1073741824");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        web_of(&cfg).limits,
        InstanceLimits {
            max_open_files: 65_536,
            max_processes: 64,
            max_memory: Some(1 << 30),
        }
    );
    let text = with("[apps.web.limits]\nmax_open_files = 0");
    let errors = load(&write(dir.path(), &text), &root()).expect_err("refused");
    assert!(
        errors
            .to_string()
            .contains("apps.web.limits.max_open_files: must be more than 0"),
        "{errors}"
    );
    let text = with("[apps.web.limits]\nmax_threads = 5");
    assert!(load(&write(dir.path(), &text), &root()).is_err());
}
