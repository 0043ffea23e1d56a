//! A canary's split of one flag (`release.rollout.canary_flag`): each step serves the flag's
//! canary variant to a share of users ([`gantry_flags::Flag::split`]), over the signed set in
//! force, which is never rewritten.
//!
//! * Before the canary starts, [`Flags::canary_flag`] checks that the set in force has the
//!   flag and that the flag allows a split (enabled, a `canaryVariant` besides its default);
//!   otherwise the job fails before anything changes.
//! * [`CanaryFlag::set`] records `flags.canary_weight` in the audit log, then serves the
//!   percent at once (an event on every stream). It lives in memory only: an agent that
//!   restarts mid-canary serves what was in force before it.
//! * When the canary succeeds, [`CanaryFlag::keep`] stores its last split (100%) with the set
//!   in force, so it outlives the job and a restart. When it fails, [`CanaryFlag::end`] puts
//!   back what was served before the canary.
//! * A split applies only while the flag in force allows it: a kill switch (the flag
//!   `DISABLED`) always wins. A new signed set that changes or removes the flag drops the
//!   split a canary kept for it, as does a rollback away from the release whose canary kept
//!   it ([`Flags::drop_splits_of`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_policy::job::{AppName, Sha256Hex};
use serde_json::json;

use super::store::{self, InForce, Split};
use super::{AppFlags, Flags, FlagsError, Served};
use crate::audit::Entry;

/// What `f` serves with `splits` applied to the flags that allow them; the digest changes
/// with the splits applied, so that ETags and event streams see the change.
pub(super) fn served(f: &InForce, splits: &BTreeMap<String, Split>) -> Served {
    let mut set = f.set.clone();
    let mut applied = Vec::new();
    for (key, split) in splits {
        if let Some(flag) = f.set.flags.get(key)
            && let Ok(s) = flag.split(split.percent)
        {
            set.flags.insert(key.clone(), s);
            applied.push((key.as_str(), split.percent));
        }
    }
    let digest = if applied.is_empty() {
        f.digest.clone()
    } else {
        let text = json!({"digest": f.digest, "splits": applied}).to_string();
        Sha256Hex::of(text.as_bytes()).to_string()
    };
    Served {
        version: f.version,
        digest,
        set,
    }
}

/// Serves `entry`'s set in force with its splits now.
fn resend(entry: &AppFlags) {
    if let Some(f) = &entry.in_force {
        entry
            .tx
            .send_replace(Some(Arc::new(served(f, &entry.splits))));
    }
}

/// The kept splits of `previous` that still hold in a new set that `changes` these flags:
/// a new signed definition of a flag replaces what a canary left for it. A split kept for a
/// flag `previous` does not have (removed while its canary ran) holds on nothing: it goes
/// too, so that it never applies to a flag added again under that key.
pub(super) fn kept_after(
    previous: &InForce,
    changed: &[String],
    removed: &[String],
) -> BTreeMap<String, Split> {
    previous
        .splits
        .iter()
        .filter(|(k, _)| {
            previous.set.flags.contains_key(*k) && !changed.contains(k) && !removed.contains(k)
        })
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect()
}

