//! Routers: the front door (`listen`), nginx, and the ports of two slots.

use super::*;

#[test]
fn without_listen_or_nginx_an_app_has_no_router() {
    let dir = fixture();
    let cfg = load(&write(dir.path(), EXAMPLE), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(web_of(&cfg).listen, None);
    assert_eq!(web_of(&cfg).router, RouterConfig::None);
    assert!(!web_of(&cfg).router.is_some());
}

#[test]
fn listen_gives_the_app_a_front_door() {
    let dir = fixture();
    let text = with_web("listen = \"127.0.0.1:8080\"");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(web_of(&cfg).listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(web_of(&cfg).router, RouterConfig::FrontDoor);
}

#[test]
fn nginx_without_listen_and_relative_upstream_file() {
    let dir = fixture();
    let text = format!(
        "{EXAMPLE}\n[apps.web.nginx]\nupstream_file = \"nginx/web.conf\"\n\
         reload_command = [\"/usr/sbin/nginx\", \"-s\", \"reload\"]\n"
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    let web = web_of(&cfg);
    assert_eq!(web.listen, None);
    assert_eq!(
        web.router,
        RouterConfig::Nginx {
            upstream_file: dir.path().join("nginx/web.conf"),
            reload_command: vec!["/usr/sbin/nginx".into(), "-s".into(), "reload".into()],
            check_command: None,
            pid_file: None,
        }
    );
    assert_eq!(web.router.kind(), "nginx");
}

#[test]
fn nginx_commands_must_not_be_empty() {
    let dir = fixture();
    let text = format!(
        "{EXAMPLE}\n[apps.web.nginx]\nupstream_file = \"\"\nreload_command = []\n\
         check_command = [\"\"]\n"
    );
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    for entry in [
        "apps.web.nginx.upstream_file",
        "apps.web.nginx.reload_command",
        "apps.web.nginx.check_command",
    ] {
        assert!(errs.for_entry(entry).is_some(), "{entry}: {errs}");
    }
    assert!(
        errs.for_entry("apps.web.nginx.reload_command")
            .unwrap()
            .message
            .contains("is empty"),
        "{errs}"
    );
    // Unknown nginx keys are refused too.
    let text = format!(
        "{EXAMPLE}\n[apps.web.nginx]\nupstream_file = \"x\"\nreload_command = [\"nginx\"]\n\
         reload = true\n"
    );
    assert!(load(&write(dir.path(), &text), &root()).is_err());
}

#[test]
fn a_routed_app_needs_ports_for_two_slots() {
    let dir = fixture();
    // 10 ports hold two slots of 4 but not of 6.
    let text =
        with_web("listen = \"127.0.0.1:8080\"").replace("max_instances = 4", "max_instances = 6");
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    let p = errs
        .for_entry("apps.web.ports")
        .unwrap_or_else(|| panic!("{errs}"));
    assert!(
        p.message.contains("2 x max_instances = 12") && p.message.contains("blue and green"),
        "{errs}"
    );
    assert_eq!(errs.0.len(), 1, "{errs}");
    // Without a router, six instances in ten ports are fine.
    let text = EXAMPLE.replace("max_instances = 4", "max_instances = 6");
    load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    // Nginx counts as a router.
    let text = format!(
        "{text}\n[apps.web.nginx]\nupstream_file = \"u.conf\"\nreload_command = [\"nginx\"]\n"
    );
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    assert!(errs.for_entry("apps.web.ports").is_some(), "{errs}");
}

#[test]
fn listen_must_be_an_address_of_its_own() {
    let dir = fixture();
    let cases = [
        ("listen = \"nowhere\"", "is not an IP:port address"),
        ("listen = \"127.0.0.1:0\"", "fixed port"),
        (
            "listen = \"127.0.0.1:18003\"",
            "inside apps.web.ports 18000-18009",
        ),
        (
            "listen = \"127.0.0.1:7443\"",
            "the agent's own listen address",
        ),
        (
            "listen = \"0.0.0.0:7443\"",
            "the agent's own listen address",
        ),
    ];
    for (line, says) in cases {
        let errs = load(&write(dir.path(), &with_web(line)), &root()).unwrap_err();
        let p = errs
            .for_entry("apps.web.listen")
            .unwrap_or_else(|| panic!("{line}: {errs}"));
        assert!(p.message.contains(says), "{line}: {errs}");
    }
    // Another IP on the agent's port does not clash.
    let text = with_web("listen = \"127.0.0.2:7443\"");
    load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn apps_may_not_share_an_address_or_listen_in_each_others_ports() {
    let dir = fixture();
    let api = "\n[apps.api]\nuser = \"nobody\"\nports = \"19000-19009\"\n\
               listen = \"127.0.0.1:8080\"\n";
    let text = format!("{}{api}", with_web("listen = \"127.0.0.1:8080\""));
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    // Apps are checked in name order: web is the second one with 8080.
    let p = errs
        .for_entry("apps.web.listen")
        .unwrap_or_else(|| panic!("{errs}"));
    assert!(p.message.contains("also apps.api.listen"), "{errs}");

    let api = "\n[apps.api]\nuser = \"nobody\"\nports = \"19000-19009\"\n\
               listen = \"127.0.0.1:18005\"\n";
    let text = format!("{}{api}", with_web("listen = \"127.0.0.1:8080\""));
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    let p = errs
        .for_entry("apps.api.listen")
        .unwrap_or_else(|| panic!("{errs}"));
    assert!(p.message.contains("inside apps.web.ports"), "{errs}");

    // Distinct addresses are fine.
    let api = "\n[apps.api]\nuser = \"nobody\"\nports = \"19000-19009\"\n\
               listen = \"127.0.0.1:8081\"\n";
    let text = format!("{}{api}", with_web("listen = \"127.0.0.1:8080\""));
    load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn router_problems_are_reported_with_the_others() {
    let dir = fixture();
    let text = with_web("listen = \"127.0.0.1:18001\"")
        .replace("max_instances = 4", "max_instances = 6")
        .replace("stop_timeout = \"10s\"", "stop_timeout = \"soon\"");
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    for entry in ["apps.web.listen", "apps.web.ports", "apps.web.stop_timeout"] {
        assert!(errs.for_entry(entry).is_some(), "{entry}: {errs}");
    }
}
