//! The shop's "database", the source of truth behind the caches: in memory
//! for a single process, or a NATS key-value bucket when several app nodes
//! must see the same data (docker-compose.yml). Writes go here first; then
//! the app publishes the invalidation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::{self, kv};

use crate::cache::Product;

/// Where products live.
#[derive(Clone)]
pub enum Database {
    /// One process's memory.
    Memory(Arc<RwLock<HashMap<i64, Product>>>),
    /// A JetStream key-value bucket, shared by every app node.
    Kv(Box<kv::Store>),
}

/// A database failure (KV only), as text for the HTTP answer.
#[derive(Debug)]
pub struct DbError(pub String);

impl Database {
    /// An empty in-memory database.
    pub fn memory() -> Self {
        Database::Memory(Arc::default())
    }

    /// The bucket `bucket`, created if missing.
    pub async fn kv(js: &jetstream::Context, bucket: &str) -> Result<Self, DbError> {
        if let Ok(store) = js.get_key_value(bucket).await {
            return Ok(Database::Kv(Box::new(store)));
        }
        let config = kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            ..Default::default()
        };
        let store = js
            .create_key_value(config)
            .await
            .map_err(|e| DbError(format!("creating bucket {bucket}: {e}")))?;
        Ok(Database::Kv(Box::new(store)))
    }

    /// The product `id`, if it exists.
    pub async fn get(&self, id: i64) -> Result<Option<Product>, DbError> {
        match self {
            Database::Memory(map) => Ok(map.read().unwrap().get(&id).cloned()),
            Database::Kv(store) => {
                let entry = store
                    .get(id.to_string())
                    .await
                    .map_err(|e| DbError(e.to_string()))?;
                entry
                    .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| DbError(e.to_string())))
                    .transpose()
            }
        }
    }

    /// Stores `product`, replacing any previous version.
    pub async fn put(&self, product: &Product) -> Result<(), DbError> {
        match self {
            Database::Memory(map) => {
                map.write().unwrap().insert(product.id, product.clone());
                Ok(())
            }
            Database::Kv(store) => {
                let bytes = serde_json::to_vec(product).expect("a product serializes");
                store
                    .put(product.id.to_string(), bytes.into())
                    .await
                    .map(drop)
                    .map_err(|e| DbError(e.to_string()))
            }
        }
    }

    /// Deletes the product `id` (nothing if absent).
    pub async fn delete(&self, id: i64) -> Result<(), DbError> {
        match self {
            Database::Memory(map) => {
                map.write().unwrap().remove(&id);
                Ok(())
            }
            Database::Kv(store) => store
                .delete(id.to_string())
                .await
                .map_err(|e| DbError(e.to_string())),
        }
    }
}
