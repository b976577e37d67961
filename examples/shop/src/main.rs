//! The shop's executable: reads its settings from the environment, connects
//! to NATS (or starts a local nats-server), starts the embedded invalog
//! node, waits until the cache has caught up with the log, and only then
//! binds its listener. With an agent instead (`SHOP_AGENT_URL`) it binds at
//! once, because the agent's catch-up goes through this app's
//! `/invalidate`; its `/readyz` answers 200 only once the agent is ready.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `SHOP_LISTEN` | `127.0.0.1:8080` | address to serve on |
//! | `SHOP_NODE_ID` | `shop-1` | the node's stable id (keys its stored sequence) and the publisher's origin |
//! | `SHOP_NATS_URLS` | `nats://127.0.0.1:4222` | comma-separated server URLs |
//! | `SHOP_EMBEDDED_NATS` | unset | `1`: start a local nats-server (`invalog_nats_server`) instead |
//! | `SHOP_AGENT_URL` | unset | an `invalog agent`'s base URL: no embedded node; the agent POSTs to `/invalidate` |
//! | `SHOP_DATABASE` | `memory` | `memory`, or `kv` for a NATS key-value bucket shared by all app nodes |
//! | `SHOP_CHECKPOINT` | `./shop-<node id>.checkpoint.json` | the embedded node's stored sequence |

use std::sync::Arc;

use invalog::{FileStore, LogSettings, Node, NodeId, NodeSettings, Publisher, PublisherSettings};
use shop::{cache::ProductCache, db::Database, CacheSync, Shop};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// SIGINT (Ctrl-C) or SIGTERM (`docker stop`, Kubernetes).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(var("RUST_LOG", "info"))
        .init();
    let node_id = var("SHOP_NODE_ID", "shop-1");
    let listen = var("SHOP_LISTEN", "127.0.0.1:8080");

    // Keeps a local server alive as long as the app runs.
    let mut _local_server = None;
    let urls: Vec<String> = if std::env::var("SHOP_EMBEDDED_NATS").as_deref() == Ok("1") {
        let server = invalog_nats_server::NatsServer::start().await?;
        tracing::info!(url = %server.url(), "started a local nats-server");
        let url = server.url();
        _local_server = Some(server);
        vec![url]
    } else {
        var("SHOP_NATS_URLS", "nats://127.0.0.1:4222")
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let client = async_nats::connect(urls.clone()).await?;
    let js = async_nats::jetstream::new(client);
    let log = LogSettings::default();

    let db = match var("SHOP_DATABASE", "memory").as_str() {
        "kv" => Database::kv(&js, "shop_products").await.map_err(|e| e.0)?,
        _ => Database::memory(),
    };
    let cache = ProductCache::default();
    let publisher = Publisher::new(
        js.clone(),
        log.clone(),
        PublisherSettings::new(node_id.clone()),
        shop::refresher_defs(),
    );

    let sync = match std::env::var("SHOP_AGENT_URL") {
        Ok(base) => {
            // The agent applies the log (and provisions the stream). Its
            // cold boot and catch-up POST to our /invalidate, so we must
            // listen *before* it can be ready: bind now, and let /readyz
            // (which asks the agent) keep traffic away until it is.
            tracing::info!(%base, "invalidations come from the agent");
            CacheSync::Agent {
                base,
                client: reqwest::Client::new(),
            }
        }
        Err(_) => {
            invalog::provision(&js, &log).await?; // idempotent
            let checkpoint = var(
                "SHOP_CHECKPOINT",
                &format!("./shop-{node_id}.checkpoint.json"),
            );
            let node = Node::start(
                js.clone(),
                log,
                NodeSettings {
                    // The read-miss path's stale-fill guard (`shop::fill`).
                    fill_guard_window: Some(4096),
                    ..NodeSettings::new(NodeId::new(&node_id)?)
                },
                shop::registry(&cache),
                FileStore::new(checkpoint),
            )
            .await?;
            tracing::info!("catching up with the log");
            node.ready().await?;
            CacheSync::Embedded(Arc::new(node))
        }
    };

    // Embedded: caught up, only now accept traffic. Agent: /readyz tells.
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(%listen, node = %node_id, "serving");
    let shop = Shop {
        db,
        cache,
        publisher,
        sync: sync.clone(),
    };
    axum::serve(listener, shop::router(shop))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let CacheSync::Embedded(node) = sync {
        node.shutdown().await?; // stores the applied sequence
    }
    Ok(())
}
