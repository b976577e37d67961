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
use invalog::token::{ReadToken, TokenError};
use invalog::{NodeError, PublishError, Receipt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cache::{PriceChange, Product};
use crate::{apply_webhook_batch, CacheSync, Shop, WAIT_APPLIED};

/// The header that carries the read-your-writes token
/// (`<sequence>@<incarnation>`): set on write responses, accepted on reads.
pub const TOKEN_HEADER: &str = "invalog-token";

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

/// A failed request: a status and a message, answered as `{"error": …}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Reply = Result<Response, ApiError>;

fn db_error(e: crate::db::DbError) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("database: {}", e.0),
    )
}

fn publish_error(e: PublishError) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("publishing the invalidation: {}", e.chain()),
    )
}

/// A write's answer: `body`, with the read-your-writes token of its
/// invalidation.
fn written(receipt: &Receipt, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Some(token) = receipt.token() {
        let value = HeaderValue::from_str(&token.to_string()).expect("a token is ASCII");
        response.headers_mut().insert(TOKEN_HEADER, value);
    }
    response
}

/// The token a read waits for: `?after=`, else the header.
fn token(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Option<ReadToken>, ApiError> {
    let text = match query.get("after") {
        Some(value) => Some(value.as_str()),
        None => headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()),
    };
    text.map(|t| {
        t.parse()
            .map_err(|e: TokenError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
    })
    .transpose()
}

/// Waits until this node has applied `token`, at most [`WAIT_APPLIED`].
async fn wait_applied(sync: &CacheSync, token: ReadToken) -> Result<(), ApiError> {
    let unavailable = |message: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, message);
    let timed_out = || {
        ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("this node has not applied {token} yet; try again"),
        )
    };
    // A token of a stream deleted since: this node refreshed everything
    // when it moved to the new one, so the write is visible; serve.
    match sync {
        CacheSync::Embedded(node) => {
            match tokio::time::timeout(WAIT_APPLIED, node.wait_token(&token)).await {
                Ok(Ok(()) | Err(NodeError::OtherIncarnation { .. })) => Ok(()),
                Ok(Err(e)) => Err(unavailable(e.to_string())),
                Err(_) => Err(timed_out()),
            }
        }
        CacheSync::Agent { base, client } => {
            let url = format!(
                "{base}/applied?token={token}&timeout={}s",
                WAIT_APPLIED.as_secs()
            );
            match client.get(url).send().await.map(|r| r.status().as_u16()) {
                Ok(200 | 410) => Ok(()),
                Ok(504) => Err(timed_out()),
                Ok(code) => Err(unavailable(format!("agent answered {code}"))),
                Err(e) => Err(unavailable(format!("agent unreachable: {e}"))),
            }
        }
    }
}

async fn read_product(
    State(shop): State<Shop>,
    Path(id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Reply {
    if let Some(token) = token(&query, &headers)? {
        wait_applied(&shop.sync, token).await?;
    }
    if let Some(product) = shop.cache.get(id) {
        return Ok(([("x-cache", "hit")], Json(product)).into_response());
    }
    // A miss: take a fill ticket, load from the database, and cache the
    // product unless an invalidation of it was applied meanwhile (`fill`).
    let ticket = shop.sync.fill_ticket().await;
    let product = shop
        .db
        .get(id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no product {id}")))?;
    let cached = shop.sync.fill(ticket, &shop.cache, &product).await;
    let how = if cached { "miss" } else { "miss, not cached" };
    Ok(([("x-cache", how)], Json(product)).into_response())
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
) -> Reply {
    let product = Product {
        id,
        name: body.name,
        price: body.price,
    };
    shop.db.put(&product).await.map_err(db_error)?;
    // Committed: now every node's cache must drop its copy.
    let receipt = shop
        .publisher
        .refresh_ids("products", &[id])
        .await
        .map_err(publish_error)?;
    Ok(written(&receipt, json!(product)))
}

async fn delete_product(State(shop): State<Shop>, Path(id): Path<i64>) -> Reply {
    shop.db.delete(id).await.map_err(db_error)?;
    let receipt = shop
        .publisher
        .remove_ids("products", &[id])
        .await
        .map_err(publish_error)?;
    Ok(written(&receipt, json!({ "deleted": id })))
}

#[derive(Deserialize)]
struct PriceBody {
    new_price: f64,
}

async fn change_price(
    State(shop): State<Shop>,
    Path(id): Path<i64>,
    Json(body): Json<PriceBody>,
) -> Reply {
    let mut product = shop
        .db
        .get(id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no product {id}")))?;
    product.price = body.new_price;
    shop.db.put(&product).await.map_err(db_error)?;
    // The new price travels as a typed payload: other nodes update their
    // cached product in place.
    let change = PriceChange {
        product_id: id,
        new_price: body.new_price,
    };
    let receipt = shop
        .publisher
        .refresh_payloads("prices", &[change])
        .await
        .map_err(publish_error)?;
    Ok(written(&receipt, json!(product)))
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
async fn invalidate(State(shop): State<Shop>, body: String) -> Reply {
    let body: Value = serde_json::from_str(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let refresher = body["refresher"]["name"].as_str().unwrap_or_default();
    // The instructions have the log's shape; invalog's reader types them.
    let request = json!({ "refresher": refresher, "instructions": body["instructions"] });
    let request = invalog::wire::decode_publish_request(request.to_string().as_bytes())
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    apply_webhook_batch(&shop.cache, refresher, &request.instructions)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
