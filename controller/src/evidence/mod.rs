//! Release evidence from the reports a CI already makes: test results, coverage, security
//! findings and benchmark comparisons, measured against thresholds.
//!
//! Each parser reads one standard format with a well-kept parser (quick-xml for XML, serde
//! for JSON; LCOV is line-based text) and yields numbers; [`measure`] turns numbers and
//! [`thresholds`] into the gate results `gantry gate evaluate` prints and signs.
//!
//! # Layout
//!
//! * [`junit`]: JUnit XML (`<testsuites>`/`<testsuite>`/`<testcase>`) to test counts.
//! * [`coverage`]: LCOV and Cobertura XML to covered and total lines.
//! * [`sarif`]: SARIF 2.1.0 to findings by severity.
//! * [`mod@bench`]: a benchmark comparison (JSON, baseline against current) to the worst regression.
//! * [`thresholds`]: the thresholds file, with the CD model's table as its defaults.
//! * [`measure`]: numbers against thresholds: one [`GateResult`](gantry_proto::attest::GateResult) per gate.

pub mod bench;
pub mod coverage;
pub mod junit;
pub mod measure;
pub mod sarif;
pub mod thresholds;

use std::path::PathBuf;

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the format it was given as.
    #[error("{} is not a valid {format} report: {detail}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// `JUnit XML`, `LCOV`, ...
        format: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// A report's bytes with its path, for messages and the statement's `source`.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl Report {
    /// Reads `path` as UTF-8 text.
    ///
    /// # Errors
    ///
    /// [`EvidenceError::Read`]; [`EvidenceError::Parse`] when it is not UTF-8.
    pub fn read(path: &std::path::Path, format: &'static str) -> Result<Report, EvidenceError> {
        let bytes = std::fs::read(path).map_err(|source| EvidenceError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| EvidenceError::Parse {
            path: path.to_owned(),
            format,
            detail: format!("not UTF-8: {e}"),
        })?;
        Ok(Report {
            path: path.to_owned(),
            text,
        })
    }

    /// An [`EvidenceError::Parse`] about this report.
    pub fn invalid(&self, format: &'static str, detail: impl Into<String>) -> EvidenceError {
        EvidenceError::Parse {
            path: self.path.clone(),
            format,
            detail: detail.into(),
        }
    }

    /// `name (sha256:...)`, the statement's `source` of a gate.
    pub fn source(&self) -> String {
        let name = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!(
            "{name} (sha256:{})",
            gantry_policy::job::Sha256Hex::of(self.text.as_bytes())
        )
    }
}
