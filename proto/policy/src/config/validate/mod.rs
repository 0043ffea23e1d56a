//! From [`RawConfig`] to [`Config`]: every check, every problem collected.
//!
//! `mod` reads and parses the file and walks it in file order; each table has its file:
//! `settings` (listen, tls, audit, limits), `keys`, `apps` (with `users` and `router`); `host` is
//! who the agent runs as.

mod apps;
mod controller;
mod environments;
mod flags;
mod host;
mod keys;
mod router;
mod settings;
mod users;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::raw::RawConfig;
use super::{Config, ConfigErrors, ConfigProblem, Policy};
use crate::dns::DnsName;
use crate::job::Sha256Hex;

pub(crate) use host::HostIdentity;

/// How much of the config to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Everything: files exist, keys parse, users resolve (the agent).
    Full,
    /// Only what decides admission: see [`super::Config::load_policy_only`].
    PolicyOnly,
}

/// Collects problems against one file.
struct Problems {
    file: PathBuf,
    list: Vec<ConfigProblem>,
}

impl Problems {
    fn add(&mut self, entry: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            file: self.file.clone(),
            entry: entry.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, entry: &str, value: &str, allow_zero: bool) -> Duration {
        match humantime::parse_duration(value.trim()) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.add(entry, format!("{value:?} must be more than 0"));
                d
            }
            Ok(d) => d,
            Err(e) => {
                self.add(
                    entry,
                    format!("{value:?} is not a duration like \"30s\" or \"1h\": {e}"),
                );
                Duration::ZERO
            }
        }
    }

    fn positive(&mut self, entry: &str, value: u64) {
        if value == 0 {
            self.add(entry, "must be more than 0");
        }
    }
}

/// Reads, parses and validates; see [`Config::load`].
pub(crate) fn load(path: &Path, host: &HostIdentity, mode: Mode) -> Result<Config, ConfigErrors> {
    let mut p = Problems {
        file: path.to_owned(),
        list: Vec::new(),
    };
    // Made absolute once, here: every path derived from it (data_dir, keys, TLS files) is then
    // absolute too, so a later chdir (an instance's spawn into its release) cannot shift them.
    let path = &match std::path::absolute(path) {
        Ok(abs) => abs,
        Err(e) => {
            p.add("(file)", format!("cannot make the path absolute: {e}"));
            return Err(ConfigErrors(p.list));
        }
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            p.add("(file)", format!("cannot read: {e}"));
            return Err(ConfigErrors(p.list));
        }
    };
    from_bytes_mode(path, &bytes, host, mode)
}

/// Parses and validates `bytes` as if read from `path`.
#[cfg(test)]
pub(crate) fn from_bytes(
    path: &Path,
    bytes: &[u8],
    host: &HostIdentity,
) -> Result<Config, ConfigErrors> {
    from_bytes_mode(path, bytes, host, Mode::Full)
}

/// Parses and validates `bytes` as if read from `path`, checking as much as `mode` says.
pub(crate) fn from_bytes_mode(
    path: &Path,
    bytes: &[u8],
    host: &HostIdentity,
    mode: Mode,
) -> Result<Config, ConfigErrors> {
    let mut p = Problems {
        file: path.to_owned(),
        list: Vec::new(),
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            p.add("(file)", format!("not UTF-8: {e}"));
            return Err(ConfigErrors(p.list));
        }
    };
    let raw: RawConfig = match super::parse::parse(text) {
        Ok(r) => r,
        Err(problems) => {
            for problem in problems {
                p.add(problem.entry, problem.message);
            }
            return Err(ConfigErrors(p.list));
        }
    };
    let base = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config = validate(&mut p, raw, base, host, mode, Sha256Hex::of(bytes));
    if p.list.is_empty() {
        Ok(Config {
            path: path.to_owned(),
            ..config
        })
    } else {
        Err(ConfigErrors(p.list))
    }
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn existing_file(p: &mut Problems, check: bool, entry: &str, base: &Path, value: &str) -> PathBuf {
    let path = resolve(base, value);
    if !check {
        return path;
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => p.add(entry, format!("{} is not a regular file", path.display())),
        Err(e) => p.add(entry, format!("cannot read {}: {e}", path.display())),
    }
    path
}

/// Checks everything in `raw` in file order, collecting problems in `p`; the [`Config`] it
/// returns is meaningful only when `p` stays empty.
fn validate(
    p: &mut Problems,
    raw: RawConfig,
    base: &Path,
    host: &HostIdentity,
    mode: Mode,
    digest: Sha256Hex,
) -> Config {
    if let Err(why) = DnsName::new(&raw.agent_id) {
        p.add("agent_id", why.to_string());
    }
    let full = mode == Mode::Full;
    let (listen, controller) = controller::transport(p, &raw, base, full);
    if raw.data_dir.trim().is_empty() {
        p.add("data_dir", "is empty");
    }
    let data_dir = resolve(base, &raw.data_dir);
    let placement = settings::placement(p, &raw);

    let tls = settings::tls(p, &raw, base, full);
    let audit = settings::audit(p, &raw, base, full);
    let limits = settings::limits(p, &raw);
    let metrics_listen = settings::metrics_listen(p, &raw);

    let mut policy = Policy {
        keys: keys::validate_keys(p, &raw, base),
        apps: BTreeMap::new(),
        environments: environments::validate(p, &raw),
    };
    // A dial-out agent binds no port an app range could clash with (port 0 is never checked).
    let own_port = listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    policy.apps = apps::validate_apps(p, &raw, base, host, mode, own_port, &policy);
    environments::apply_approval_floor(&mut policy);

    Config {
        path: PathBuf::new(),
        digest,
        agent_id: raw.agent_id,
        listen,
        controller,
        data_dir,
        placement,
        tls,
        audit,
        limits,
        policy: Arc::new(policy),
        metrics_listen,
    }
}
