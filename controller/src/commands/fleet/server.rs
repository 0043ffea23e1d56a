//! `gantry server --config FILE`: runs the controller service until SIGINT or SIGTERM.

use gantry_service::config::Config;

use super::FleetError;
use crate::exit::Exit;
use crate::fleet_cli::ServerArgs;

/// Runs the service.
///
/// # Errors
/// [`FleetError`]: a config that cannot be used, a store or listener that cannot be opened.
pub async fn run(args: ServerArgs) -> Result<Exit, FleetError> {
    let config = Config::load(&args.config)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another subscriber already set (in-process tests) is fine: keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let shutdown = async {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    gantry_service::server::run(config, shutdown).await?;
    Ok(Exit::Success)
}
