//! From [`RawConfig`] to [`Config`]: every check, every problem collected.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_proto::keys::{PublicKey, SigningKey};

use super::raw::{RawApp, RawConfig, RawKey, RawNginx};
use super::{
    APPROVER_ROLE, AppPolicy, AuditSettings, Config, ConfigErrors, ConfigProblem, Limits, Policy,
    RouterConfig, RunAs, TlsConfig, TrustedKey,
};
use crate::dns::DnsName;
use crate::job::{Action, AppName, Sha256Hex};

/// Who the agent runs as; decides [`RunAs`]. Injected so tests can play a non-root agent.
#[derive(Debug, Clone)]
pub(crate) struct HostIdentity {
    pub(crate) euid: u32,
    pub(crate) egid: u32,
    /// The user name of `euid`, when the user database has one.
    pub(crate) user: Option<String>,
}

impl HostIdentity {
    pub(crate) fn current() -> Self {
        let euid = nix::unistd::geteuid();
        let user = nix::unistd::User::from_uid(euid)
            .ok()
            .flatten()
            .map(|u| u.name);
        Self {
            euid: euid.as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            user,
        }
    }
}

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
    let listen = match raw.listen.trim().parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            p.add(
                "listen",
                format!("{:?} is not an IP:port address", raw.listen),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    if raw.data_dir.trim().is_empty() {
        p.add("data_dir", "is empty");
    }
    let data_dir = resolve(base, &raw.data_dir);

    let full = mode == Mode::Full;
    let tls = TlsConfig {
        ca: existing_file(p, full, "tls.ca", base, &raw.tls.ca),
        cert: existing_file(p, full, "tls.cert", base, &raw.tls.cert),
        key: existing_file(p, full, "tls.key", base, &raw.tls.key),
        client_names: raw.tls.client_names.clone(),
        client_fingerprints: raw.tls.client_fingerprints.clone(),
    };
    if raw.tls.client_names.is_empty() && raw.tls.client_fingerprints.is_empty() {
        p.add(
            "tls",
            "name the controllers that may connect: client_names (DNS names in their \
             certificates) and/or client_fingerprints (SHA-256 of their certificates); a \
             certificate that merely chains to the CA (another agent's, say) is not a controller",
        );
    }
    for (i, name) in raw.tls.client_names.iter().enumerate() {
        // The same rule as `gantry dev-pki`'s, so it never issues a name refused here.
        if let Err(why) = DnsName::new(name) {
            p.add(format!("tls.client_names[{i}]"), why.to_string());
        }
    }
    for (i, fp) in raw.tls.client_fingerprints.iter().enumerate() {
        if Sha256Hex::new(fp).is_err() {
            p.add(
                format!("tls.client_fingerprints[{i}]"),
                format!("{fp:?} is not a SHA-256 fingerprint (64 lowercase hex characters)"),
            );
        }
    }

    let signing_key = resolve(base, &raw.audit.signing_key);
    if full && let Err(e) = SigningKey::read_pem_file(&signing_key) {
        p.add("audit.signing_key", crate::error_chain(&e));
    }
    p.positive("audit.checkpoint_every", raw.audit.checkpoint_every);
    p.positive("audit.max_file_bytes", raw.audit.max_file_bytes);
    let audit = AuditSettings {
        signing_key,
        checkpoint_every: raw.audit.checkpoint_every,
        checkpoint_interval: p.duration(
            "audit.checkpoint_interval",
            &raw.audit.checkpoint_interval,
            false,
        ),
        max_file_bytes: raw.audit.max_file_bytes,
        min_free_bytes: raw.audit.min_free_bytes,
    };

    p.positive("limits.max_job_bytes", raw.limits.max_job_bytes);
    p.positive("limits.max_artifact_bytes", raw.limits.max_artifact_bytes);
    p.positive("limits.max_unpacked_bytes", raw.limits.max_unpacked_bytes);
    p.positive("limits.releases_kept", raw.limits.releases_kept);
    p.positive(
        "limits.client_rejections_burst",
        raw.limits.client_rejections_burst.into(),
    );
    p.positive(
        "limits.client_rejections_per_second",
        raw.limits.client_rejections_per_second.into(),
    );
    p.positive(
        "limits.client_connections",
        raw.limits.client_connections.into(),
    );
    let limits = Limits {
        max_job_bytes: usize::try_from(raw.limits.max_job_bytes).unwrap_or(usize::MAX),
        max_artifact_bytes: raw.limits.max_artifact_bytes,
        max_unpacked_bytes: raw.limits.max_unpacked_bytes,
        max_validity: p.duration("limits.max_validity", &raw.limits.max_validity, false),
        clock_skew: p.duration("limits.clock_skew", &raw.limits.clock_skew, true),
        releases_kept: usize::try_from(raw.limits.releases_kept).unwrap_or(usize::MAX),
        client_rejections_burst: raw.limits.client_rejections_burst,
        client_rejections_per_second: raw.limits.client_rejections_per_second,
        client_connections: usize::try_from(raw.limits.client_connections).unwrap_or(usize::MAX),
    };

    let keys = validate_keys(p, &raw, base);
    let mut policy = Policy {
        keys,
        apps: BTreeMap::new(),
    };
    let known_roles = policy.known_roles();
    let approvers = policy
        .keys
        .iter()
        .filter(|k| k.roles.contains(APPROVER_ROLE) && !k.revoked)
        .count();

    let mut ranges: Vec<(String, RangeInclusive<u16>)> = Vec::new();
    let mut listens: Vec<(String, SocketAddr)> = Vec::new();
    for (name, app) in &raw.apps {
        let at = format!("apps.{name}");
        let ports = parse_ports(p, &format!("{at}.ports"), &app.ports);
        if let Some(r) = &ports {
            for (other, theirs) in &ranges {
                if r.start() <= theirs.end() && theirs.start() <= r.end() {
                    p.add(
                        format!("{at}.ports"),
                        format!(
                            "{}-{} overlaps apps.{other}.ports {}-{}",
                            r.start(),
                            r.end(),
                            theirs.start(),
                            theirs.end()
                        ),
                    );
                }
            }
            if listen.port() != 0 && r.contains(&listen.port()) {
                p.add(
                    format!("{at}.ports"),
                    format!(
                        "{}-{} includes the agent's listen port {}",
                        r.start(),
                        r.end(),
                        listen.port()
                    ),
                );
            }
            ranges.push((name.clone(), r.clone()));
        }
        let app_name = match AppName::new(name) {
            Ok(n) => Some(n),
            Err(e) => {
                p.add(at.clone(), format!("invalid app name: {e}"));
                None
            }
        };
        let (app_listen, router) = validate_router(p, &at, app, base, ports.as_ref());
        if let Some(l) = app_listen {
            listens.push((name.clone(), l));
        }
        let checked = validate_app(
            p,
            &at,
            name,
            app,
            host,
            mode,
            &known_roles,
            approvers,
            ports.as_ref(),
        );
        if let (Some(app_name), Some((run_as, allow, stop_timeout)), Some(ports)) =
            (app_name, checked, ports)
        {
            policy.apps.insert(
                app_name.clone(),
                AppPolicy {
                    name: app_name,
                    user: app.user.clone(),
                    run_as,
                    ports,
                    max_instances: app.max_instances,
                    stop_timeout,
                    approvals: app.approvals,
                    deployer_may_approve: app.deployer_may_approve,
                    allow,
                    listen: app_listen,
                    router,
                },
            );
        }
    }
    check_app_listens(p, listen, &ranges, &listens);

    Config {
        path: PathBuf::new(),
        digest,
        agent_id: raw.agent_id,
        listen,
        data_dir,
        tls,
        audit,
        limits,
        policy: Arc::new(policy),
    }
}

