//! What runs where, persisted atomically so a crash never leaves a half-written file.
//!
//! Every durable write in the agent goes through [`write_atomic`]: temp file in the same
//! directory, write, fsync, rename over the target, fsync the directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::{JobId, ReleaseSpec};

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Writing, syncing or renaming failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Writes `bytes` to `path` atomically and durably: a reader sees the old file or the new one,
/// never a mix, and after return the new one survives a power cut.
///
/// # Errors
///
/// [`StateError::Write`] naming `path` when any step fails; the temp file is removed then.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let tmp = dir.join(format!(
        "{}{}",
        temp_prefix(&name.to_string_lossy()),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        #[cfg(test)]
        crash::point(crash::Point::HalfWritten, || {
            file.write_all(&bytes[..bytes.len() / 2])
        });
        file.write_all(bytes)?;
        #[cfg(test)]
        crash::point(crash::Point::Written, || Ok(()));
        file.sync_all()?;
        #[cfg(test)]
        crash::point(crash::Point::Synced, || Ok(()));
        fs::rename(&tmp, path)?;
        #[cfg(test)]
        crash::point(crash::Point::Renamed, || Ok(()));
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// The name of [`write_atomic`]'s temp files for a file called `name`, before the writer's pid.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Removes the temp files a crash inside [`write_atomic`] left beside `path` (the target itself
/// is then still the old file or the new one, never a mix); returns what it removed. Only the
/// agent holding the data dir's lock may call it: a live writer's temp file looks the same.
///
/// # Errors
///
/// The I/O error of listing the directory or removing a file.
pub fn remove_temp_leftovers(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = temp_prefix(&name.to_string_lossy());
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// A simulated crash inside [`write_atomic`] (tests only): the writer "dies" at a chosen step,
/// by a panic, so that none of its own clean-up runs, exactly as after a `kill -9`.
#[cfg(test)]
pub(crate) mod crash {
    use std::cell::Cell;

    /// Where the writer dies.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Point {
        /// Half the bytes are in the temp file.
        HalfWritten,
        /// All bytes written, not yet synced.
        Written,
        /// Synced, not yet renamed.
        Synced,
        /// Renamed over the target, directory not yet synced.
        Renamed,
    }

    thread_local! {
        static AT: Cell<Option<Point>> = const { Cell::new(None) };
    }

    /// Makes the next [`super::write_atomic`] on this thread die at `at`.
    pub(crate) fn arm(at: Point) {
        AT.with(|c| c.set(Some(at)));
    }

    /// At step `here`: when armed for it, does `partial` (what the step got done) and dies.
    pub(super) fn point(here: Point, partial: impl FnOnce() -> std::io::Result<()>) {
        if AT.with(|c| c.get()) == Some(here) {
            AT.with(|c| c.set(None));
            partial().expect("the partial step of a simulated crash");
            panic!("simulated crash at {here:?}");
        }
    }
}

/// fsyncs a directory so that creations, renames and removals inside it are durable.
///
/// # Errors
///
/// The directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a directory (and parents) and sets its mode.
///
/// # Errors
///
/// The I/O error of creating it or setting its mode.
pub fn create_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// Reads and parses a JSON file written by [`write_atomic`]; `Ok(None)` when it does not exist.
///
/// # Errors
///
/// [`StateError::Read`] or [`StateError::Corrupt`] naming the file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// One running instance as recorded on disk, enough to adopt it after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Instance index within the app (0-based).
    pub index: u32,
    /// Process id of the instance (its process group leader).
    pub pid: u32,
    /// Start time from `/proc/<pid>/stat` (field 22), so a reused pid is never mistaken.
    pub start_time: u64,
    /// The port it listens on.
    pub port: u16,
    /// The release it runs.
    pub version: semver::Version,
    /// The slot it serves from. State files written before records held it are read with
    /// [`AppState::load`], which derives it from the port.
    #[serde(default)]
    pub slot: Slot,
}

