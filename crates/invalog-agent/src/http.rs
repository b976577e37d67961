//! The agent's HTTP API (axum): `/healthz` (the process runs), `/readyz`
//! (200 only while the node is caught up, not stalled and not fenced; 503
//! with the reason otherwise), `/metrics` (OpenMetrics text, see
//! [`super::metrics`]), `/status` (JSON for people and scripts) and
//! `/applied?seq=N&timeout=5s`, the read-your-writes wait: it answers once the
//! node has applied sequence `N`; `/fill-ticket` and `/may-fill`, the
//! stale-fill guard (`super::fill`). Bodies are built with `serde_json::json!`
//! (only `wire` and `config` derive serde). `docs/http-api.md` documents every
//! endpoint with real responses.
//!
//! [`serve`] shuts down gracefully: when its shutdown future completes, it
//! stops accepting, answers pending `/applied` waits with 503 at once (they
//! could otherwise hold the shutdown for up to a minute) and returns when the
//! in-flight requests are done, or after [`super::server::SHUTDOWN_GRACE`]
//! at most.

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
use super::server::Limits;
use invalog::model::{NodeId, RefresherDef};
use invalog::node::{NodeError, Readiness};
use invalog::token::ReadToken;
use invalog::wire::format_time;
use invalog::Node;

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
/// down gracefully (see the module docs), within the limits of
/// [`super::server`]: header and idle timeouts, a connection cap, and a
/// bounded grace for requests in flight. Accept errors are logged and
/// retried, so this returns `Ok` once shut down.
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
    let draining = super::server::accept_until(listener, app, Limits::default(), async move {
        shutdown.await;
        closing.cancel();
    })
    .await;
    draining.finished().await;
    Ok(())
}

fn routes(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/applied", get(applied))
        .route(
            "/fill-ticket",
            get(|State(app): State<App>| async move { super::fill::ticket(&app.state.node) }),
        )
        .route(
            "/may-fill",
            get(|State(app): State<App>, query| async move {
                super::fill::may_fill(&app.state.node, query)
            }),
        )
        .fallback(not_found)
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<App>) -> Response {
    let node = app.state.node.snapshot();
    let p = &node.position;
    let mut body = json!({
        "ready": node.readiness.is_ready(),
        "state": p.state.name(),
        "applied_sequence": p.applied,
        "lag_messages": p.lag(),
    });
    match node.readiness {
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
    let snapshot = node.snapshot();
    let (p, s, readiness) = (&snapshot.position, &snapshot.stats, &snapshot.readiness);
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
                "superseded": c.superseded,
            })
        })
        .collect();
    Json(json!({
        "node_id": info.node_id.as_str(),
        "version": info.version,
        "stream": info.stream,
        "state": p.state.name(),
        "ready": readiness.is_ready(),
        "reason": match readiness {
            Readiness::Ready => None,
            Readiness::NotReady(reason) => Some(reason),
        },
        "sequences": {
            "applied": p.applied,
            "stored": p.stored,
            "stream_last": p.stream_last,
            "target": p.target,
        },
        "stream_created": format_time(p.stream_created()),
        "token": p.token().map(|t| t.to_string()),
        "duplicate_node_id": snapshot.duplicate,
        "lag": { "messages": p.lag(), "seconds": lag_seconds(&snapshot, now) },
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
            "escalations_coalesced": s.escalations_coalesced,
            "superseded": s.superseded,
            "probe_canaries_refused": s.probe_canaries_refused,
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

/// What `/applied` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// `token=<sequence>@<incarnation>`: checked against the incarnation.
    Token(ReadToken),
    /// `seq=N`: a bare sequence, read in whatever incarnation the node follows.
    Sequence(u64),
}

/// `/applied?token=T&timeout=5s` (or `seq=N`): the read-your-writes wait.
async fn applied(
    State(app): State<App>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let (wanted, timeout) = match query
        .map_err(|e| e.body_text())
        .and_then(|Query(q)| parse_applied_query(&q))
    {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message, json!({})),
    };
    let node = &app.state.node;
    let answer = |status: StatusCode, applied: bool, extra: Value| {
        let p = node.position();
        let mut body = json!({
            "applied": applied,
            "applied_sequence": p.applied,
            "applied_token": p.token().map(|t| t.to_string()),
            "stream_created": format_time(p.stream_created()),
        });
        match wanted {
            Wanted::Token(token) => {
                body["token"] = token.to_string().into();
                body["sequence"] = token.sequence.into();
            }
            Wanted::Sequence(sequence) => body["sequence"] = sequence.into(),
        }
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
    let wait = async {
        match wanted {
            Wanted::Token(token) => node.wait_token(&token).await,
            Wanted::Sequence(sequence) => node.wait_applied(sequence).await,
        }
    };
    tokio::select! {
        waited = tokio::time::timeout(timeout, wait) => match waited {
            Ok(Ok(())) => answer(StatusCode::OK, true, json!({})),
            Ok(Err(e @ NodeError::OtherIncarnation { .. })) => answer(
                StatusCode::GONE,
                false,
                json!({ "error": e.to_string() }),
            ),
            Ok(Err(e)) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                false,
                json!({ "error": e.to_string() }),
            ),
            Err(_) => {
                let waited = humantime::format_duration(timeout).to_string();
                let what = match wanted {
                    Wanted::Token(token) => format!("token {token}"),
                    Wanted::Sequence(sequence) => format!("sequence {sequence}"),
                };
                answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    false,
                    json!({
                        "timeout": waited,
                        "error": format!(
                            "{what} was not applied within {waited} (applied: {})",
                            node.applied()
                        ),
                    }),
                )
            }
        },
        _ = app.closing.cancelled() => shutting_down(),
    }
}