/// The flags whose split `previous` kept and `kept` no longer holds.
pub(super) fn dropped(previous: Option<&InForce>, kept: &BTreeMap<String, Split>) -> Vec<String> {
    previous
        .map(|p| {
            p.splits
                .keys()
                .filter(|k| !kept.contains_key(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `flag` of the set in force allows a canary's split now.
fn allows_split(f: &InForce, flag: &str) -> bool {
    f.set
        .flags
        .get(flag)
        .is_some_and(|d| d.canary_split().is_ok())
}

/// Drops from the applied splits those kept by `previous` that `kept` no longer holds (a
/// running canary's split of the same flag stays).
pub(super) fn forget_dropped(
    entry: &mut AppFlags,
    previous: &InForce,
    kept: &BTreeMap<String, Split>,
) -> Vec<String> {
    let dropped = dropped(Some(previous), kept);
    for k in &dropped {
        if entry.splits.get(k) == previous.splits.get(k) {
            entry.splits.remove(k);
        }
    }
    dropped
}

/// The handle a canary's steps use to split their flag, from [`Flags::canary_flag`].
#[derive(Debug, Clone)]
pub struct CanaryFlag {
    flags: Flags,
    app: AppName,
    flag: String,
    job_id: String,
    release: String,
}

impl Flags {
    /// Checks that a canary of `release` by `job_id` may split `flag` of `app`: the app
    /// serves flags, has a set in force, the set has the flag, and the flag allows a split.
    ///
    /// # Errors
    ///
    /// [`FlagsError::FlagsNotEnabled`], [`FlagsError::NoFlagSet`], [`FlagsError::UnknownFlag`]
    /// or [`FlagsError::CannotSplit`].
    pub fn canary_flag(
        &self,
        app: &AppName,
        flag: &str,
        job_id: &str,
        release: &semver::Version,
    ) -> Result<CanaryFlag, FlagsError> {
        let Some((_, in_force)) = self.in_force(app) else {
            return Err(FlagsError::FlagsNotEnabled {
                app: app.to_string(),
            });
        };
        let f = in_force.ok_or_else(|| FlagsError::NoFlagSet {
            app: app.to_string(),
        })?;
        let def = f
            .set
            .flags
            .get(flag)
            .ok_or_else(|| FlagsError::UnknownFlag {
                app: app.to_string(),
                version: f.version,
                flag: flag.to_owned(),
            })?;
        def.canary_split().map_err(|why| FlagsError::CannotSplit {
            app: app.to_string(),
            flag: flag.to_owned(),
            why,
        })?;
        Ok(CanaryFlag {
            flags: self.clone(),
            app: app.clone(),
            flag: flag.to_owned(),
            job_id: job_id.to_owned(),
            release: release.to_string(),
        })
    }

    /// After the rollback `job_id` replaced `release` of `app`: drops the splits that
    /// release's canaries kept (`flags.canary_weight` with a null percent for each) and
    /// returns their flags.
    ///
    /// # Errors
    ///
    /// [`FlagsError::Audit`] or [`FlagsError::Store`]; the splits then stay.
    pub async fn drop_splits_of(
        &self,
        app: &AppName,
        release: &semver::Version,
        job_id: &str,
    ) -> Result<Vec<String>, FlagsError> {
        let release = release.to_string();
        let Some((_, Some(f))) = self.in_force(app) else {
            return Ok(Vec::new());
        };
        let gone: Vec<(String, Split)> = f
            .splits
            .iter()
            .filter(|(_, s)| s.release == release)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (flag, split) in &gone {
            let e = entry(app, job_id, &release, flag, &f, None, Some(split.percent))
                .with("why", json!(format!("rolled back from release {release}")));
            self.audit.append(e).await.map_err(FlagsError::Audit)?;
        }
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let mut apps = self.lock();
        let Some(entry) = apps.get_mut(app) else {
            return Ok(Vec::new());
        };
        let Some(mut f) = entry.in_force.clone() else {
            return Ok(Vec::new());
        };
        for (flag, split) in &gone {
            f.splits.remove(flag);
            if entry.splits.get(flag) == Some(split) {
                entry.splits.remove(flag);
            }
        }
        store::save(&self.config.data_dir, app, &f).map_err(FlagsError::Store)?;
        entry.in_force = Some(f);
        resend(entry);
        Ok(gone.into_iter().map(|(k, _)| k).collect())
    }

    /// The splits applied over `app`'s set now, by flag.
    pub fn splits(&self, app: &AppName) -> Vec<Shown> {
        let apps = self.lock();
        let Some(entry) = apps.get(app) else {
            return Vec::new();
        };
        let Some(f) = &entry.in_force else {
            return Vec::new();
        };
        entry
            .splits
            .iter()
            .map(|(k, s)| Shown {
                flag: k.clone(),
                split: s.clone(),
                kept: f.splits.get(k) == Some(s),
                served: allows_split(f, k),
            })
            .collect()
    }
}

/// One split applied over an app's set, for `gantry flags show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The flag.
    pub flag: String,
    /// The split.
    pub split: Split,
    /// Stored with the set (a promoted canary's).
    pub kept: bool,
    /// The flag in force allows it, so it is served.
    pub served: bool,
}

/// `flags.canary_weight`: the job, the release, the flag, its variants, the percent set
/// (`null`: the split ended) and the one before, and whether the flag in force allows it.
fn entry(
    app: &AppName,
    job_id: &str,
    release: &str,
    flag: &str,
    f: &InForce,
    percent: Option<u32>,
    previous: Option<u32>,
) -> Entry {
    let (variant, default, served) = match f.set.flags.get(flag).map(|d| d.canary_split()) {
        Some(Ok((v, d))) => (Some(v.to_owned()), Some(d.to_owned()), true),
        _ => (None, None, false),
    };
    Entry::new("flags.canary_weight")
        .with("app", json!(app.to_string()))
        .with("job_id", json!(job_id))
        .with("release", json!(release))
        .with("flag", json!(flag))
        .with("version", json!(f.version))
        .with("variant", json!(variant))
        .with("default_variant", json!(default))
        .with("percent", json!(percent))
        .with("previous_percent", json!(previous))
        .with("served", json!(served && percent.is_some()))
}

impl CanaryFlag {
    /// The flag.
    pub fn flag(&self) -> &str {
        &self.flag
    }

    /// This canary's `flags.canary_weight` entry over `f`.
    fn entry(&self, f: &InForce, percent: Option<u32>, previous: Option<u32>, why: &str) -> Entry {
        entry(
            &self.app,
            &self.job_id,
            &self.release,
            &self.flag,
            f,
            percent,
            previous,
        )
        .with("why", json!(why))
    }

    fn now(&self) -> Option<(InForce, Option<Split>, Option<Split>)> {
        let apps = self.flags.lock();
        let entry = apps.get(&self.app)?;
        let f = entry.in_force.clone()?;
        let applied = entry.splits.get(&self.flag).cloned();
        let kept = f.splits.get(&self.flag).cloned();
        Some((f, applied, kept))
    }

    /// Serves the flag's canary variant to `percent` percent of users for `why` (the step):
    /// `flags.canary_weight` first, then the OFREP endpoint. Returns whether the flag in
    /// force allows it now (`false` after a kill switch: the percent is recorded, not served).
    ///
    /// # Errors
    ///
    /// [`FlagsError::Audit`] (nothing changed), [`FlagsError::NoFlagSet`].
    pub async fn set(&self, percent: u32, why: &str) -> Result<bool, FlagsError> {
        let (f, applied, _) = self.now().ok_or_else(|| FlagsError::NoFlagSet {
            app: self.app.to_string(),
        })?;
        let e = self.entry(&f, Some(percent), applied.map(|s| s.percent), why);
        self.flags
            .audit
            .append(e)
            .await
            .map_err(FlagsError::Audit)?;
        let served = allows_split(&f, &self.flag);
        let mut apps = self.flags.lock();
        if let Some(entry) = apps.get_mut(&self.app) {
            entry.splits.insert(
                self.flag.clone(),
                Split {
                    percent,
                    job_id: self.job_id.clone(),
                    release: self.release.clone(),
                },
            );
            resend(entry);
        }
        Ok(served)
    }

    /// Puts back what was served before the canary (the split an earlier canary kept, or the
    /// signed set alone), for `why`. Never blocks on the audit log: the entry is held and
    /// written once it can be, as a rollback's notes are.
    pub async fn end(&self, why: &str) {
        let Some((f, applied, kept)) = self.now() else {
            return;
        };
        if applied == kept {
            return;
        }
        let e = self.entry(
            &f,
            kept.as_ref().map(|s| s.percent),
            applied.map(|s| s.percent),
            why,
        );
        if let Err(err) = self.flags.audit.append_held(e).await {
            tracing::error!(
                "cannot record the end of the split of flag {}: {err}",
                self.flag
            );
        }
        let mut apps = self.flags.lock();
        if let Some(entry) = apps.get_mut(&self.app) {
            match kept {
                Some(k) => entry.splits.insert(self.flag.clone(), k),
                None => entry.splits.remove(&self.flag),
            };
            resend(entry);
        }
    }

    /// Stores the split in force with the set, once the canary succeeded, so that it stays
    /// after the job and across restarts (`flags.canary_weight`, why "kept").
    ///
    /// # Errors
    ///
    /// [`FlagsError::Audit`] or [`FlagsError::Store`]: it is then served until the agent
    /// restarts, not stored.
    pub async fn keep(&self) -> Result<(), FlagsError> {
        let Some((f, Some(applied), kept)) = self.now() else {
            return Ok(());
        };
        if applied.job_id != self.job_id || kept.as_ref() == Some(&applied) {
            return Ok(());
        }
        let e = self.entry(
            &f,
            Some(applied.percent),
            kept.map(|s| s.percent),
            "kept in force: the canary succeeded",
        );
        self.flags
            .audit
            .append(e)
            .await
            .map_err(FlagsError::Audit)?;
        let mut apps = self.flags.lock();
        let Some(entry) = apps.get_mut(&self.app) else {
            return Ok(());
        };
        let Some(mut f) = entry.in_force.clone() else {
            return Ok(());
        };
        f.splits.insert(self.flag.clone(), applied);
        store::save(&self.flags.config.data_dir, &self.app, &f).map_err(FlagsError::Store)?;
        entry.in_force = Some(f);
        Ok(())
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
