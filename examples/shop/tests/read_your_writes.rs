//! Two shop nodes on one local nats-server (`invalog_nats_server`), sharing a
//! database, each with its own cache and embedded invalog node: a write on
//! one node is read fresh on the other with the `Invalog-Token` token, a
//! price change (typed payload) updates the other node's cached entry in
//! place, and the agent's webhook body is applied by the same refreshers.
//! The read-miss path does not cache a product read before its
//! invalidation was applied (the stale-fill guard, `shop::fill`).

use std::sync::Arc;
use std::time::Duration;

use invalog::{FileStore, LogSettings, Node, NodeId, NodeSettings, Publisher, PublisherSettings};
use invalog_nats_server::NatsServer;
use serde_json::{json, Value};
use shop::cache::{Product, ProductCache};
use shop::db::Database;
use shop::{CacheSync, Shop};

/// One app node serving on a loopback port; returns its base URL and what
/// its handlers use.
async fn start_shop(
    js: &async_nats::jetstream::Context,
    db: &Database,
    dir: &std::path::Path,
    node_id: &str,
) -> (String, Shop) {
    let cache = ProductCache::default();
    let node = Node::start(
        js.clone(),
        LogSettings::default(),
        NodeSettings {
            fill_guard_window: Some(64),
            ..NodeSettings::new(NodeId::new(node_id).unwrap())
        },
        shop::registry(&cache),
        FileStore::new(dir.join(format!("{node_id}.json"))),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), node.ready())
        .await
        .unwrap()
        .unwrap();
    let shop = Shop {
        db: db.clone(),
        cache: cache.clone(),
        publisher: Publisher::new(
            js.clone(),
            LogSettings::default(),
            PublisherSettings::new(node_id),
            shop::refresher_defs(),
        ),
        sync: CacheSync::Embedded(Arc::new(node)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = shop::router(shop.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, shop)
}

async fn put(client: &reqwest::Client, url: &str, body: Value) -> String {
    let response = client
        .put(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token = response.headers()["invalog-token"].to_str().unwrap();
    assert!(token.parse::<invalog::ReadToken>().is_ok(), "{token}");
    token.to_owned()
}

/// Sends a read; returns its `x-cache` header and its body.
async fn get(request: reqwest::RequestBuilder) -> (String, Value) {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (
        cache,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

/// A local nats-server with the log provisioned, a temporary directory for
/// checkpoints and an empty database.
async fn setup() -> (
    NatsServer,
    async_nats::jetstream::Context,
    tempfile::TempDir,
    Database,
) {
    let server = NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    invalog::provision(&js, &LogSettings::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::memory();
    (server, js, dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_read_fresh_on_the_other() {
    let (_server, js, dir, db) = setup().await;
    let (a, _) = start_shop(&js, &db, dir.path(), "web-1").await;
    let (b, b_shop) = start_shop(&js, &db, dir.path(), "web-2").await;
    let b_cache = b_shop.cache;
    let client = reqwest::Client::new();

    let first = put(
        &client,
        &format!("{a}/products/1"),
        json!({"name": "Mug", "price": 12.5}),
    )
    .await;
    let (_, product) = get(client.get(format!("{b}/products/1?after={first}"))).await;
    assert_eq!(product["name"], "Mug");
    let (cache, _) = get(client.get(format!("{b}/products/1"))).await;
    assert_eq!(cache, "hit", "node b cached it");

    // Renamed on a; b's cached copy is dropped by the time b has applied
    // the write's sequence (token in the header this time).
    let renamed = put(
        &client,
        &format!("{a}/products/1"),
        json!({"name": "Big mug", "price": 12.5}),
    )
    .await;
    let (cache, product) = get(client
        .get(format!("{b}/products/1"))
        .header("Invalog-Token", renamed))
    .await;
    assert_eq!(
        (cache.as_str(), &product["name"]),
        ("miss", &json!("Big mug"))
    );

    // A price change travels as a typed payload and updates b's entry in place.
    let priced = put(
        &client,
        &format!("{a}/products/1/price"),
        json!({"new_price": 9.75}),
    )
    .await;
    let (cache, product) = get(client.get(format!("{b}/products/1?after={priced}"))).await;
    assert_eq!((cache.as_str(), &product["price"]), ("hit", &json!(9.75)));

    // The agent's webhook body is applied by the same refreshers.
    assert!(b_cache.get(1).is_some());
    let batch = json!({
        "format": 1, "trigger": "batch", "sequence": 99,
        "refresher": {"id": shop::cache::products_def().id, "name": "products"},
        "instructions": [{"kind": "remove_ids", "ids": [1]}],
    });
    let response = client
        .post(format!("{b}/invalidate"))
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(b_cache.get(1).is_none(), "removed by the webhook batch");

    // A token no node has reached yet: the read times out rather than serve stale.
    let (_, incarnation) = priced.split_once('@').unwrap();
    let response = client
        .get(format!("{b}/products/1?after=1000@{incarnation}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    // A bare sequence is not a token.
    let response = client
        .get(format!("{b}/products/1?after=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_read_before_its_invalidation_is_not_cached() {
    let (_server, js, dir, db) = setup().await;
    let (_, shop) = start_shop(&js, &db, dir.path(), "web-1").await;
    let mug = |name: &str| Product {
        id: 1,
        name: name.into(),
        price: 12.5,
    };
    db.put(&mug("Mug")).await.unwrap();

    // The read-miss path, one step at a time: ticket, database read, …
    let ticket = shop.sync.fill_ticket().await;
    let read = db.get(1).await.unwrap().unwrap();
    // … a rename committed and applied on this node meanwhile, …
    db.put(&mug("Big mug")).await.unwrap();
    let receipt = shop.publisher.refresh_ids("products", &[1]).await.unwrap();
    let CacheSync::Embedded(node) = &shop.sync else {
        unreachable!()
    };
    let token = receipt.token().unwrap();
    tokio::time::timeout(Duration::from_secs(10), node.wait_token(&token))
        .await
        .unwrap()
        .unwrap();
    // … then the insert: the stale "Mug" is not cached.
    assert!(!shop.sync.fill(ticket, &shop.cache, &read).await);
    assert_eq!(shop.cache.get(1), None);

    // A read after the invalidation caches the fresh product.
    let ticket = shop.sync.fill_ticket().await;
    let read = db.get(1).await.unwrap().unwrap();
    assert!(shop.sync.fill(ticket, &shop.cache, &read).await);
    assert_eq!(shop.cache.get(1), Some(mug("Big mug")));
}