/// `token` or `seq` (one of them, required) and `timeout` (a humantime
/// duration, default 5s, at most 60s), or a message for a 400.
fn parse_applied_query(query: &HashMap<String, String>) -> Result<(Wanted, Duration), String> {
    let wanted = match (query.get("token"), query.get("seq")) {
        (Some(_), Some(_)) => {
            return Err("give either `token` or `seq`, not both".to_owned());
        }
        (Some(raw), None) => Wanted::Token(raw.parse::<ReadToken>().map_err(|e| e.to_string())?),
        (None, Some(raw)) => Wanted::Sequence(raw.trim().parse::<u64>().map_err(|_| {
            format!("bad `seq` {raw:?}: expected a stream sequence, a whole number such as 42")
        })?),
        (None, None) => {
            return Err(
                "missing query parameter `token`: the read-your-writes token a publish \
                 returned, `<sequence>@<incarnation>` (for example \
                 /applied?token=42@18a3c5e2f0b1d400&timeout=5s)"
                    .to_owned(),
            )
        }
    };
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
    Ok((wanted, timeout))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint".into(),
        json!({ "endpoints": ["/healthz", "/readyz", "/metrics", "/status", "/applied?token=T&timeout=5s", "/fill-ticket", "/may-fill?ticket=T&refresher=R&id=N"] }),
    )
}

pub(super) fn error(status: StatusCode, message: String, extra: Value) -> Response {
    let mut body = json!({ "error": message });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<(Wanted, Duration), String> {
        let q = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_applied_query(&q)
    }

    #[test]
    fn applied_query() {
        let seq = Wanted::Sequence;
        assert_eq!(
            parse(&[("seq", "42")]),
            Ok((seq(42), DEFAULT_APPLIED_TIMEOUT))
        );
        assert_eq!(
            parse(&[("seq", "7"), ("timeout", "250ms")]),
            Ok((seq(7), Duration::from_millis(250)))
        );
        assert_eq!(
            parse(&[("seq", "7"), ("timeout", "1m")]),
            Ok((seq(7), MAX_APPLIED_TIMEOUT))
        );
        let token: ReadToken = "42@ff".parse().unwrap();
        assert_eq!(
            parse(&[("token", "42@ff")]),
            Ok((Wanted::Token(token), DEFAULT_APPLIED_TIMEOUT))
        );
        assert!(parse(&[])
            .unwrap_err()
            .contains("missing query parameter `token`"));
        assert!(parse(&[("seq", "1"), ("token", "1@ff")])
            .unwrap_err()
            .contains("not both"));
        assert!(parse(&[("token", "42")])
            .unwrap_err()
            .contains("<sequence>@<incarnation>"));
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