/// Parses an app's `listen` and `[nginx]` into its router; checks that the port range holds
/// both slots when there is a router.
fn validate_router(
    p: &mut Problems,
    at: &str,
    app: &RawApp,
    base: &Path,
    ports: Option<&RangeInclusive<u16>>,
) -> (Option<SocketAddr>, RouterConfig) {
    let listen = app
        .listen
        .as_deref()
        .and_then(|value| match value.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                p.add(
                    format!("{at}.listen"),
                    format!("{value:?}: the app's address needs a fixed port, not 0"),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    format!("{at}.listen"),
                    format!("{value:?} is not an IP:port address like \"127.0.0.1:8080\""),
                );
                None
            }
        });
    let router = match &app.nginx {
        Some(nginx) => validate_nginx(p, at, nginx, base),
        None if app.listen.is_some() => RouterConfig::FrontDoor,
        None => RouterConfig::None,
    };
    let has_router = app.listen.is_some() || app.nginx.is_some();
    if has_router && let Some(r) = ports {
        let count = u32::from(*r.end()) + 1 - u32::from(*r.start());
        let needed = u64::from(app.max_instances) * 2;
        if u64::from(count) < needed {
            p.add(
                format!("{at}.ports"),
                format!(
                    "{}-{} holds {count} port(s), but an app with a router needs at least \
                     2 x max_instances = {needed}: blue and green slots of {} instance(s) each",
                    r.start(),
                    r.end(),
                    app.max_instances
                ),
            );
        }
    }
    (listen, router)
}

