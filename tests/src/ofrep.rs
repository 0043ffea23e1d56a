//! A plain HTTP/1.1 client for an app's OFREP endpoint, and the test environment's flags
//! setup: keys with the `flags` and `kill-switch` roles, `[apps.web.flags]` on a free port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use gantry_policy::config::raw::RawFlags;

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
    let mut keys = Vec::new();
    for name in ["flagger", "killer"] {
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
    let addr = SocketAddr::from(([127, 0, 0, 1], *free_port_range(1)?.start()));
    let mut raw = env
        .raw_config()
        .key("flagger", "keys/flagger.pub", &["flags"])
        .key("killer", "keys/killer.pub", &["kill-switch"]);
    if let Some(web) = raw.apps.get_mut("web") {
        web.flags = Some(RawFlags::new(&addr.to_string()));
    }
    env.write_raw_config(&raw)?;
    let mut it = keys.into_iter();
    let (Some(flagger), Some(killer)) = (it.next(), it.next()) else {
        bail!("keys not made");
    };
    Ok((FlagKeys { flagger, killer }, addr))
}
