//! The agent-wide tables: `listen`, `environment`, `[labels]`, `[tls]`, `[audit]` and
//! `[limits]`.

use std::net::SocketAddr;
use std::path::Path;

use gantry_proto::keys::SigningKey;

use super::{Problems, existing_file, resolve};
use crate::config::raw::RawConfig;
use crate::config::{AuditSettings, Limits, Placement, TlsConfig};
use crate::dns::DnsName;
use crate::job::Sha256Hex;

/// `[metrics] listen`, when `[metrics]` is there.
pub(super) fn metrics_listen(p: &mut Problems, raw: &RawConfig) -> Option<SocketAddr> {
    let m = raw.metrics.as_ref()?;
    match m.listen.trim().parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            p.add(
                "metrics.listen",
                "needs a fixed port, not 0 (scrapers must find it)",
            );
            None
        }
        Ok(a) if Some(a) == settings_listen(raw) => {
            p.add("metrics.listen", "is the agent's own gRPC listen address");
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                "metrics.listen",
                format!(
                    "{:?} is not an IP:port address like \"127.0.0.1:9464\"",
                    m.listen
                ),
            );
            None
        }
    }
}

fn settings_listen(raw: &RawConfig) -> Option<SocketAddr> {
    raw.listen.as_deref().and_then(|l| l.trim().parse().ok())
}

/// `environment` and `[labels]`: short names a selector can match exactly.
pub(super) fn placement(p: &mut Problems, raw: &RawConfig) -> Placement {
    if let Some(env) = &raw.environment
        && let Err(why) = label_text(env)
    {
        p.add("environment", format!("{env:?} {why}"));
    }
    for (name, value) in &raw.labels {
        if let Err(why) = label_text(name) {
            p.add(format!("labels.{name}"), format!("the name {name:?} {why}"));
        }
        if let Err(why) = label_text(value) {
            p.add(
                format!("labels.{name}"),
                format!("the value {value:?} {why}"),
            );
        }
    }
    Placement {
        environment: raw.environment.clone(),
        labels: raw.labels.clone(),
    }
}

/// What an environment name, label name or label value may be: 1 to 63 characters of ASCII
/// letters, digits, `.`, `_`, `-` and `/`, starting with a letter or digit.
pub(super) fn label_text(s: &str) -> Result<(), &'static str> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if s.is_empty() || s.len() > 63 {
        Err("must be 1 to 63 characters long")
    } else if !s.chars().all(ok_char) {
        Err("may hold only ASCII letters, digits, '.', '_', '-' and '/'")
    } else if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Err("must start with a letter or a digit")
    } else {
        Ok(())
    }
}

/// `[tls]`: the files (checked to exist when `full`) and the controllers that may connect.
pub(super) fn tls(p: &mut Problems, raw: &RawConfig, base: &Path, full: bool) -> TlsConfig {
    let tls = TlsConfig {
        ca: existing_file(p, full, "tls.ca", base, &raw.tls.ca),
        cert: existing_file(p, full, "tls.cert", base, &raw.tls.cert),
        key: existing_file(p, full, "tls.key", base, &raw.tls.key),
        client_names: raw.tls.client_names.clone(),
        client_fingerprints: raw.tls.client_fingerprints.clone(),
        crl: raw
            .tls
            .crl
            .as_deref()
            .map(|crl| existing_file(p, full, "tls.crl", base, crl)),
    };
    // A dial-out agent's one peer is the service it dials, named by `[controller] server_name`.
    if raw.controller.is_none()
        && raw.tls.client_names.is_empty()
        && raw.tls.client_fingerprints.is_empty()
    {
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
    tls
}

/// `[audit]`: the signing key (read when `full`), checkpoint cadence and file limits.
pub(super) fn audit(p: &mut Problems, raw: &RawConfig, base: &Path, full: bool) -> AuditSettings {
    let signing_key = resolve(base, &raw.audit.signing_key);
    if full && let Err(e) = SigningKey::read_pem_file(&signing_key) {
        p.add("audit.signing_key", crate::error_chain(&e));
    }
    p.positive("audit.checkpoint_every", raw.audit.checkpoint_every);
    p.positive("audit.max_file_bytes", raw.audit.max_file_bytes);
    AuditSettings {
        signing_key,
        checkpoint_every: raw.audit.checkpoint_every,
        checkpoint_interval: p.duration(
            "audit.checkpoint_interval",
            &raw.audit.checkpoint_interval,
            false,
        ),
        max_file_bytes: raw.audit.max_file_bytes,
        min_free_bytes: raw.audit.min_free_bytes,
    }
}

/// `[limits]`: sizes, validity and skew, retention and the per-client throttle.
pub(super) fn limits(p: &mut Problems, raw: &RawConfig) -> Limits {
    p.positive("limits.max_job_bytes", raw.limits.max_job_bytes);
    p.positive("limits.max_artifact_bytes", raw.limits.max_artifact_bytes);
    p.positive("limits.max_unpacked_bytes", raw.limits.max_unpacked_bytes);
    p.positive("limits.releases_kept", raw.limits.releases_kept);
    // Each must fit the largest artifact, or that artifact could never be stored.
    for (entry, value, verb) in [
        (
            "limits.max_store_bytes",
            raw.limits.max_store_bytes,
            "stored",
        ),
        (
            "limits.max_unused_bytes_per_client",
            raw.limits.max_unused_bytes_per_client,
            "uploaded",
        ),
    ] {
        if value < raw.limits.max_artifact_bytes {
            p.add(
                entry,
                format!(
                    "{value} is less than limits.max_artifact_bytes ({}): the largest artifact could never be {verb}",
                    raw.limits.max_artifact_bytes
                ),
            );
        }
    }
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
    Limits {
        max_job_bytes: usize::try_from(raw.limits.max_job_bytes).unwrap_or(usize::MAX),
        max_artifact_bytes: raw.limits.max_artifact_bytes,
        max_unpacked_bytes: raw.limits.max_unpacked_bytes,
        max_store_bytes: raw.limits.max_store_bytes,
        max_unused_bytes_per_client: raw.limits.max_unused_bytes_per_client,
        unused_artifact_ttl: p.duration(
            "limits.unused_artifact_ttl",
            &raw.limits.unused_artifact_ttl,
            true,
        ),
        max_validity: p.duration("limits.max_validity", &raw.limits.max_validity, false),
        clock_skew: p.duration("limits.clock_skew", &raw.limits.clock_skew, true),
        max_plan_validity: p.duration(
            "limits.max_plan_validity",
            &raw.limits.max_plan_validity,
            false,
        ),
        max_dispatch_validity: p.duration(
            "limits.max_dispatch_validity",
            &raw.limits.max_dispatch_validity,
            false,
        ),
        releases_kept: usize::try_from(raw.limits.releases_kept).unwrap_or(usize::MAX),
        client_rejections_burst: raw.limits.client_rejections_burst,
        client_rejections_per_second: raw.limits.client_rejections_per_second,
        client_connections: usize::try_from(raw.limits.client_connections).unwrap_or(usize::MAX),
    }
}
