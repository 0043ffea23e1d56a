//! A plain HTTP/1.1 client for an app's OFREP endpoint, and the test environment's flags
//! setup: keys with the `flags` and `kill-switch` roles, `[apps.web.flags]` on a free port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use gantry_policy::config::raw::{RawConfig, RawFlags};

use crate::env::{KeyPair, TestEnv};
use crate::probe::free_port_range;

/// An OFREP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `ETag` header, if any.
    pub etag: Option<String>,
    /// The body (JSON, or empty for 304).
    pub body: serde_json::Value,
}

/// `method path` with a JSON body (and `If-None-Match` when given) on `addr`.
///
/// # Errors
///
/// When the connection fails, times out (5 s) or the answer is not HTTP with a JSON body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &serde_json::Value,
    if_none_match: Option<&str>,
) -> anyhow::Result<Answer> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let body = body.to_string();
    let extra = if_none_match.map_or_else(String::new, |e| format!("If-None-Match: {e}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").context("no header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .map(str::to_owned);
    let body = if rest.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(rest).with_context(|| format!("body is not JSON: {rest:?}"))?
    };
    Ok(Answer { status, etag, body })
}

/// `POST /ofrep/v1/evaluate/flags/{key}` with `context`.
///
/// # Errors
///
/// As [`request`].
pub fn evaluate(addr: SocketAddr, key: &str, context: serde_json::Value) -> anyhow::Result<Answer> {
    request(
        addr,
        "POST",
        &format!("/ofrep/v1/evaluate/flags/{key}"),
        &serde_json::json!({ "context": context }),
        None,
    )
}

/// `POST /ofrep/v1/evaluate/flags` with `context`.
///
/// # Errors
///
/// As [`request`].
pub fn bulk(
    addr: SocketAddr,
    context: serde_json::Value,
    if_none_match: Option<&str>,
) -> anyhow::Result<Answer> {
    request(
        addr,
        "POST",
        "/ofrep/v1/evaluate/flags",
        &serde_json::json!({ "context": context }),
        if_none_match,
    )
}

/// The keys of a flags test: `flagger` (role `flags`), `killer` (role `kill-switch`).
#[derive(Debug, Clone)]
pub struct FlagKeys {
    /// May change anything.
    pub flagger: KeyPair,
    /// May only switch flags off.
    pub killer: KeyPair,
}

/// Gives `env` two more keys and `[apps.web.flags]` on a free loopback port, rewrites its
/// config, and returns the keys and the OFREP address.
///
/// # Errors
///
/// When `gantry keygen` fails or the config cannot be written.
pub fn enable_flags(env: &TestEnv) -> anyhow::Result<(FlagKeys, SocketAddr)> {
    let (keys, _, addr) = enable_flags_with(env, 0, None)?;
    Ok((keys, addr))
}

/// As [`enable_flags`], with `more` further keys of role `flags` (`flagger-2`, ...) and
/// `[apps.web.flags] approvals`, when given.
///
/// # Errors
///
/// When `gantry keygen` fails or the config cannot be written.
pub fn enable_flags_with(
    env: &TestEnv,
    more: usize,
    approvals: Option<u32>,
) -> anyhow::Result<(FlagKeys, Vec<KeyPair>, SocketAddr)> {
    let (raw, keys, more, addr) = flags_config(env, env.raw_config(), more, approvals)?;
    env.write_raw_config(&raw)?;
    Ok((keys, more, addr))
}

/// `raw` with the keys and `[apps.web.flags]` of [`enable_flags_with`], not yet written (for
/// a test that adds more to the config).
///
/// # Errors
///
/// When `gantry keygen` fails.
pub fn flags_config(
    env: &TestEnv,
    raw: RawConfig,
    more: usize,
    approvals: Option<u32>,
) -> anyhow::Result<(RawConfig, FlagKeys, Vec<KeyPair>, SocketAddr)> {
    let names: Vec<String> = ["flagger".to_owned(), "killer".to_owned()]
        .into_iter()
        .chain((0..more).map(|i| format!("flagger-{}", i + 2)))
        .collect();
    let mut keys = Vec::new();
    for name in &names {
        let prefix = env.root.join("keys").join(name);
        let out = env.gantry(&["keygen", "--out", &prefix.to_string_lossy()])?;
        if out.code != 0 {
            bail!("gantry keygen {name} failed: {}", out.all());
        }
        keys.push(KeyPair {
            key: prefix.with_extension("key"),
            public: prefix.with_extension("pub"),
        });
    }
    let (raw, addr) = trust_flag_keys(raw, &names, approvals)?;
    let mut it = keys.into_iter();
    let (Some(flagger), Some(killer)) = (it.next(), it.next()) else {
        bail!("keys not made");
    };
    Ok((raw, FlagKeys { flagger, killer }, it.collect(), addr))
}

