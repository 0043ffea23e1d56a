//! Config tests: the example loads, every problem is reported at once with its entry, the
//! user rules, the policy report, and the parser never panics.

use std::fs;
use std::path::{Path, PathBuf};

use gantry_proto::keys::write_keypair;
use proptest::prelude::*;

use super::validate::{HostIdentity, Mode, from_bytes};
use super::*;

fn load(path: &Path, host: &HostIdentity) -> Result<Config, ConfigErrors> {
    super::validate::load(path, host, Mode::Full)
}

const EXAMPLE: &str = include_str!("../../../../deploy/agent.example.toml");

fn root() -> HostIdentity {
    HostIdentity {
        euid: 0,
        egid: 0,
        user: Some("root".to_owned()),
    }
}

fn nobody() -> HostIdentity {
    HostIdentity {
        euid: 65534,
        egid: 65534,
        user: Some("nobody".to_owned()),
    }
}

/// A directory with the files the example config names.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("pki")).unwrap();
    fs::create_dir_all(d.join("keys")).unwrap();
    for f in ["pki/ca.pem", "pki/agent.pem", "pki/agent.key"] {
        fs::write(d.join(f), "placeholder").unwrap();
    }
    for k in ["keys/agent", "keys/ci", "keys/release-manager"] {
        write_keypair(&d.join(k)).unwrap();
    }
    fs::write(d.join("keys/garbage.pub"), "not a key").unwrap();
    dir
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn example_config_loads() {
    let dir = fixture();
    let path = write(dir.path(), EXAMPLE);
    let cfg = load(&path, &root()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.agent_id, "agent-1");
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:7443");
    assert_eq!(cfg.data_dir, Path::new("/var/lib/gantry"));
    assert_eq!(cfg.tls.ca, dir.path().join("pki/ca.pem"));
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
        text.contains("CA-signed client certificates named controller"),
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&render_policy(&cfg, true)).unwrap();
    assert_eq!(json["format"], "gantry.policy.v1");
    assert_eq!(json["keys"][0]["key_id"], ci.as_str());
    let web = &json["apps"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["run_as"]["uid"], 65534);
    assert_eq!(web["ports"]["first"], 18000);
    assert_eq!(web["approvals"], 1);
    assert_eq!(web["allow"]["deploy"][0], "deployer");
    assert_eq!(web["keys"][1]["actions"], serde_json::json!(["abort"]));
    assert_eq!(web["keys"][1]["approves"], true);
    assert_eq!(json["notes"].as_array().map(Vec::len), Some(0));
    // Stable: rendering twice gives the same bytes.
    assert_eq!(render_policy(&cfg, true), render_policy(&cfg, true));
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

const LIFECYCLE: &str = r#"
[[keys]]
name = "ci-2026"
public_key = "keys/ci.pub"
roles = ["deployer"]
not_after = "2027-01-31T00:00:00Z"

[[keys]]
name = "ci-2027"
public_key = "keys/new.pub"
roles = ["deployer"]
not_before = "2027-01-01T00:00:00Z"

[[keys]]
name = "release-manager"
public_key = "keys/release-manager.pub"
roles = ["approver"]
revoked = true
revoked_reason = "laptop lost"
"#;

/// The example with its keys replaced by `keys`.
fn with_keys(keys: &str) -> String {
    let start = EXAMPLE.find("[[keys]]").unwrap();
    let end = EXAMPLE.find("# One table per app").unwrap();
    format!("{}{keys}\n{}", &EXAMPLE[..start], &EXAMPLE[end..])
        .replace("approvals = 1", "approvals = 0")
}

