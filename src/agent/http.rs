//! The agent's HTTP API (axum): `/healthz` (the process runs), `/readyz`
//! (200 only while the node is caught up, not stalled and not fenced; 503
//! with the reason otherwise), `/metrics` (OpenMetrics text, see
//! [`super::metrics`]), `/status` (JSON for people and scripts) and
//! `/applied?seq=N&timeout=5s`, the read-your-writes wait: it answers once the
//! node has applied sequence `N`. Bodies are built with `serde_json::json!`
//! (only `wire` and `config` derive serde). `docs/http-api.md` documents every
//! endpoint with real responses.
//!
//! [`serve`] shuts down gracefully: when its shutdown future completes, it
//! stops accepting, answers pending `/applied` waits with 503 at once (they
//! could otherwise hold the shutdown for up to a minute) and returns when the
//! in-flight requests are done.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::metrics::{lag_seconds, NatsSample, Scrape, CONTENT_TYPE};
use crate::model::{NodeId, RefresherDef};
use crate::node::Readiness;
use crate::wire::format_time;
use crate::Node;

/// `/applied` waits this long when no `timeout` is given.
pub const DEFAULT_APPLIED_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `timeout` `/applied` accepts.
pub const MAX_APPLIED_TIMEOUT: Duration = Duration::from_secs(60);

/// What the agent says about itself besides the node's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The node's id.
    pub node_id: NodeId,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// When the agent started.
    pub started_at: SystemTime,
    /// The stream it follows.
    pub stream: String,
    /// The refreshers it hosts.
    pub refreshers: Vec<RefresherDef>,
}

impl AgentInfo {
    /// This build's version, started now.
    pub fn new(node_id: NodeId, stream: impl Into<String>, refreshers: Vec<RefresherDef>) -> Self {
        Self {
            node_id,
            version: env!("CARGO_PKG_VERSION"),
            started_at: SystemTime::now(),
            stream: stream.into(),
            refreshers,
        }
    }
}

/// What the handlers read: the node, its NATS client and the agent's info.
#[derive(Clone)]
pub struct HttpState {
    /// The node being served.
    pub node: Arc<Node>,
    /// The NATS client the node uses (connection state and statistics).
    pub client: async_nats::Client,
    /// Identity, version, start time.
    pub info: Arc<AgentInfo>,
}

/// The handlers' state: [`HttpState`] plus the shutdown signal of [`serve`].
#[derive(Clone)]
struct App {
    state: HttpState,
    closing: CancellationToken,
}

/// The routes, for embedding in another server or testing. Pending
/// `/applied` waits end only by their timeout or the node stopping; use
/// [`serve`] to have them end on shutdown too.
pub fn router(state: HttpState) -> Router {
    routes(App {
        state,
        closing: CancellationToken::new(),
    })
}

/// Serves [`router`] on `listener` until `shutdown` completes, then shuts
/// down gracefully (see the module docs).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = CancellationToken::new();
    let app = routes(App {
        state,
        closing: closing.clone(),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.cancel();
        })
        .await
}

