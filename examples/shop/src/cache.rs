//! The shop's caches and their refreshers: a moka cache of products by id,
//! kept fresh by [`ProductRefresher`] (a basic refresher: refresh and remove
//! by id, refresh-all) and by [`PriceRefresher`] (a typed-payload
//! refresher: each [`PriceChange`] carries the new price, so a node updates
//! its cached product in place instead of reloading it).
//!
//! Delivery is at-least-once: both refreshers are idempotent (dropping an
//! entry twice, or setting the same price twice, changes nothing).

use std::time::Duration;

use async_trait::async_trait;
use invalog::{PayloadRefresher, RefreshResult, Refresher, RefresherDef};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `products` refresher, as every node and publisher registers it.
pub fn products_def() -> RefresherDef {
    RefresherDef::new(
        Uuid::from_u128(0x3f5e0d1c_8a52_4c1e_9a57_2b0f6c7e4d10),
        "products",
    )
    .expect("a valid name")
}

/// The `prices` refresher (typed payloads).
pub fn prices_def() -> RefresherDef {
    RefresherDef::new(
        Uuid::from_u128(0xa7c1b2e4_5d6f_4a8b_9c0d_1e2f3a4b5c6d),
        "prices",
    )
    .expect("a valid name")
}

/// A product, as stored in the database and cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: i64,
    pub name: String,
    pub price: f64,
}

/// The payload of the `prices` refresher: serialized to JSON by the
/// publisher, typed again on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceChange {
    pub product_id: i64,
    pub new_price: f64,
}

/// The node's product cache. Cheap to clone (moka caches are handles).
#[derive(Clone)]
pub struct ProductCache(Cache<i64, Product>);

impl Default for ProductCache {
    fn default() -> Self {
        Self(
            Cache::builder()
                .max_capacity(10_000)
                // A bound on staleness should an invalidation ever be lost;
                // invalog is what keeps entries fresh.
                .time_to_live(Duration::from_secs(600))
                .build(),
        )
    }
}

impl ProductCache {
    /// The cached product, if any.
    pub fn get(&self, id: i64) -> Option<Product> {
        self.0.get(&id)
    }

    /// Caches a product read from the database.
    pub fn insert(&self, product: Product) {
        self.0.insert(product.id, product);
    }

    /// Drops a product (a fill that turned out to be stale).
    pub fn remove(&self, id: i64) {
        self.0.invalidate(&id);
    }

    /// Number of entries (after pending maintenance).
    pub fn len(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `products`: drops entries; the next read loads them from the database.
#[derive(Clone)]
pub struct ProductRefresher(pub ProductCache);

#[async_trait]
impl Refresher for ProductRefresher {
    async fn refresh_all(&self) -> RefreshResult {
        self.0 .0.invalidate_all();
        Ok(())
    }

    async fn refresh_ids(&self, ids: &[i64]) -> RefreshResult {
        ids.iter().for_each(|id| self.0 .0.invalidate(id));
        Ok(())
    }

    async fn remove_ids(&self, ids: &[i64]) -> RefreshResult {
        self.refresh_ids(ids).await
    }
}

/// `prices`: sets the new price of cached products in place; products not
/// cached here are left alone (the next read loads the current price).
#[derive(Clone)]
pub struct PriceRefresher(pub ProductCache);

#[async_trait]
impl PayloadRefresher for PriceRefresher {
    type Payload = PriceChange;

    async fn refresh_all(&self) -> RefreshResult {
        self.0 .0.invalidate_all();
        Ok(())
    }

    async fn refresh(&self, changes: Vec<PriceChange>) -> RefreshResult {
        for change in changes {
            if let Some(mut product) = self.0.get(change.product_id) {
                product.price = change.new_price;
                self.0.insert(product);
            }
        }
        Ok(())
    }
}
