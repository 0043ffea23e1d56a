//! Operational logs (diagnostics, not the audit log): `tracing` to stderr in the foreground, or
//! to daily-rolling files with `--log-dir`. The filter comes from `GANTRY_LOG` (default `info`).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Where operational logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. Keep the returned guard alive until exit: it flushes files.
///
/// A bad `GANTRY_LOG` value falls back to `info` and says so, rather than refusing to start.
pub fn init(log_dir: Option<&Path>, format: LogFormat) -> Option<WorkerGuard> {
    let (filter, filter_error) = match EnvFilter::try_from_env("GANTRY_LOG") {
        Ok(filter) => (filter, None),
        Err(e) => {
            let set = std::env::var_os("GANTRY_LOG").is_some();
            (EnvFilter::new("info"), set.then(|| e.to_string()))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let guard = match log_dir {
        Some(dir) => {
            let appender = tracing_appender::rolling::daily(dir, "gantry-agent.log");
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let builder = builder.with_writer(writer).with_ansi(false);
            match format {
                LogFormat::Plain => builder.init(),
                LogFormat::Json => builder.json().init(),
            }
            Some(guard)
        }
        None => {
            // Colours only for a person at a terminal, never into a redirected log file.
            let builder = builder
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
            match format {
                LogFormat::Plain => builder.init(),
                LogFormat::Json => builder.json().init(),
            }
            None
        }
    };
    if let Some(e) = filter_error {
        tracing::warn!("GANTRY_LOG is not a valid filter ({e}); using \"info\"");
    }
    guard
}
