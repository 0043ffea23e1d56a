//! The thresholds file (TOML). Every setting is optional; the defaults are the CD model's
//! quality thresholds: tests 100 % passing, line coverage >= 80 %, no critical or high
//! findings, a performance regression under 5 %.
//!
//! ```toml
//! [tests]
//! min_pass_rate_percent = 100.0
//! [coverage]
//! min_line_percent = 80.0
//! [security]
//! max_critical = 0
//! max_high = 0
//! [performance]
//! max_regression_percent = 5.0   # a regression must stay below this
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `uri` of the built-in thresholds in a statement's `policy`.
pub const BUILTIN_URI: &str = "builtin:cd-model";

/// Why the thresholds file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdsError {
    /// It could not be read.
    #[error("cannot read thresholds file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not a thresholds file.
    #[error("thresholds file {} is invalid: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// `[tests]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestThresholds {
    /// Passed cases in percent of those that ran, at least.
    pub min_pass_rate_percent: f64,
}

impl Default for TestThresholds {
    fn default() -> Self {
        Self {
            min_pass_rate_percent: 100.0,
        }
    }
}

/// `[coverage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoverageThresholds {
    /// Lines covered in percent, at least.
    pub min_line_percent: f64,
}

impl Default for CoverageThresholds {
    fn default() -> Self {
        Self {
            min_line_percent: 80.0,
        }
    }
}

/// `[security]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityThresholds {
    /// Critical findings, at most.
    pub max_critical: u64,
    /// High findings, at most.
    pub max_high: u64,
}

/// `[performance]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceThresholds {
    /// The worst regression, in percent of its baseline, must be below this.
    pub max_regression_percent: f64,
}

impl Default for PerformanceThresholds {
    fn default() -> Self {
        Self {
            max_regression_percent: 5.0,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Test results.
    pub tests: TestThresholds,
    /// Coverage.
    pub coverage: CoverageThresholds,
    /// Security findings.
    pub security: SecurityThresholds,
    /// Benchmarks.
    pub performance: PerformanceThresholds,
}

impl Thresholds {
    /// Reads a thresholds file.
    ///
    /// # Errors
    ///
    /// [`ThresholdsError`].
    pub fn read(path: &Path) -> Result<Thresholds, ThresholdsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let t: Thresholds = toml::from_str(&text).map_err(|e| ThresholdsError::Invalid {
            path: path.to_owned(),
            detail: e.message().to_owned(),
        })?;
        let percents = [
            ("tests.min_pass_rate_percent", t.tests.min_pass_rate_percent),
            ("coverage.min_line_percent", t.coverage.min_line_percent),
        ];
        for (name, v) in percents {
            if !(0.0..=100.0).contains(&v) {
                return Err(ThresholdsError::Invalid {
                    path: path.to_owned(),
                    detail: format!("{name} = {v} is not a percent (0 to 100)"),
                });
            }
        }
        Ok(t)
    }

    /// SHA-256 of the thresholds' JSON: the statement's `policy.digest`, so a host can tell
    /// which thresholds a gate was measured against.
    pub fn digest(&self) -> String {
        // Serialising plain numbers and structs cannot fail; an empty digest would only make
        // the statement name no thresholds, never pass a gate.
        let json = serde_json::to_vec(self).unwrap_or_default();
        gantry_policy::job::Sha256Hex::of(&json).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_cd_models_table_and_a_file_overrides_them() {
        let d = Thresholds::default();
        assert_eq!(d.tests.min_pass_rate_percent, 100.0);
        assert_eq!(d.coverage.min_line_percent, 80.0);
        assert_eq!((d.security.max_critical, d.security.max_high), (0, 0));
        assert_eq!(d.performance.max_regression_percent, 5.0);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[coverage]\nmin_line_percent = 90.0\n").unwrap();
        let t = Thresholds::read(&path).unwrap();
        assert_eq!(t.coverage.min_line_percent, 90.0);
        assert_eq!(t.tests, d.tests);
        assert_ne!(t.digest(), d.digest());

        std::fs::write(&path, "[coverage]\nmin_lines = 90.0\n").unwrap();
        let e = Thresholds::read(&path).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        std::fs::write(&path, "[coverage]\nmin_line_percent = 180.0\n").unwrap();
        assert!(Thresholds::read(&path).is_err());
    }
}