fn routes(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/applied", get(applied))
        .fallback(not_found)
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<App>) -> Response {
    let node = &app.state.node;
    let readiness = node.readiness();
    let stats = node.stats();
    let mut body = json!({
        "ready": readiness.is_ready(),
        "state": node.state().name(),
        "applied_sequence": stats.applied_sequence,
        "lag_messages": stats.lag_messages,
    });
    match readiness {
        Readiness::Ready => (StatusCode::OK, Json(body)).into_response(),
        Readiness::NotReady(reason) => {
            body["reason"] = reason.into();
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let s = &app.state;
    let text = Scrape::take(&s.node, &s.client, s.info.version).render();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

async fn status(State(app): State<App>) -> Json<Value> {
    let HttpState { node, client, info } = &app.state;
    let now = SystemTime::now();
    let readiness = node.readiness();
    let s = node.stats();
    let nats = NatsSample::of(client);
    let refreshers: Vec<Value> = s
        .per_refresher
        .iter()
        .map(|(name, c)| {
            let id = info.refreshers.iter().find(|d| &d.name == name);
            json!({
                "name": name.as_str(),
                "id": id.map(|d| d.id.to_string()),
                "messages_applied": c.messages,
                "instructions_applied": c.units,
                "escalations": c.escalations,
            })
        })
        .collect();
    Json(json!({
        "node_id": info.node_id.as_str(),
        "version": info.version,
        "stream": info.stream,
        "state": node.state().name(),
        "ready": readiness.is_ready(),
        "reason": match &readiness {
            Readiness::Ready => None,
            Readiness::NotReady(reason) => Some(reason),
        },
        "sequences": {
            "applied": s.applied_sequence,
            "stored": s.stored_sequence,
            "stream_last": s.stream_last_sequence,
        },
        "lag": { "messages": s.lag_messages, "seconds": lag_seconds(&s, now) },
        "last_applied_published_at": s.last_applied_published_at.map(format_time),
        "counters": {
            "messages_applied": s.applied_messages,
            "instructions_applied": s.applied_units,
            "unhosted_messages": s.unhosted_messages,
            "own_messages_skipped": s.own_messages_skipped,
            "decode_errors": s.decode_errors,
            "retries": s.retries,
            "escalations": s.escalations,
            "cold_boots": s.cold_boots,
            "gaps": s.gaps,
            "checkpoint_errors": s.checkpoint_errors,
            "consumer_restarts": s.consumer_restarts,
            "direct_reads": s.direct_reads,
        },
        "apply_duration_seconds": {
            "count": s.apply_latency.count,
            "sum": s.apply_latency.sum_seconds,
        },
        "refreshers": refreshers,
        "nats": {
            "state": client.connection_state().to_string(),
            "connected": nats.connected,
            "connects": nats.connects,
            "reconnects": nats.reconnects(),
            "received_bytes": nats.received_bytes,
            "sent_bytes": nats.sent_bytes,
            "received_messages": nats.received_messages,
            "sent_messages": nats.sent_messages,
            "server": connected_server(&client.server_info()),
        },
        "started_at": format_time(info.started_at),
        "uptime_seconds": now.duration_since(info.started_at).map_or(0, |d| d.as_secs()),
    }))
}

/// The server the client is (or was last) connected to, from its `INFO`:
/// name, id and the address it reports listening on; `null` before the
/// first `INFO`.
fn connected_server(info: &async_nats::ServerInfo) -> Value {
    if info.server_id.is_empty() {
        return Value::Null;
    }
    json!({
        "name": info.server_name,
        "id": info.server_id,
        "address": if info.host.contains(':') {
            format!("[{}]:{}", info.host, info.port)
        } else {
            format!("{}:{}", info.host, info.port)
        },
    })
}

/// `/applied?seq=N&timeout=5s`: the read-your-writes wait.
async fn applied(
    State(app): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let (sequence, timeout) = match query
        .map_err(|e| e.body_text())
        .and_then(|Query(q)| parse_applied_query(&q))
    {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message, json!({})),
    };
    let node = &app.state.node;
    let answer = |status: StatusCode, applied: bool, extra: Value| {
        let mut body = json!({
            "applied": applied,
            "sequence": sequence,
            "applied_sequence": node.applied(),
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        (status, Json(body)).into_response()
    };
    let shutting_down = || {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            json!({ "error": "the agent is shutting down" }),
        )
    };
    if app.closing.is_cancelled() {
        return shutting_down();
    }
    tokio::select! {
        waited = tokio::time::timeout(timeout, node.wait_applied(sequence)) => match waited {
            Ok(Ok(())) => answer(StatusCode::OK, true, json!({})),
            Ok(Err(e)) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                false,
                json!({ "error": e.to_string() }),
            ),
            Err(_) => {
                let waited = humantime::format_duration(timeout).to_string();
                answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    false,
                    json!({
                        "timeout": waited,
                        "error": format!(
                            "sequence {sequence} was not applied within {waited} (applied: {})",
                            node.applied()
                        ),
                    }),
                )
            }
        },
        _ = app.closing.cancelled() => shutting_down(),
    }
}

/// `seq` (required, a whole number) and `timeout` (a humantime duration,
/// default 5s, at most 60s), or a message for a 400.
fn parse_applied_query(query: &HashMap<String, String>) -> Result<(u64, Duration), String> {
    let raw = query.get("seq").ok_or_else(|| {
        "missing query parameter `seq`: the stream sequence to wait for, as returned by a \
         publish (for example /applied?seq=42&timeout=5s)"
            .to_owned()
    })?;
    let sequence = raw.trim().parse::<u64>().map_err(|_| {
        format!("bad `seq` {raw:?}: expected a stream sequence, a whole number such as 42")
    })?;
    let timeout = match query.get("timeout") {
        None => DEFAULT_APPLIED_TIMEOUT,
        Some(raw) => humantime::parse_duration(raw.trim()).map_err(|e| {
            format!("bad `timeout` {raw:?}: {e}; expected a duration such as 500ms, 5s or 1m")
        })?,
    };
    if timeout > MAX_APPLIED_TIMEOUT {
        return Err(format!(
            "`timeout` {} is over the maximum of {}",
            humantime::format_duration(timeout),
            humantime::format_duration(MAX_APPLIED_TIMEOUT)
        ));
    }
    Ok((sequence, timeout))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint".into(),
        json!({ "endpoints": ["/healthz", "/readyz", "/metrics", "/status", "/applied?seq=N&timeout=5s"] }),
    )
}

fn error(status: StatusCode, message: String, extra: Value) -> Response {
    let mut body = json!({ "error": message });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<(u64, Duration), String> {
        let q = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_applied_query(&q)
    }

    #[test]
    fn applied_query() {
        assert_eq!(parse(&[("seq", "42")]), Ok((42, DEFAULT_APPLIED_TIMEOUT)));
        assert_eq!(
            parse(&[("seq", "7"), ("timeout", "250ms")]),
            Ok((7, Duration::from_millis(250)))
        );
        assert_eq!(
            parse(&[("seq", "7"), ("timeout", "1m")]),
            Ok((7, MAX_APPLIED_TIMEOUT))
        );
        assert!(parse(&[])
            .unwrap_err()
            .contains("missing query parameter `seq`"));
        assert!(parse(&[("seq", "-1")]).unwrap_err().contains("bad `seq`"));
        assert!(parse(&[("seq", "x")])
            .unwrap_err()
            .contains("bad `seq` \"x\""));
        assert!(parse(&[("seq", "1"), ("timeout", "soon")])
            .unwrap_err()
            .contains("bad `timeout` \"soon\""));
        assert!(parse(&[("seq", "1"), ("timeout", "61s")])
            .unwrap_err()
            .contains("over the maximum of 1m"));
    }
}
