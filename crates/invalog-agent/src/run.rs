//! Running the agent: open the HTTP port, connect (retrying while no NATS
//! server answers, with `/readyz` 503 meanwhile), provision, build
//! appliers, start the node and its presence reporter, serve the HTTP API,
//! and stop cleanly when the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{http, server, starting, AgentSettings, CheckpointSettings};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// NATS refused the connection, or the connection settings are wrong
    /// (an unreachable server is retried instead).
    #[error(transparent)]
    Connect(#[from] invalog::connect::ConnectError),
    /// The stream could not be provisioned.
    #[error(transparent)]
    Provision(#[from] invalog::stream::ProvisionError),
    /// An applier could not be built.
    #[error(transparent)]
    Applier(#[from] crate::applier::ApplierError),
    /// Two refreshers share a name or id.
    #[error(transparent)]
    Registry(#[from] invalog::refresher::RegistryError),
    /// The checkpoint store could not be opened.
    #[error(transparent)]
    Checkpoint(#[from] invalog::checkpoint::CheckpointError),
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] invalog::node::NodeError),
    /// The presence reporter could not start (the bucket cannot be
    /// created or written).
    #[error(transparent)]
    Presence(#[from] invalog::presence::PresenceError),
    /// The HTTP port could not be opened (in use, or not an address of
    /// this machine).
    #[error("cannot listen on {listen} (`http.listen`): {source}; stop the process that holds it, or set another address with `http.listen` or INVALOG_HTTP__LISTEN")]
    Listen {
        /// The address.
        listen: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The HTTP listener failed.
    #[error("HTTP on {listen}: {source}")]
    Http {
        /// The address.
        listen: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Applies `[stream] provision` and reports a stream whose settings differ
/// from the configuration: a warning (the agent starts anyway), since the
/// stream has one owner — `invalog stream provision` — and agents with other
/// settings must not change it under each other nor refuse to start.
async fn stream_at_start(
    js: &async_nats::jetstream::Context,
    settings: &AgentSettings,
) -> Result<(), invalog::stream::ProvisionError> {
    use invalog::stream::Provisioned;
    let stream = &settings.log.stream;
    match invalog::stream::prepare(js, &settings.log, settings.provision).await? {
        Some(Provisioned::Created(_)) => tracing::info!(stream, "stream created"),
        Some(Provisioned::Updated(_, changes)) => {
            let changes = invalog::stream::Change::list(&changes);
            tracing::info!(stream, %changes, "stream updated to this configuration");
        }
        Some(Provisioned::Differs(_, changes)) => {
            let changes = invalog::stream::Change::list(&changes);
            tracing::warn!(
                stream,
                %changes,
                "the stream's settings differ from this configuration's [stream] \
                 (stream -> configuration); the agent leaves the stream as it is and starts. \
                 Compare: `invalog stream show --config <this file>`; make the stream follow \
                 the file: `invalog stream provision --config <this file>` (add \
                 --allow-data-loss if it deletes messages); or copy the stream's values into \
                 the file's [stream]"
            );
        }
        // `None`: `provision = "off"` and no stream; starting the node says so.
        Some(Provisioned::Unchanged(_)) | None => {}
    }
    Ok(())
}

/// Runs the agent until `shutdown` completes, then finishes the batch in
/// hand, stores the applied sequence and returns. `on_listening` receives
/// the bound HTTP address (useful with port 0). While no NATS server
/// answers at start, the agent keeps trying (with backoff) and its HTTP
/// port answers as described in `super::starting`; a refused connection
/// (credentials, TLS) or bad settings end it with [`AgentError::Connect`].
pub async fn run(
    settings: AgentSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let http_error = |source| AgentError::Http {
        listen: settings.http.listen,
        source,
    };
    let socket =
        std::net::TcpListener::bind(settings.http.listen).map_err(|source| AgentError::Listen {
            listen: settings.http.listen,
            source,
        })?;
    socket.set_nonblocking(true).map_err(http_error)?;
    let bound = socket.local_addr().map_err(http_error)?;
    on_listening(bound);
    // A second handle on the same socket serves the starting routes.
    let early = tokio::net::TcpListener::from_std(socket.try_clone().map_err(http_error)?)
        .map_err(http_error)?;
    let Some(client) = connect_while_starting(&settings, early, shutdown.as_mut()).await? else {
        tracing::info!("stopped before NATS was reachable");
        return Ok(());
    };
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(settings.nats.request_timeout)
        .build(client.clone());
    stream_at_start(&js, &settings).await?;
    let mut registry = invalog::refresher::Registry::new();
    for (def, applier) in &settings.refreshers {
        registry.register_arc(def.clone(), crate::applier::build(def, applier)?)?;
    }
    let node_id = settings.node.node_id.clone();
    let node = match &settings.checkpoint {
        CheckpointSettings::File { path } => {
            let store = invalog::checkpoint::FileStore::new(path);
            start_node(&js, &settings, registry, store).await?
        }
        CheckpointSettings::Kv { bucket, replicas } => {
            let store =
                invalog::checkpoint::KvStore::open(&js, bucket, *replicas, node_id.clone()).await?;
            start_node(&js, &settings, registry, store).await?
        }
    };
    let node = std::sync::Arc::new(node);
    let presence = invalog::presence::Presence::start(
        js.clone(),
        settings.presence.clone(),
        &settings.log.stream,
        node.clone(),
        settings
            .refreshers
            .iter()
            .map(|(d, _)| d.name.clone())
            .collect(),
    )
    .await?;
    let listener = tokio::net::TcpListener::from_std(socket).map_err(http_error)?;
    tracing::info!(node = %node_id, http = %bound, "agent running");
    let state = http::HttpState {
        node: node.clone(),
        client,
        info: std::sync::Arc::new(http::AgentInfo {
            node_id: node_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: std::time::SystemTime::now(),
            stream: settings.log.stream.clone(),
            refreshers: settings.refreshers.iter().map(|(d, _)| d.clone()).collect(),
        }),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, state, stop.clone().cancelled_owned()));
    shutdown.await;
    tracing::info!(node = %node_id, "shutting down: finishing the batch in hand");
    node.shutdown().await?;
    // The last report says `stopped`, so `invalog status` does not call
    // this node stale.
    if let Err(e) = presence.stop().await {
        tracing::warn!(node = %node_id, error = %e, "cannot write the last presence report");
    }
    stop.cancel();
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(AgentError::Http {
            listen: bound,
            source,
        }),
        Err(join) => {
            tracing::error!(error = %join, "HTTP task failed");
            Ok(())
        }
    }
}

/// Connects to NATS, retrying (with the reconnect backoff) while no server
/// answers, and serving `starting::router` on `early` meanwhile. `None`
/// when shut down first.
async fn connect_while_starting(
    settings: &AgentSettings,
    early: tokio::net::TcpListener,
    mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Result<Option<async_nats::Client>, AgentError> {
    let (reason_tx, reason) = watch::channel(format!(
        "connecting to NATS at {}",
        invalog::connect::display_urls(&settings.nats.urls)
    ));
    let stop = CancellationToken::new();
    let routes = starting::router(starting::Starting {
        node_id: settings.node.node_id.clone(),
        reason,
    });
    let server = tokio::spawn(server::accept_until(
        early,
        routes,
        server::Limits::default(),
        stop.clone().cancelled_owned(),
    ));
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        let result = tokio::select! {
            _ = shutdown.as_mut() => break Ok(None),
            result = invalog::connect::connect(&settings.nats) => result,
        };
        match result {
            Ok(client) => break Ok(Some(client)),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, attempt, "no NATS server answers; retrying (/readyz answers 503 meanwhile)");
                reason_tx.send_replace(error.to_string());
            }
            Err(error) => break Err(error.into()),
        }
        tokio::select! {
            _ = shutdown.as_mut() => break Ok(None),
            _ = tokio::time::sleep(invalog::connect::reconnect_delay(attempt + 1)) => {}
        }
    };
    // The starting server stops accepting at once, so the full API can take
    // the socket over. Its connections are not waited for: each closes on its
    // own within the shutdown grace, and one that never finishes a request
    // must not delay the node's start.
    stop.cancel();
    if let Err(error) = server.await {
        tracing::warn!(%error, "the HTTP server of the starting agent failed");
    }
    outcome
}

async fn start_node(
    js: &async_nats::jetstream::Context,
    settings: &AgentSettings,
    registry: invalog::refresher::Registry,
    store: impl invalog::checkpoint::CheckpointStore,
) -> Result<invalog::node::Node, AgentError> {
    Ok(invalog::node::Node::start(
        js.clone(),
        settings.log.clone(),
        settings.node.clone(),
        registry,
        store,
    )
    .await?)
}