/// `raw` trusting `names` (the first with role `flags`, the second `kill-switch`, the others
/// `flags`) from `keys/NAME.pub`, and `[apps.web.flags]` on a free loopback port.
fn trust_flag_keys(
    raw: RawConfig,
    names: &[String],
    approvals: Option<u32>,
) -> anyhow::Result<(RawConfig, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], *free_port_range(1)?.start()));
    let mut raw = raw;
    for (i, name) in names.iter().enumerate() {
        let role = if i == 1 { "kill-switch" } else { "flags" };
        raw = raw.key(name, &format!("keys/{name}.pub"), &[role]);
    }
    if let Some(web) = raw.apps.get_mut("web") {
        let mut flags = RawFlags::new(&addr.to_string());
        flags.approvals = approvals;
        web.flags = Some(flags);
    }
    Ok((raw, addr))
}

/// [`flags_config`] for another agent of a fleet: `env` gets copies of the `flagger` and
/// `killer` keys made in `first` (an env [`flags_config`] ran on) and trusts them the same
/// way; returns the config and its OFREP address.
///
/// # Errors
///
/// When the keys cannot be copied.
pub fn share_flags_config(
    env: &TestEnv,
    raw: RawConfig,
    first: &std::path::Path,
) -> anyhow::Result<(RawConfig, SocketAddr)> {
    let names = ["flagger".to_owned(), "killer".to_owned()];
    for name in &names {
        for ext in ["key", "pub"] {
            let file = format!("{name}.{ext}");
            std::fs::copy(
                first.join("keys").join(&file),
                env.root.join("keys").join(&file),
            )
            .with_context(|| format!("copying {file} from {}", first.display()))?;
        }
    }
    trust_flag_keys(raw, &names, None)
}

/// The npm packages the SDK test runs, pinned.
pub const NPM_PACKAGES: &[&str] = &[
    "@openfeature/server-sdk@1.23.0",
    "@openfeature/ofrep-provider@0.1.3",
    "@openfeature/flagd-core@4.0.1",
    "@openfeature/core@1.12.0",
];
/// The PyPI packages the SDK test runs, pinned.
pub const PIP_PACKAGES: &[&str] = &[
    "openfeature-sdk==0.10.0",
    "openfeature-provider-ofrep==0.3.0",
];

fn have(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cache_root() -> std::path::PathBuf {
    std::env::var_os("GANTRY_SDK_CACHE").map_or_else(
        || std::env::temp_dir().join("gantry-sdk-cache"),
        std::path::PathBuf::from,
    )
}

/// Says why a tool is missing: an error under CI (`CI` set), a skip message otherwise.
///
/// # Errors
///
/// Under CI, naming the tool.
fn missing(tool: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
    if std::env::var_os("CI").is_some() {
        bail!("{tool} is needed for the OpenFeature SDK tests under CI");
    }
    eprintln!("SKIPPED: {tool} is not installed, so the stock OpenFeature SDK test does not run");
    Ok(None)
}

/// `node_modules` with [`NPM_PACKAGES`] (from `GANTRY_NODE_CACHE`, else installed into a cache);
/// `None` without npm outside CI.
///
/// # Errors
///
/// When npm fails, or under CI when it is missing.
pub fn node_modules() -> anyhow::Result<Option<std::path::PathBuf>> {
    if !have("npm") || !have("node") {
        return missing("npm");
    }
    let dir = std::env::var_os("GANTRY_NODE_CACHE")
        .map_or_else(|| cache_root().join("node"), std::path::PathBuf::from);
    let modules = dir.join("node_modules");
    if !modules
        .join("@openfeature/ofrep-provider/package.json")
        .exists()
    {
        std::fs::create_dir_all(&dir)?;
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&dir)
            .args(NPM_PACKAGES)
            .status()?;
        if !status.success() {
            bail!("npm install {NPM_PACKAGES:?} failed");
        }
    }
    Ok(Some(modules))
}

/// A `PYTHONPATH` directory with [`PIP_PACKAGES`] (from `GANTRY_PY_CACHE`, else installed
/// with `pip install --target` into a cache); `None` without pip outside CI.
///
/// # Errors
///
/// When pip fails, or under CI when python3 or pip is missing.
pub fn python_path() -> anyhow::Result<Option<std::path::PathBuf>> {
    let pip_works = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !pip_works {
        return missing("python3 -m pip");
    }
    let dir = std::env::var_os("GANTRY_PY_CACHE")
        .map_or_else(|| cache_root().join("python"), std::path::PathBuf::from);
    if !dir.join("openfeature").join("contrib").exists() {
        std::fs::create_dir_all(&dir)?;
        let status = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&dir)
            .args(PIP_PACKAGES)
            .status()?;
        if !status.success() {
            bail!("pip install {PIP_PACKAGES:?} failed");
        }
    }
    Ok(Some(dir))
}
