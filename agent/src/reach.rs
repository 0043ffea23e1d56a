//! Start-up check that each app's user can reach the app's part of the data dir.
//!
//! Releases are unpacked under `<data_dir>/apps/<app>/`, and instances and the front door run
//! there as the app's user. When a directory above it is closed to that user (a data dir under
//! a 0700 home, say), every start would fail with `EACCES`; the agent refuses to start instead,
//! and `check-config` reports the same, naming the directory that blocks and whom. The front
//! door's own program is taken care of where it is started (see
//! [`front_door_program`](crate::app::front_door::front_door_program)).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::supervisor::access::{self, AccessError};

/// One app whose user cannot reach its directory.
#[derive(Debug)]
pub struct Unreachable {
    /// The app.
    pub app: String,
    /// Its directory under the data dir.
    pub dir: PathBuf,
    /// What blocks it.
    pub error: AccessError,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "app {}: {}", self.app, crate::error::reason(&self.error))?;
        if let AccessError::NotSearchable { dir, .. } = &self.error {
            write!(
                f,
                " (run `chmod o+x {}`, or choose a data_dir outside it)",
                dir.display()
            )?;
        }
        Ok(())
    }
}

/// `<data_dir>/apps/<app>`.
pub fn app_dir(data_dir: &Path, app: &str) -> PathBuf {
    data_dir.join("apps").join(app)
}

/// Every app whose user cannot reach `<data_dir>/apps/<app>`; apps that run as the agent's
/// own user or as root are not checked.
pub fn unreachable_apps(config: &Config) -> Vec<Unreachable> {
    config
        .policy
        .apps
        .iter()
        .filter_map(|(name, app)| {
            let who = access::Identity::of(&app.run_as)?;
            let dir = app_dir(&config.data_dir, name.as_str());
            access::check_reachable(&who, &dir)
                .err()
                .map(|error| Unreachable {
                    app: name.to_string(),
                    dir,
                    error,
                })
        })
        .collect()
}