/// One of an app's two sets of ports: blue-green and canary start the new release in the
/// slot that is not serving, then move traffic.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The first `max_instances` ports of the app's range.
    #[default]
    Blue,
    /// The next `max_instances` ports.
    Green,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    /// "blue" or "green".
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }
}

/// The previous release's slot, kept running after a blue-green switch so a rollback can
/// switch back at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standby {
    /// The slot.
    pub slot: Slot,
    /// The release running in it.
    pub version: semver::Version,
    /// When it is stopped, Unix milliseconds.
    pub until_ms: i64,
}

/// What the agent knows about one app; `<data_dir>/apps/<app>/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    /// The release `current` points at and whose instances should run.
    pub current: Option<semver::Version>,
    /// The release before it, the default rollback target.
    pub previous: Option<semver::Version>,
    /// The newest release that passed its health checks.
    pub last_known_good: Option<semver::Version>,
    /// Instances believed to be running.
    pub instances: Vec<InstanceRecord>,
    /// Specs of releases still on disk, by version, so a rollback needs no re-upload.
    pub releases: BTreeMap<String, ReleaseSpec>,
    /// The job acting on the app, if one was running when this was written.
    pub active_job: Option<JobId>,
    /// The slot serving traffic (apps with a front door or router).
    #[serde(default)]
    pub active_slot: Slot,
    /// The front door process, to adopt after an agent restart.
    #[serde(default)]
    pub front_door: Option<InstanceRecord>,
    /// The previous release's slot, still running after a blue-green switch.
    #[serde(default)]
    pub standby: Option<Standby>,
    /// A stop job stopped the app: a restarted agent brings back no instance and no front
    /// door until a deploy, rollback or restart starts it again.
    #[serde(default)]
    pub stopped: bool,
}

impl AppState {
    /// The drain timeout `version` was deployed with, if its spec is known.
    pub fn drain_timeout_of(&self, version: &semver::Version) -> Option<std::time::Duration> {
        self.spec_of(version).map(|r| r.rollout.drain_timeout)
    }

    /// The state file's path in an app directory.
    pub fn path(app_dir: &Path) -> PathBuf {
        app_dir.join("state.json")
    }

