//! `[[keys]]`: the trusted public keys, their roles, validity and revocation.

use std::collections::BTreeMap;
use std::path::Path;

use gantry_proto::keys::PublicKey;

use super::{Problems, resolve};
use crate::config::TrustedKey;
use crate::config::raw::{RawConfig, RawKey};

/// Every key of `raw`; a key with a problem is left out (and the problem reported).
pub(super) fn validate_keys(p: &mut Problems, raw: &RawConfig, base: &Path) -> Vec<TrustedKey> {
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
                crate::config::format_time(b),
                crate::config::format_time(a)
            ),
        );
    }
    (not_before, not_after)
}
