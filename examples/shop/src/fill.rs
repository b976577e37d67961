//! Filling the cache on a read miss without writing back a stale value: a
//! product read from the database just before its invalidation is applied
//! must not be cached after it (it would stay stale until the next change).
//! The read takes a fill ticket before reading the database; the value is
//! cached only if neither `products` (changes by id) nor `prices` (payloads
//! that edit cached products in place, so they name no key) had anything
//! applied after the ticket that changes the product.
//!
//! - Embedded node: [`invalog::Node::fill_if_fresh`] inserts under the
//!   guard's lock, so no invalidation slips between the check and the insert.
//! - Agent: `GET /fill-ticket`, then insert and ask `GET /may-fill`; on
//!   anything but `"fill": true` the entry is dropped again (an invalidation
//!   applied after the answer reaches the webhook after the insert, and
//!   drops it then).

use invalog::node::{FillKey, FillTicket};
use serde_json::Value;

use crate::cache::{Product, ProductCache};
use crate::CacheSync;

/// The refreshers whose messages change a cached product.
const SOURCES: [&str; 2] = ["products", "prices"];

/// Taken before reading the database.
pub enum Ticket {
    /// From the embedded node.
    Embedded(FillTicket),
    /// From the agent, as text.
    Agent(String),
    /// The agent could not be asked: do not cache.
    None,
}

impl CacheSync {
    /// A fill ticket, taken before reading the source of truth.
    pub async fn fill_ticket(&self) -> Ticket {
        match self {
            CacheSync::Embedded(node) => Ticket::Embedded(node.fill_ticket()),
            CacheSync::Agent { base, client } => {
                match agent_json(client, format!("{base}/fill-ticket")).await {
                    Some(body) => match body["ticket"].as_str() {
                        Some(ticket) => Ticket::Agent(ticket.to_owned()),
                        None => Ticket::None,
                    },
                    None => Ticket::None,
                }
            }
        }
    }

    /// Caches `product`, read after `ticket`, unless it may be stale; true
    /// when it was cached.
    pub async fn fill(&self, ticket: Ticket, cache: &ProductCache, product: &Product) -> bool {
        let id = product.id;
        match (self, ticket) {
            (CacheSync::Embedded(node), Ticket::Embedded(ticket)) => {
                let entries = SOURCES.map(|refresher| (refresher, FillKey::Id(id)));
                let cached =
                    node.fill_if_fresh(&ticket, &entries, || cache.insert(product.clone()));
                if let Err(why) = &cached {
                    tracing::debug!(id, %why, "read served without caching");
                }
                cached.is_ok()
            }
            (CacheSync::Agent { base, client }, Ticket::Agent(ticket)) => {
                cache.insert(product.clone());
                let url = format!(
                    "{base}/may-fill?ticket={ticket}&refresher={}&id={id}",
                    SOURCES.join(",")
                );
                let answer = agent_json(client, url).await;
                let fill = answer.as_ref().and_then(|a| a["fill"].as_bool()) == Some(true);
                if !fill {
                    cache.remove(id);
                    tracing::debug!(id, answer = ?answer, "read served without caching");
                }
                fill
            }
            _ => false,
        }
    }
}

/// The agent's JSON answer to `GET url`, if it gave one with status 200.
async fn agent_json(client: &reqwest::Client, url: String) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_str(&response.text().await.ok()?).ok()
}
