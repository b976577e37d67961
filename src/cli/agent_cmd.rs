//! `invalog agent`: runs the sidecar until SIGTERM or SIGINT, then finishes
//! the batch in hand, stores the applied sequence and exits 0.

use std::path::PathBuf;

use invalog::agent::{self, AgentError};

use super::{
    init_logging, load_config, EXIT_CONFIG, EXIT_FAILURE, EXIT_NATS, EXIT_OK, EXIT_STREAM,
};

/// Arguments of `invalog agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The configuration file (TOML; `INVALOG_…` environment variables override it).
    #[arg(long, short, default_value = "config/agent.toml")]
    config: PathBuf,
}

/// Runs the agent.
pub async fn run(args: AgentArgs, log_filter: Option<String>) -> anyhow::Result<u8> {
    let settings = match load_config(&args.config).and_then(|c| c.agent().map_err(Into::into)) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("invalog: {error:#}");
            return Ok(EXIT_CONFIG);
        }
    };
    init_logging(
        log_filter.as_deref().unwrap_or(&settings.logging.level),
        settings.logging.format,
    );
    let result = agent::run(settings, shutdown_signal(), |addr| {
        tracing::info!(%addr, "HTTP listening");
    })
    .await;
    let code = match &result {
        Ok(()) => EXIT_OK,
        Err(AgentError::Connect(_)) => EXIT_NATS,
        Err(AgentError::Provision(_)) => EXIT_STREAM,
        Err(AgentError::Applier(_) | AgentError::Registry(_)) => EXIT_CONFIG,
        Err(_) => EXIT_FAILURE,
    };
    if let Err(error) = result {
        tracing::error!(%error, "agent failed");
        eprintln!("invalog: {error}");
    }
    Ok(code)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