fn validate_nginx(p: &mut Problems, at: &str, nginx: &RawNginx, base: &Path) -> RouterConfig {
    let entry = format!("{at}.nginx");
    if nginx.upstream_file.trim().is_empty() {
        p.add(format!("{entry}.upstream_file"), "is empty");
    }
    let mut command = |field: &str, cmd: &[String]| {
        if cmd.first().is_none_or(|program| program.trim().is_empty()) {
            p.add(
                format!("{entry}.{field}"),
                "is empty: give the program and its arguments, e.g. [\"nginx\", \"-s\", \"reload\"]",
            );
        }
    };
    command("reload_command", &nginx.reload_command);
    if let Some(check) = &nginx.check_command {
        command("check_command", check);
    }
    if nginx
        .pid_file
        .as_deref()
        .is_some_and(|f| f.trim().is_empty())
    {
        p.add(format!("{entry}.pid_file"), "is empty");
    }
    RouterConfig::Nginx {
        upstream_file: resolve(base, &nginx.upstream_file),
        reload_command: nginx.reload_command.clone(),
        check_command: nginx.check_command.clone(),
        pid_file: nginx.pid_file.as_deref().map(|f| resolve(base, f)),
    }
}

/// Two addresses that would contend for one socket: same port, and the same IP or either one
/// the wildcard.
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Each app's `listen` must not be an instance port, the agent's address or another app's.
fn check_app_listens(
    p: &mut Problems,
    agent: SocketAddr,
    ranges: &[(String, RangeInclusive<u16>)],
    listens: &[(String, SocketAddr)],
) {
    for (i, (name, addr)) in listens.iter().enumerate() {
        let entry = format!("apps.{name}.listen");
        for (other, r) in ranges {
            if r.contains(&addr.port()) {
                p.add(
                    entry.clone(),
                    format!(
                        "{addr} is inside apps.{other}.ports {}-{}: instance ports and the \
                         app's address must differ",
                        r.start(),
                        r.end()
                    ),
                );
            }
        }
        if agent.port() != 0 && addresses_clash(*addr, agent) {
            p.add(
                entry.clone(),
                format!("{addr} is the agent's own listen address {agent}"),
            );
        }
        for (other, theirs) in listens.iter().take(i) {
            if addresses_clash(*addr, *theirs) {
                p.add(
                    entry.clone(),
                    format!("{addr} is also apps.{other}.listen ({theirs})"),
                );
            }
        }
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

fn parse_ports(p: &mut Problems, entry: &str, value: &str) -> Option<RangeInclusive<u16>> {
    let parse = |s: &str| s.trim().parse::<u16>().ok();
    let (a, b) = match value.split_once('-') {
        Some((a, b)) => (parse(a), parse(b)),
        None => (parse(value), parse(value)),
    };
    let (Some(a), Some(b)) = (a, b) else {
        p.add(
            entry,
            format!("{value:?} is not a port range like \"18000-18009\""),
        );
        return None;
    };
    if a == 0 {
        p.add(
            entry,
            format!("{value:?}: port 0 cannot be assigned to an instance"),
        );
        return None;
    }
    if a > b {
        p.add(entry, format!("{value:?} is empty (first port above last)"));
        return None;
    }
    Some(a..=b)
}

fn validate_keys(p: &mut Problems, raw: &RawConfig, base: &Path) -> Vec<TrustedKey> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen: Vec<(usize, PublicKey)> = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let at = format!("keys[{i}]");
        let mut ok = true;
        if k.name.trim().is_empty() {
            p.add(format!("{at}.name"), "is empty");
            ok = false;
        } else if let Some(first) = names.get(k.name.as_str()) {
            p.add(
                format!("{at}.name"),
                format!("duplicate name {:?} (also keys[{first}])", k.name),
            );
            ok = false;
        } else {
            names.insert(&k.name, i);
        }
        if k.roles.is_empty() {
            p.add(
                format!("{at}.roles"),
                "is empty: a key without roles may do nothing",
            );
            ok = false;
        }
        for role in &k.roles {
            if role.trim().is_empty() || role.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.add(
                    format!("{at}.roles"),
                    format!("{role:?} is not a role name"),
                );
                ok = false;
            }
        }
        let path = resolve(base, &k.public_key);
        let key = match PublicKey::read_pem_file(&path) {
            Ok(key) => key,
            Err(e) => {
                p.add(format!("{at}.public_key"), crate::error_chain(&e));
                continue;
            }
        };
        let (not_before, not_after) = key_validity(p, &at, k);
        if k.revoked_reason.is_some() && !k.revoked {
            p.add(
                format!("{at}.revoked_reason"),
                "is set but revoked is not true",
            );
            ok = false;
        }
        if let Some((first, _)) = seen.iter().find(|(_, other)| *other == key) {
            p.add(
                format!("{at}.public_key"),
                format!(
                    "{} is the same public key as keys[{first}] (key id {}): a key counts once",
                    path.display(),
                    key.key_id()
                ),
            );
            continue;
        }
        seen.push((i, key));
        if ok {
            keys.push(TrustedKey {
                name: k.name.clone(),
                file: path,
                key,
                key_id: key.key_id(),
                roles: k.roles.iter().cloned().collect(),
                not_before,
                not_after,
                revoked: k.revoked,
                revoked_reason: k.revoked_reason.clone(),
            });
        }
    }
    keys
}

