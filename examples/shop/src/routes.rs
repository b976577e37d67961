//! The shop's HTTP routes: products (read through the cache, written to the
//! database then invalidated through the log), `/readyz`, and `/invalidate`
//! for an `invalog agent`'s webhook.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use invalog::node::Readiness;
use invalog::{PublishError, Receipt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cache::{PriceChange, Product};
use crate::{apply_webhook_batch, CacheSync, Shop, WAIT_APPLIED};

/// The header that carries the read-your-writes token: set on write
/// responses, accepted on reads.
pub const SEQUENCE_HEADER: &str = "invalog-sequence";

/// Every route of the shop.
pub fn router(shop: Shop) -> Router {
    Router::new()
        .route(
            "/products/{id}",
            get(read_product).put(write_product).delete(delete_product),
        )
        .route("/products/{id}/price", put(change_price))
        .route("/readyz", get(readyz))
        .route("/invalidate", post(invalidate))
        .with_state(shop)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn db_error(e: crate::db::DbError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("database: {}", e.0),
    )
}

fn publish_error(e: PublishError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("publishing the invalidation: {e}"),
    )
}

/// A write's answer: `body`, with the sequence of its invalidation.
fn written(receipt: &Receipt, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Some(sequence) = receipt.sequence() {
        response
            .headers_mut()
            .insert(SEQUENCE_HEADER, HeaderValue::from(sequence));
    }
    response
}

/// The token a read waits for: `?after=`, else the header.
fn token(query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Option<u64>, Response> {
    let text = match query.get("after") {
        Some(value) => Some(value.as_str()),
        None => headers.get(SEQUENCE_HEADER).and_then(|v| v.to_str().ok()),
    };
    text.map(|t| {
        t.trim().parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("bad read-your-writes token {t:?}: expected a sequence such as 42"),
            )
        })
    })
    .transpose()
}

/// Waits until this node has applied `sequence`, at most [`WAIT_APPLIED`].
async fn wait_applied(sync: &CacheSync, sequence: u64) -> Result<(), Response> {
    let timed_out = || {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("this node has not applied sequence {sequence} yet; try again"),
        )
    };
    match sync {
        CacheSync::Embedded(node) => {
            match tokio::time::timeout(WAIT_APPLIED, node.wait_applied(sequence)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
                Err(_) => Err(timed_out()),
            }
        }
        CacheSync::Agent { base, client } => {
            let url = format!(
                "{base}/applied?seq={sequence}&timeout={}s",
                WAIT_APPLIED.as_secs()
            );
            match client.get(url).send().await.map(|r| r.status().as_u16()) {
                Ok(200) => Ok(()),
                Ok(504) => Err(timed_out()),
                Ok(code) => Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("agent answered {code}"),
                )),
                Err(e) => Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("agent unreachable: {e}"),
                )),
            }
        }
    }
}

async fn read_product(
    State(shop): State<Shop>,
    Path(id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let after = match token(&query, &headers) {
        Ok(after) => after,
        Err(response) => return response,
    };
    if let Some(sequence) = after {
        if let Err(response) = wait_applied(&shop.sync, sequence).await {
            return response;
        }
    }
    if let Some(product) = shop.cache.get(id) {
        return ([("x-cache", "hit")], Json(product)).into_response();
    }
    match shop.db.get(id).await {
        Ok(Some(product)) => {
            shop.cache.insert(product.clone());
            ([("x-cache", "miss")], Json(product)).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no product {id}")),
        Err(e) => db_error(e),
    }
}

#[derive(Deserialize)]
struct ProductBody {
    name: String,
    price: f64,
}

async fn write_product(
    State(shop): State<Shop>,
    Path(id): Path<i64>,
    Json(body): Json<ProductBody>,
) -> Response {
    let product = Product {
        id,
        name: body.name,
        price: body.price,
    };
    if let Err(e) = shop.db.put(&product).await {
        return db_error(e);
    }
    // Committed: now every node's cache must drop its copy.
    match shop.publisher.refresh_ids("products", &[id]).await {
        Ok(receipt) => written(&receipt, json!(product)),
        Err(e) => publish_error(e),
    }
}

async fn delete_product(State(shop): State<Shop>, Path(id): Path<i64>) -> Response {
    if let Err(e) = shop.db.delete(id).await {
        return db_error(e);
    }
    match shop.publisher.remove_ids("products", &[id]).await {
        Ok(receipt) => written(&receipt, json!({ "deleted": id })),
        Err(e) => publish_error(e),
    }
}

#[derive(Deserialize)]
struct PriceBody {
    new_price: f64,
}

async fn change_price(
    State(shop): State<Shop>,
    Path(id): Path<i64>,
    Json(body): Json<PriceBody>,
) -> Response {
    let mut product = match shop.db.get(id).await {
        Ok(Some(product)) => product,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no product {id}")),
        Err(e) => return db_error(e),
    };
    product.price = body.new_price;
    if let Err(e) = shop.db.put(&product).await {
        return db_error(e);
    }
    let change = PriceChange {
        product_id: id,
        new_price: body.new_price,
    };
    match shop.publisher.refresh_payloads("prices", &[change]).await {
        Ok(receipt) => written(&receipt, json!(product)),
        Err(e) => publish_error(e),
    }
}

/// 200 once this node's cache has caught up with the log.
async fn readyz(State(shop): State<Shop>) -> Response {
    match &shop.sync {
        CacheSync::Embedded(node) => match node.readiness() {
            Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
            Readiness::NotReady(reason) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
            }
        },
        CacheSync::Agent { base, client } => {
            match client.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status().is_success() => (StatusCode::OK, "ready\n").into_response(),
                Ok(r) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("agent: {}\n", r.status()),
                )
                    .into_response(),
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("agent unreachable: {e}\n"),
                )
                    .into_response(),
            }
        }
    }
}

/// The agent's webhook (docs/appliers.md): one batch of one refresher.
async fn invalidate(State(shop): State<Shop>, body: String) -> Response {
    let body: Value = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let refresher = body["refresher"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The instructions have the log's shape; invalog's reader types them.
    let request = json!({ "refresher": refresher, "instructions": body["instructions"] });
    let request = match invalog::wire::decode_publish_request(request.to_string().as_bytes()) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    match apply_webhook_batch(&shop.cache, &refresher, &request.instructions).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
