//! `gantry gate evaluate`: read a CI's reports, hold each measured value to its threshold,
//! print every one, and only when all pass sign an in-toto statement of them over the
//! artifact's digest (docs/releases.md). A failed gate signs nothing and exits 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use gantry_proto::attest::{
    AttestError, Envelope, GATE_PREDICATE_TYPE, GateResults, PolicyRef, STATEMENT_TYPE, Statement,
    Subject, Verdict, Verifier,
};
use gantry_proto::keys::{KeyError, SigningKey};

use crate::cli::GateEvaluateArgs;
use crate::evidence::thresholds::{BUILTIN_URI, Thresholds, ThresholdsError};
use crate::evidence::{EvidenceError, Report, bench, coverage, junit, measure, sarif};
use crate::exit::Exit;
use crate::flags::{self, FlagError};

/// Why `gate evaluate` could not judge the reports.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// A report is unreadable or not its format.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The thresholds file.
    #[error(transparent)]
    Thresholds(#[from] ThresholdsError),
    /// The signing key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The artifact could not be hashed.
    #[error("cannot read artifact {}", path.display())]
    ReadArtifact {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No report was given.
    #[error("no report given: pass at least one of --junit, --lcov, --cobertura, --sarif, --bench")]
    NoReports,
    /// The statement could not be signed.
    #[error(transparent)]
    Attest(#[from] AttestError),
    /// The evidence file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl GateError {
    /// The exit code: every one is an input error (a failed gate is not an error: exit 1).
    pub fn exit(&self) -> Exit {
        match self {
            GateError::Flag(_)
            | GateError::Evidence(_)
            | GateError::Thresholds(_)
            | GateError::Key(_)
            | GateError::ReadArtifact { .. }
            | GateError::NoReports
            | GateError::Attest(_)
            | GateError::Write { .. } => Exit::Usage,
        }
    }
}

/// Measures every report given against `t`, in gate order.
///
/// # Errors
///
/// [`GateError::Evidence`] for an unreadable report; [`GateError::NoReports`].
pub fn measure_all(
    args: &GateEvaluateArgs,
    t: &Thresholds,
) -> Result<Vec<measure::Gate>, GateError> {
    let mut gates = Vec::new();
    if !args.junit.is_empty() {
        let mut total = junit::TestCounts::default();
        let mut sources = Vec::new();
        for path in &args.junit {
            let r = Report::read(path, "JUnit XML")?;
            let c = junit::parse(&r)?;
            total.total += c.total;
            total.failed += c.failed;
            total.skipped += c.skipped;
            sources.push(r.source());
        }
        gates.push(measure::tests(&total, t, sources.join(", ")));
    }
    if let Some(path) = &args.lcov {
        let r = Report::read(path, "LCOV")?;
        gates.push(measure::coverage(&coverage::parse_lcov(&r)?, t, r.source()));
    }
    if let Some(path) = &args.cobertura {
        let r = Report::read(path, "Cobertura XML")?;
        gates.push(measure::coverage(
            &coverage::parse_cobertura(&r)?,
            t,
            r.source(),
        ));
    }
    if !args.sarif.is_empty() {
        let mut total = sarif::Findings::default();
        let mut sources = Vec::new();
        for path in &args.sarif {
            let r = Report::read(path, "SARIF")?;
            let f = sarif::parse(&r)?;
            total.critical += f.critical;
            total.high += f.high;
            total.medium += f.medium;
            total.low += f.low;
            sources.push(r.source());
        }
        gates.push(measure::security(&total, t, sources.join(", ")));
    }
    if let Some(path) = &args.bench {
        let r = Report::read(path, "benchmark comparison JSON")?;
        gates.push(measure::performance(&bench::parse(&r)?, t, r.source()));
    }
    if gates.is_empty() {
        return Err(GateError::NoReports);
    }
    Ok(gates)
}

/// The table `gate evaluate` prints: one line per value held to a threshold.
pub fn table(gates: &[measure::Gate]) -> String {
    let mut rows = vec![[
        "GATE".to_owned(),
        "VALUE".to_owned(),
        "THRESHOLD".to_owned(),
        "RESULT".to_owned(),
    ]];
    for g in gates {
        for c in &g.checks {
            rows.push([
                g.kind.as_str().to_owned(),
                format!("{} {}", c.name, measure::num(c.value)),
                c.threshold(),
                if c.passed() { "passed" } else { "FAILED" }.to_owned(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `gantry gate evaluate`.
///
/// # Errors
///
/// [`GateError`] when the reports, thresholds, key or output cannot be used (exit 2).
pub fn evaluate(args: &GateEvaluateArgs) -> Result<Exit, GateError> {
    let (digest, name) = match (&args.artifact, &args.digest) {
        (Some(path), _) => {
            let info = crate::commands::job::spec::hash_file(path).map_err(|source| {
                GateError::ReadArtifact {
                    path: path.clone(),
                    source,
                }
            })?;
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            (info.sha256, name)
        }
        (None, Some(d)) => (flags::sha256("--digest", d)?, String::new()),
        (None, None) => return Err(FlagError::new("--artifact", "or --digest is required").into()),
    };
    let valid_for = flags::duration("--valid-for", &args.valid_for)?;
    let (thresholds, uri) = match &args.thresholds {
        Some(p) => (Thresholds::read(p)?, p.display().to_string()),
        None => (Thresholds::default(), BUILTIN_URI.to_owned()),
    };
    let key = SigningKey::read_pem_file(&args.key)?;
    let gates = measure_all(args, &thresholds)?;

    println!("gates for artifact sha256:{digest}");
    print!("{}", table(&gates));
    let failed: Vec<String> = gates
        .iter()
        .flat_map(|g| {
            g.failures()
                .map(move |c| format!("gate {} failed: {c}", g.kind))
        })
        .collect();
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("{f}");
        }
        eprintln!("nothing signed: every gate must pass");
        return Ok(Exit::JobFailed);
    }

    let now = SystemTime::now();
    let now_secs = flags::unix_secs(now);
    let expires_at =
        now_secs.saturating_add(i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX));
    let statement = Statement {
        type_: STATEMENT_TYPE.to_owned(),
        subject: vec![Subject {
            name,
            digest: BTreeMap::from([("sha256".to_owned(), digest.clone())]),
        }],
        predicate_type: GATE_PREDICATE_TYPE.to_owned(),
        predicate: GateResults {
            verifier: Verifier {
                id: format!("gantry gate evaluate {}", env!("CARGO_PKG_VERSION")),
            },
            time_verified: flags::format_unix(now_secs),
            expires_at,
            policy: PolicyRef {
                uri,
                digest: BTreeMap::from([("sha256".to_owned(), thresholds.digest())]),
            },
            verification_result: Verdict::Passed,
            gates: gates.iter().map(measure::Gate::result).collect(),
        },
    };
    let envelope = Envelope::sign(&statement, &key)?;
    let bytes = envelope.to_json()?;
    std::fs::write(&args.out, &bytes).map_err(|source| GateError::Write {
        path: args.out.clone(),
        source,
    })?;
    let names: Vec<&str> = gates.iter().map(|g| g.kind.as_str()).collect();
    println!(
        "all {} gate(s) passed ({}); signed with key {} and wrote {}",
        gates.len(),
        names.join(", "),
        key.key_id(),
        args.out.display()
    );
    println!(
        "valid until {}; agents count it when that key has role ci",
        flags::format_unix(expires_at)
    );
    println!(
        "next: gantry job create ... --evidence {}",
        args.out.display()
    );
    Ok(Exit::Success)
}