/// Checks one app; returns what it resolved when all of it is valid.
#[allow(clippy::too_many_arguments)]
fn validate_app(
    p: &mut Problems,
    at: &str,
    name: &str,
    app: &RawApp,
    host: &HostIdentity,
    mode: Mode,
    known_roles: &BTreeSet<String>,
    approvers: usize,
    ports: Option<&RangeInclusive<u16>>,
) -> Option<(RunAs, BTreeMap<Action, BTreeSet<String>>, Duration)> {
    let before = p.list.len();
    let run_as = match mode {
        Mode::Full => resolve_user(p, at, name, app, host),
        Mode::PolicyOnly => unresolved_user(p, at, name, app),
    };

    if app.max_instances == 0 {
        p.add(format!("{at}.max_instances"), "must be more than 0");
    }
    if let Some(r) = ports {
        let count = u32::from(*r.end()) + 1 - u32::from(*r.start());
        if app.max_instances > count {
            p.add(
                format!("{at}.max_instances"),
                format!(
                    "{} is more than the {count} port(s) in {}-{}",
                    app.max_instances,
                    r.start(),
                    r.end()
                ),
            );
        }
    }
    let stop_timeout = p.duration(&format!("{at}.stop_timeout"), &app.stop_timeout, false);

    let approvers_u32 = u32::try_from(approvers).unwrap_or(u32::MAX);
    if app.approvals > approvers_u32 {
        p.add(
            format!("{at}.approvals"),
            format!(
                "{} approval(s) required but only {approvers} unrevoked key(s) hold role \
                 {APPROVER_ROLE:?}: no job could ever be admitted",
                app.approvals
            ),
        );
    }

    let mut allow = BTreeMap::new();
    for (action_name, roles) in &app.allow {
        let entry = format!("{at}.allow.{action_name}");
        let Some(action) = Action::parse(action_name) else {
            let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            p.add(
                entry,
                format!("unknown action (expected one of {})", all.join(", ")),
            );
            continue;
        };
        for role in roles {
            if !known_roles.contains(role) {
                let known: Vec<&str> = known_roles.iter().map(String::as_str).collect();
                p.add(
                    entry.clone(),
                    format!(
                        "role {role:?} is held by no key (known roles: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        allow.insert(action, roles.iter().cloned().collect());
    }

    match run_as {
        Some(run_as) if p.list.len() == before => Some((run_as, allow, stop_timeout)),
        _ => None,
    }
}

/// The placeholder identity of a policy-only load; still refuses root without `allow_root`.
fn unresolved_user(p: &mut Problems, at: &str, name: &str, app: &RawApp) -> Option<RunAs> {
    if app.user == "root" && !app.allow_root {
        p.add(
            format!("{at}.user"),
            format!("app {name}: user root is root (uid 0); set allow_root = true to allow it"),
        );
        return None;
    }
    Some(RunAs::User {
        name: app.user.clone(),
        uid: u32::MAX,
        gid: u32::MAX,
        groups: Vec::new(),
    })
}

fn resolve_user(
    p: &mut Problems,
    at: &str,
    name: &str,
    app: &RawApp,
    host: &HostIdentity,
) -> Option<RunAs> {
    let entry = format!("{at}.user");
    let user = match nix::unistd::User::from_name(&app.user) {
        Ok(Some(u)) => u,
        Ok(None) => {
            p.add(entry, format!("user {:?} not found", app.user));
            return None;
        }
        Err(e) => {
            p.add(entry, format!("cannot look up user {:?}: {e}", app.user));
            return None;
        }
    };
    if user.uid.is_root() && !app.allow_root {
        p.add(
            entry.clone(),
            format!(
                "app {name}: user {} is root (uid 0); set allow_root = true to allow it",
                app.user
            ),
        );
        return None;
    }
    if host.euid != 0 {
        if host.user.as_deref() == Some(app.user.as_str()) {
            return Some(RunAs::CurrentUser {
                uid: host.euid,
                gid: host.egid,
            });
        }
        p.add(
            entry,
            format!(
                "app {name}: user {} needs the agent to run as root (the agent runs as {}, uid {})",
                app.user,
                host.user.as_deref().unwrap_or("?"),
                host.euid
            ),
        );
        return None;
    }
    let groups = match CString::new(app.user.as_str())
        .ok()
        .map(|c| nix::unistd::getgrouplist(&c, user.gid))
    {
        Some(Ok(gs)) => gs.into_iter().map(|g| g.as_raw()).collect(),
        Some(Err(e)) => {
            p.add(
                entry,
                format!("cannot list the groups of user {:?}: {e}", app.user),
            );
            return None;
        }
        None => vec![user.gid.as_raw()],
    };
    Some(RunAs::User {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    })
}

/// Parses a key's `not_before` / `not_after` (RFC 3339, UTC) into Unix seconds.
fn key_validity(p: &mut Problems, at: &str, k: &RawKey) -> (Option<i64>, Option<i64>) {
    let mut time = |field: &str, value: &Option<String>| {
        let raw = value.as_deref()?;
        match humantime::parse_rfc3339_weak(raw.trim()) {
            Ok(t) => Some(match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            }),
            Err(e) => {
                p.add(
                    format!("{at}.{field}"),
                    format!("{raw:?} is not an RFC 3339 UTC time like 2026-01-02T03:04:05Z: {e}"),
                );
                None
            }
        }
    };
    let not_before = time("not_before", &k.not_before);
    let not_after = time("not_after", &k.not_after);
    if let (Some(a), Some(b)) = (not_before, not_after)
        && a >= b
    {
        p.add(
            format!("{at}.not_after"),
            format!(
                "{} is not after not_before {}",
                super::format_time(b),
                super::format_time(a)
            ),
        );
    }
    (not_before, not_after)
}
