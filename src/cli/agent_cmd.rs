//! `invalog agent`: runs the sidecar until SIGTERM or SIGINT, then finishes
//! the batch in hand, stores the applied sequence and exits 0.

use invalog_agent::{AgentError, LogFormat};

use super::ConfigArg;
use super::{
    init_logging, load_config, EXIT_CONFIG, EXIT_FAILURE, EXIT_NATS, EXIT_OK, EXIT_STREAM,
};

/// Arguments of `invalog agent`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs until SIGTERM or SIGINT (Ctrl-C), then finishes the batch in hand, stores the applied sequence and exits 0. While no NATS server answers it keeps trying (/readyz answers 503 meanwhile).\n\nExit codes: 0 a clean stop; 1 a failure while running; 2 invalid configuration, an applier that cannot be built, or an http.listen address that cannot be bound; 3 a NATS server refused the connection (credentials, TLS); 4 the stream cannot be provisioned as configured.\n\nExamples:\n  invalog agent -c config/agent.toml\n  INVALOG_NODE__ID=web-2 invalog agent -c /etc/invalog/agent.toml\n  invalog agent -c config/demo.toml    # with `nats-server -js` on this machine; then: curl -s 127.0.0.1:9464/status"
)]
pub struct AgentArgs {
    #[command(flatten)]
    config: ConfigArg,
}

/// Runs the agent.
pub async fn run(args: AgentArgs, log_filter: Option<String>) -> anyhow::Result<u8> {
    let settings =
        match load_config(&args.config.agent()).and_then(|c| c.agent().map_err(Into::into)) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("invalog: {error:#}");
                return Ok(EXIT_CONFIG);
            }
        };
    let format = settings.logging.format;
    init_logging(
        log_filter.as_deref().unwrap_or(&settings.logging.level),
        format,
    );
    let result = invalog_agent::run(settings, shutdown_signal(), |addr| {
        tracing::info!(%addr, "HTTP listening");
    })
    .await;
    let code = match &result {
        Ok(()) => EXIT_OK,
        Err(AgentError::Connect(_)) => EXIT_NATS,
        Err(AgentError::Provision(_)) => EXIT_STREAM,
        Err(AgentError::Applier(_) | AgentError::Registry(_) | AgentError::Listen { .. }) => {
            EXIT_CONFIG
        }
        Err(_) => EXIT_FAILURE,
    };
    // Said once: as a log line when logs are JSON (for the log pipeline),
    // else as a plain line for the person at the terminal.
    if let Err(error) = result {
        match format {
            LogFormat::Json => tracing::error!(%error, exit_code = code, "agent failed"),
            LogFormat::Text => eprintln!("invalog: {error}"),
        }
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
