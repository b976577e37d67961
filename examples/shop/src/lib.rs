//! An example shop: an axum web app with a moka product cache that invalog
//! keeps fresh on every app node.
//!
//! - Writes (`PUT /products/{id}`, `PUT /products/{id}/price`,
//!   `DELETE /products/{id}`) go to the [`db::Database`], then publish an
//!   invalidation through an [`invalog::Publisher`] and answer with the
//!   publish's read-your-writes token (`<sequence>@<stream incarnation>`) in
//!   the `Invalog-Token` header.
//! - Reads (`GET /products/{id}`) take that token as `?after=<token>` or as
//!   an `Invalog-Token` request header, wait until this node has applied it,
//!   then serve from the cache (loading misses from the database). Whichever
//!   node a read lands on, it sees the write.
//! - Invalidations reach the cache one of two ways ([`CacheSync`]): an
//!   [`invalog::Node`] embedded in the process (the library), or an
//!   `invalog agent` sidecar that POSTs each batch to `/invalidate` (the
//!   docker-compose setup). Either way the same refreshers run
//!   ([`cache::ProductRefresher`], [`cache::PriceRefresher`]).
//!
//! `main.rs` reads the environment and starts one; [`router`] is the HTTP
//! surface, used by the tests too.

pub mod cache;
pub mod db;
pub mod fill;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use invalog::{Instruction, Node, Payloads, Publisher, Refresher, Registry};

pub use routes::router;

use cache::{PriceRefresher, ProductCache, ProductRefresher};

/// How long a read waits for its read-your-writes token.
pub const WAIT_APPLIED: Duration = Duration::from_secs(5);

/// How this node's cache receives the log.
#[derive(Clone)]
pub enum CacheSync {
    /// An [`invalog::Node`] in this process applies the log to the cache.
    Embedded(Arc<Node>),
    /// An `invalog agent` beside the process (base URL of its HTTP API, such
    /// as `http://127.0.0.1:9464`) POSTs batches to `/invalidate`.
    Agent {
        base: String,
        client: reqwest::Client,
    },
}

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct Shop {
    pub db: db::Database,
    pub cache: ProductCache,
    pub publisher: Publisher,
    pub sync: CacheSync,
}

/// The refreshers of this node's caches, for an embedded [`Node`]
/// (`Node::start`). The publisher's catalog is [`refresher_defs`].
pub fn registry(cache: &ProductCache) -> Registry {
    let mut registry = Registry::new();
    registry
        .register(cache::products_def(), ProductRefresher(cache.clone()))
        .expect("unique")
        .register(cache::prices_def(), Payloads(PriceRefresher(cache.clone())))
        .expect("unique");
    registry
}

/// Every refresher the shop publishes to.
pub fn refresher_defs() -> Vec<invalog::RefresherDef> {
    vec![cache::products_def(), cache::prices_def()]
}

/// Applies a batch that the agent's webhook delivered: the same refreshers
/// as the embedded node, dispatched instruction by instruction. An unknown
/// refresher is an error (the agent retries, then escalates).
pub async fn apply_webhook_batch(
    cache: &ProductCache,
    refresher: &str,
    instructions: &[Instruction],
) -> Result<(), String> {
    let handler: Box<dyn Refresher> = match refresher {
        "products" => Box::new(ProductRefresher(cache.clone())),
        "prices" => Box::new(Payloads(PriceRefresher(cache.clone()))),
        other => return Err(format!("this app hosts no refresher `{other}`")),
    };
    for instruction in instructions {
        invalog::refresher::dispatch(handler.as_ref(), instruction)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