#[test]
fn key_validity_and_revocation_are_parsed() {
    let dir = fixture();
    write_keypair(&dir.path().join("keys/new")).unwrap();
    let path = write(dir.path(), &with_keys(LIFECYCLE));
    let cfg = load(&path, &root()).unwrap_or_else(|e| panic!("{e}"));
    let k = &cfg.policy.keys;
    assert_eq!(k[0].not_after, Some(1_801_353_600));
    assert_eq!(k[0].not_before, None);
    assert_eq!(k[1].not_before, Some(1_798_761_600));
    assert!(k[2].revoked);
    assert_eq!(k[2].revoked_reason.as_deref(), Some("laptop lost"));
    // 2027-01-15: both CI keys valid (overlap), the old one expiring within 30 days.
    let now = 1_800_000_000;
    assert_eq!(k[0].invalid_at(now), None);
    assert_eq!(k[1].invalid_at(now), None);
    assert!(k[0].expires_soon(now, EXPIRY_WARNING));
    assert!(!k[1].expires_soon(now, EXPIRY_WARNING));
    assert_eq!(
        k[2].invalid_at(now).map(|w| w.to_string()).as_deref(),
        Some("revoked: laptop lost")
    );
    assert_eq!(
        k[0].invalid_at(1_801_353_600)
            .map(|w| w.to_string())
            .as_deref(),
        Some("expired at 2027-01-31T00:00:00Z")
    );

    let text = render_policy_at(&cfg, false, now);
    assert!(text.contains("VALIDITY"), "{text}");
    assert!(
        text.contains("until 2027-01-31T00:00:00Z (EXPIRES SOON)"),
        "{text}"
    );
    assert!(text.contains("from 2027-01-01T00:00:00Z\n"), "{text}");
    assert!(text.contains("REVOKED: LAPTOP LOST"), "{text}");
    assert!(
        text.contains("  - key ci-2026 expires in 15 day(s), at 2027-01-31T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains(
            "  - key release-manager is revoked: laptop lost: its signatures do not count"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_policy_at(&cfg, true, now)).unwrap();
    assert_eq!(json["keys"][0]["not_after"], "2027-01-31T00:00:00Z");
    assert_eq!(json["keys"][0]["expires_soon"], true);
    assert_eq!(json["keys"][0]["status"], "valid");
    assert_eq!(json["keys"][1]["not_before"], "2027-01-01T00:00:00Z");
    assert_eq!(json["keys"][1]["expires_soon"], false);
    assert_eq!(json["keys"][2]["status"], "revoked");
    assert_eq!(json["keys"][2]["revoked_reason"], "laptop lost");
    assert_eq!(json["apps"][0]["deployer_may_approve"], false);
    // After the old key's not_after it shows as expired.
    let later = render_policy_at(&cfg, true, 1_801_353_600);
    let later: serde_json::Value = serde_json::from_str(&later).unwrap();
    assert_eq!(later["keys"][0]["status"], "expired");
}

#[test]
fn bad_key_validity_is_reported_with_its_entry() {
    let dir = fixture();
    let keys = r#"
[[keys]]
name = "ci"
public_key = "keys/ci.pub"
roles = ["deployer"]
not_before = "next tuesday"
not_after = "2026-01-01T00:00:00Z"

[[keys]]
name = "rm"
public_key = "keys/release-manager.pub"
roles = ["approver"]
not_before = "2027-01-01T00:00:00Z"
not_after = "2026-01-01T00:00:00Z"
revoked_reason = "forgot to set revoked"
"#;
    let errs = load(&write(dir.path(), &with_keys(keys)), &root()).unwrap_err();
    let msg = |e: &str| {
        errs.for_entry(e)
            .map(|p| p.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg("keys[0].not_before").contains("\"next tuesday\" is not an RFC 3339"),
        "{errs}"
    );
    assert!(
        msg("keys[1].not_after")
            .contains("2026-01-01T00:00:00Z is not after not_before 2027-01-01T00:00:00Z"),
        "{errs}"
    );
    assert!(
        msg("keys[1].revoked_reason").contains("revoked is not true"),
        "{errs}"
    );
    assert_eq!(errs.0.len(), 3, "{errs}");
}

#[test]
fn a_revoked_approver_does_not_make_a_quorum_possible() {
    let dir = fixture();
    let text = EXAMPLE.replace(
        "roles = [\"approver\"]",
        "roles = [\"approver\"]\nrevoked = true",
    );
    let errs = load(&write(dir.path(), &text), &root()).unwrap_err();
    assert!(
        errs.for_entry("apps.web.approvals")
            .unwrap()
            .message
            .contains("only 0 unrevoked key(s)"),
        "{errs}"
    );
}

#[test]
fn deployer_may_approve_defaults_to_false_and_parses() {
    let dir = fixture();
    let text = EXAMPLE.replace("deployer_may_approve = false\n", "");
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.policy.apps[&AppName::new("web").unwrap()].deployer_may_approve);
    let text = EXAMPLE.replace(
        "deployer_may_approve = false",
        "deployer_may_approve = true",
    );
    let cfg = load(&write(dir.path(), &text), &root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.policy.apps[&AppName::new("web").unwrap()].deployer_may_approve);
    let text = render_policy(&cfg, false);
    assert!(
        text.contains("(the deployer's own key may count)"),
        "{text}"
    );
}

#[test]
fn policy_only_load_needs_no_tls_files_or_users() {
    let dir = fixture();
    for f in [
        "pki/ca.pem",
        "pki/agent.pem",
        "pki/agent.key",
        "keys/agent.key",
    ] {
        fs::remove_file(dir.path().join(f)).unwrap();
    }
    let text = EXAMPLE.replace("user = \"nobody\"", "user = \"no-such-user-gantry\"");
    let path = write(dir.path(), &text);
    let errs = load(&path, &root()).unwrap_err();
    assert!(errs.for_entry("tls.ca").is_some(), "{errs}");
    let cfg = Config::load_policy_only(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.policy.keys.len(), 2);
    let web = &cfg.policy.apps[&AppName::new("web").unwrap()];
    assert_eq!(web.approvals, 1);
    assert_eq!(web.run_as.uid(), u32::MAX);
    // Root is still refused without allow_root.
    let text = EXAMPLE.replace("user = \"nobody\"", "user = \"root\"");
    let errs = Config::load_policy_only(&write(dir.path(), &text)).unwrap_err();
    assert!(errs.for_entry("apps.web.user").is_some(), "{errs}");
}

/// The example with `extra` added to `[apps.web]` (before its allow table).
fn with_web(extra: &str) -> String {
    EXAMPLE.replacen(
        "\n[apps.web.allow]",
        &format!("\n{extra}\n[apps.web.allow]"),
        1,
    )
}

fn web_of(cfg: &Config) -> &AppPolicy {
    &cfg.policy.apps[&AppName::new("web").unwrap()]
}

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

/// Issue: the unit, the example config and the README disagreed (a relative data_dir resolved
/// under /etc/gantry, which the unit makes read-only). The example's paths must be where the
/// unit lets the agent read and write.
#[test]
fn the_example_config_agrees_with_the_systemd_unit() {
    const UNIT: &str = include_str!("../../../../deploy/gantry-agent.service");
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
