//! Running the agent: connect, provision, build appliers, start the node
//! and its presence reporter, serve HTTP, and stop cleanly when the
//! shutdown future completes.

use std::net::SocketAddr;

use super::{http, AgentSettings, CheckpointSettings};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// NATS is unreachable or refused the connection.
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    /// The stream could not be provisioned.
    #[error(transparent)]
    Provision(#[from] crate::stream::ProvisionError),
    /// An applier could not be built.
    #[error(transparent)]
    Applier(#[from] crate::applier::ApplierError),
    /// Two refreshers share a name or id.
    #[error(transparent)]
    Registry(#[from] crate::refresher::RegistryError),
    /// The checkpoint store could not be opened.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The node could not start.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// The presence reporter could not start (the bucket cannot be
    /// created or written).
    #[error(transparent)]
    Presence(#[from] crate::presence::PresenceError),
    /// The HTTP listener could not be opened or failed.
    #[error("HTTP on {listen}: {source}")]
    Http {
        /// The address.
        listen: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` completes, then finishes the batch in
/// hand, stores the applied sequence and returns. `on_listening` receives
/// the bound HTTP address (useful with port 0).
pub async fn run(
    settings: AgentSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), AgentError> {
    let client = crate::connect::connect(&settings.nats).await?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(settings.nats.request_timeout)
        .build(client.clone());
    if settings.provision {
        crate::stream::provision(&js, &settings.log).await?;
    }
    let mut registry = crate::refresher::Registry::new();
    for (def, applier) in &settings.refreshers {
        registry.register_arc(def.clone(), crate::applier::build(def, applier)?)?;
    }
    let node_id = settings.node.node_id.clone();
    let node = match &settings.checkpoint {
        CheckpointSettings::File { path } => {
            let store = crate::checkpoint::FileStore::new(path);
            start_node(&js, &settings, registry, store).await?
        }
        CheckpointSettings::Kv { bucket, replicas } => {
            let store =
                crate::checkpoint::KvStore::open(&js, bucket, *replicas, node_id.clone()).await?;
            start_node(&js, &settings, registry, store).await?
        }
    };
    let node = std::sync::Arc::new(node);
    let presence = crate::presence::Presence::start(
        js.clone(),
        settings.presence.clone(),
        node.clone(),
        settings
            .refreshers
            .iter()
            .map(|(d, _)| d.name.clone())
            .collect(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .map_err(|source| AgentError::Http {
            listen: settings.http.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Http {
        listen: settings.http.listen,
        source,
    })?;
    tracing::info!(node = %node_id, http = %bound, "agent running");
    on_listening(bound);
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

async fn start_node(
    js: &async_nats::jetstream::Context,
    settings: &AgentSettings,
    registry: crate::refresher::Registry,
    store: impl crate::checkpoint::CheckpointStore,
) -> Result<crate::node::Node, AgentError> {
    Ok(crate::node::Node::start(
        js.clone(),
        settings.log.clone(),
        settings.node.clone(),
        registry,
        store,
    )
    .await?)
}