    /// Loads the app's state, or the empty state when none was written yet. An instance
    /// record from before records named their slot gets `slot_of(port)`.
    ///
    /// # Errors
    ///
    /// [`StateError`] when the file exists but cannot be read or parsed.
    pub fn load(app_dir: &Path, slot_of: impl Fn(u16) -> Slot) -> Result<AppState, StateError> {
        let path = Self::path(app_dir);
        let Some(mut raw) = read_json::<serde_json::Value>(&path)? else {
            return Ok(AppState::default());
        };
        if let Some(records) = raw.get_mut("instances").and_then(|v| v.as_array_mut()) {
            for record in records.iter_mut().filter_map(|r| r.as_object_mut()) {
                if record.contains_key("slot") {
                    continue;
                }
                let port = record.get("port").and_then(serde_json::Value::as_u64);
                if let Some(port) = port.and_then(|p| u16::try_from(p).ok()) {
                    let slot = serde_json::to_value(slot_of(port)).unwrap_or_default();
                    record.insert("slot".to_owned(), slot);
                }
            }
        }
        serde_json::from_value(raw).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Persists the state atomically.
    ///
    /// # Errors
    ///
    /// [`StateError::Write`] naming the file.
    pub fn save(&self, app_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(app_dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    /// The spec of a release still on disk.
    pub fn spec_of(&self, version: &semver::Version) -> Option<&ReleaseSpec> {
        self.releases.get(&version.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first version, longer").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["state.json"]);
    }

    /// Case D8: a crash at any step of a state write leaves the old file or the new one,
    /// whole, and only a temp file that start-up removes. An in-place write (truncate, then
    /// write) fails this at `HalfWritten`.
    #[test]
    fn d8_a_crash_at_any_step_of_a_state_write_leaves_the_old_or_the_new_file_whole() {
        use crash::Point;
        let old = br#"{"current":"1.0.0","note":"the old state, longer than the new"}"#;
        let new = br#"{"current":"2.0.0"}"#;
        for (at, expect_new) in [
            (Point::HalfWritten, false),
            (Point::Written, false),
            (Point::Synced, false),
            (Point::Renamed, true),
        ] {
            for had_old in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("state.json");
                if had_old {
                    write_atomic(&path, old).unwrap();
                }
                crash::arm(at);
                let died = std::panic::catch_unwind(|| write_atomic(&path, new));
                assert!(died.is_err(), "{at:?}: the writer was to die");
                match (fs::read(&path), expect_new, had_old) {
                    (Ok(b), true, _) => assert_eq!(b, new, "{at:?}"),
                    (Ok(b), false, true) => assert_eq!(b, old, "{at:?}"),
                    (Err(e), false, false) => {
                        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{at:?}");
                    }
                    (got, _, _) => panic!("{at:?} (old file: {had_old}): {got:?}"),
                }
                // What the crash left beside it is removed at the next start, nothing else.
                let removed = remove_temp_leftovers(&path).unwrap();
                assert_eq!(
                    removed.len(),
                    usize::from(!expect_new),
                    "{at:?}: {removed:?}"
                );
                let names: Vec<_> = fs::read_dir(dir.path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                let expected: Vec<&str> = if expect_new || had_old {
                    vec!["state.json"]
                } else {
                    vec![]
                };
                assert_eq!(names, expected, "{at:?}");
                write_atomic(&path, new).unwrap();
                assert_eq!(fs::read(&path).unwrap(), new);
            }
        }
    }

    #[test]
    fn temp_leftovers_of_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(dir.path().join(".routes.json.tmp-12"), b"x").unwrap();
        fs::write(dir.path().join("state.json.tmp-12"), b"x").unwrap();
        assert!(remove_temp_leftovers(&path).unwrap().is_empty());
        assert!(
            remove_temp_leftovers(&dir.path().join("missing/state.json"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn write_atomic_names_the_path_on_failure() {
        let err = write_atomic(Path::new("/nonexistent-dir/x/state.json"), b"x").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/x/state.json"),
            "{err}"
        );
    }

    #[test]
    fn app_state_round_trips_and_defaults_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            AppState::load(dir.path(), |_| Slot::Blue).unwrap(),
            AppState::default()
        );
        let state = AppState {
            current: Some(semver::Version::new(1, 2, 3)),
            instances: vec![InstanceRecord {
                index: 0,
                pid: 42,
                start_time: 7,
                port: 18000,
                version: semver::Version::new(1, 2, 3),
                slot: Slot::Green,
            }],
            ..AppState::default()
        };
        state.save(dir.path()).unwrap();
        assert_eq!(AppState::load(dir.path(), |_| Slot::Blue).unwrap(), state);
    }

    #[test]
    fn corrupt_state_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(AppState::path(dir.path()), b"{not json").unwrap();
        let err = AppState::load(dir.path(), |_| Slot::Blue).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }));
        assert!(err.to_string().contains("state.json"));
    }

    #[test]
    fn a_record_written_before_slots_were_recorded_gets_its_slot_from_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"current":"1.0.0","previous":null,"last_known_good":null,"instances":[
            {"index":0,"pid":42,"start_time":7,"port":18000,"version":"1.0.0"},
            {"index":0,"pid":43,"start_time":8,"port":18004,"version":"1.0.0"}],
            "releases":{},"active_job":null}"#;
        fs::write(AppState::path(dir.path()), old).unwrap();
        let slot_of = |port: u16| {
            if port >= 18004 {
                Slot::Green
            } else {
                Slot::Blue
            }
        };
        let state = AppState::load(dir.path(), slot_of).unwrap();
        let slots: Vec<(u16, Slot)> = state.instances.iter().map(|r| (r.port, r.slot)).collect();
        assert_eq!(slots, vec![(18000, Slot::Blue), (18004, Slot::Green)]);
    }
}
