//! What the agent's HTTP port answers while it is still connecting to NATS
//! at start (no server answers yet): `/healthz` 200 (the process runs, so a
//! liveness probe does not restart it), `/readyz` and `/status` 503 with
//! state `connecting` and the last connection error, `/metrics` with
//! `invalog_ready 0` and `invalog_nats_connected 0`, `/applied` 503. Once
//! connected, the agent serves the full API (`super::http`) on the same
//! socket.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use super::metrics::CONTENT_TYPE;
use invalog::model::NodeId;

/// The state of a starting agent: its id and why it is not connected yet.
#[derive(Clone)]
pub(super) struct Starting {
    pub(super) node_id: NodeId,
    pub(super) reason: watch::Receiver<String>,
}

/// The routes served while connecting.
pub(super) fn router(starting: Starting) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(not_ready))
        .route("/status", get(not_ready))
        .route("/metrics", get(metrics))
        .route("/applied", get(applied))
        .with_state(starting)
}

async fn not_ready(State(s): State<Starting>) -> Response {
    let body = json!({
        "node_id": s.node_id.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "ready": false,
        "state": "connecting",
        "reason": *s.reason.borrow(),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn metrics() -> Response {
    let text = super::metrics::not_connected();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

async fn applied(State(s): State<Starting>) -> Response {
    let body = json!({
        "applied": false,
        "error": format!("not connected to NATS yet: {}", *s.reason.borrow()),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
