//! Config tests: the shared fixtures here, the tests in `tests/<area>.rs` (loading and the user
//! rules, trusted keys, routers, the policy report).

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
        cap_eff: 0x1ff_ffff_ffff,
    }
}

fn nobody() -> HostIdentity {
    HostIdentity {
        euid: 65534,
        egid: 65534,
        user: Some("nobody".to_owned()),
        cap_eff: 0,
    }
}

/// A non-root agent with the systemd unit's capabilities: CAP_KILL, CAP_SETGID, CAP_SETUID.
fn unit_agent() -> HostIdentity {
    HostIdentity {
        euid: 4242,
        egid: 4242,
        user: Some("gantry".to_owned()),
        cap_eff: 0xe0,
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

mod dialout;
mod environments;
mod flags;
mod fleet;
mod keys;
mod loading;
mod reports;
mod routers;
