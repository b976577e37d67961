//! The probe as a long-running service (`invalog probe --serve`): one
//! canary every [`ServiceSettings::every`], forever, until the shutdown
//! future completes; answers are counted in a `Tally` served as
//! OpenMetrics on `/metrics` (and `/healthz`) through the agent's HTTP
//! server loop and its limits (`crate::server`), and summarised in
//! one log line a minute. Canaries and replies are those of the one-shot
//! probe ([`invalog::probe::run`]): one run id for the service's life, canary
//! numbers counting up.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use tokio::net::TcpListener;
use uuid::Uuid;

mod tally;

use crate::metrics::CONTENT_TYPE;
use crate::server::{accept_until, Limits};
use invalog::model::{Instruction, Provenance};
use invalog::probe::{
    canary_json, check_reply, decode_probe_reply, probe_refresher, reply_subject, Canary,
    ProbeError, PROBE_REFRESHER,
};
use invalog::publish::{Publisher, PublisherSettings};
use invalog::stream::LogSettings;
use tally::Tally;
pub use tally::{Totals, LATENCY_BUCKETS, MAX_NODES};

/// Canaries waiting for JetStream's acknowledgement at once; a tick while
/// this many wait (NATS unreachable) counts a publish failure instead of
/// queueing another.
pub const MAX_IN_FLIGHT: usize = 64;

/// How often the summary line is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// How the service runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// Time between canaries (more than 0).
    pub every: Duration,
    /// A canary not applied by an expected node within this long is missed
    /// by it.
    pub timeout: Duration,
    /// A node that has not answered for this long is no longer expected
    /// and its series disappear from `/metrics`.
    pub forget_after: Duration,
    /// Nodes always expected (never forgotten); other nodes are expected
    /// from their first answer on, or from their first recent presence
    /// report.
    pub nodes: Vec<String>,
    /// The presence bucket read every [`PRESENCE_EVERY`], `None` to read
    /// none: nodes with a report younger than `stale_after` are expected,
    /// nodes that report `stopped` are forgotten at once.
    pub presence: Option<PresenceSource>,
}

/// Where the service reads node presence reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSource {
    /// The bucket (`[presence] bucket`).
    pub bucket: String,
    /// A report older than this is stale: its node is not expected for it.
    pub stale_after: Duration,
}

/// How often presence reports are read.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(5);

/// Runs the service: serves `/metrics` and `/healthz` on `listener` and
/// publishes canaries until `shutdown` completes, then stops publishing and
/// accepting and returns once open connections finished (within the
/// agent's shutdown grace). Fails at start on invalid settings or a failed
/// reply subscription, and later if that subscription ends (the client
/// was closed).
pub async fn serve(
    js: &jetstream::Context,
    log: &LogSettings,
    publisher: PublisherSettings,
    settings: &ServiceSettings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProbeError> {
    if settings.every.is_zero() || settings.timeout.is_zero() || settings.forget_after.is_zero() {
        return Err(ProbeError::InvalidSettings(
            "every, timeout and forget-after must be more than 0".into(),
        ));
    }
    let run = Uuid::now_v7().to_string();
    let inbox = reply_subject(&run).expect("a UUID is a token");
    let canary = |n| Canary {
        probe: run.clone(),
        canary: n,
        reply: inbox.clone(),
    };
    if let Err(why) = check_reply(&canary(0), &log.subject_prefix) {
        return Err(ProbeError::InvalidSettings(format!(
            "nodes would refuse to answer: {why}; choose a [stream] subject_prefix outside `{}`",
            invalog::probe::REPLY_PREFIX
        )));
    }
    let client = js.client();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ProbeError::Subscribe(e.to_string()))?;
    let publisher = Publisher::new(js.clone(), log.clone(), publisher, [probe_refresher()]);
    let tally = Arc::new(Mutex::new(Tally::new(
        settings.timeout,
        settings.forget_after,
        &settings.nodes,
    )));

    let presence = settings.presence.clone().map(|source| {
        let reader = read_presence(js.clone(), source, log.stream.clone(), tally.clone());
        tokio::spawn(reader)
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(accept_until(
        listener,
        router(tally.clone(), settings.every),
        Limits::default(),
        stop.clone().cancelled_owned(),
    ));
    tracing::info!(run = %run, every = ?settings.every, "probe service publishing canaries");

    let mut ticker = tokio::time::interval(settings.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    summary.tick().await;
    let mut previous = Totals::default();
    let mut acks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    let failing = Arc::new(AtomicBool::new(false));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => break,
            _ = ticker.tick() => {
                let now = Instant::now();
                let mut t = tally.lock().expect("not poisoned");
                t.expire(now);
                if acks.len() >= MAX_IN_FLIGHT {
                    t.not_sent();
                    continue;
                }
                t.sent(next, now);
                drop(t);
                let instructions = vec![Instruction::RefreshJson(canary_json(&canary(next)))];
                let publisher = publisher.clone();
                let failing = failing.clone();
                let n = next;
                acks.spawn(async move {
                    let outcome = publisher.publish(PROBE_REFRESHER, instructions, &Provenance::default()).await;
                    match &outcome {
                        // WARN at the first failure of a series, then DEBUG.
                        Err(error) if !failing.swap(true, Relaxed) => {
                            tracing::warn!(canary = n, error = %error.chain(), "probe: canary not published");
                        }
                        Err(error) => tracing::debug!(canary = n, error = %error.chain(), "probe: canary not published"),
                        Ok(_) if failing.swap(false, Relaxed) => {
                            tracing::info!(canary = n, "probe: canaries published again");
                        }
                        Ok(_) => {}
                    }
                    (n, outcome.is_ok())
                });
                next += 1;
            }
            Some(Ok((n, ok))) = acks.join_next(), if !acks.is_empty() => {
                tally.lock().expect("not poisoned").acknowledged(n, ok, Instant::now());
            }
            message = replies.next() => {
                let at = Instant::now();
                let Some(message) = message else {
                    outcome = Err(ProbeError::Subscribe("the reply subscription ended".into()));
                    break;
                };
                let Ok(reply) = decode_probe_reply(&message.payload) else { continue };
                if reply.probe == run {
                    tally.lock().expect("not poisoned").answered(reply.canary, &reply.node, at);
                }
            }
            _ = summary.tick() => {
                let totals = tally.lock().expect("not poisoned").totals(Instant::now(), settings.every);
                log_summary(&previous, &totals);
                previous = totals;
            }
        }
    }
    acks.abort_all();
    if let Some(presence) = presence {
        presence.abort();
    }
    stop.cancel();
    if let Ok(draining) = server.await {
        draining.finished().await;
    }
    outcome
}

/// Reads the presence reports every [`PRESENCE_EVERY`] into the tally; a
/// failure (no bucket yet, no permission) is a WARN once, then DEBUG, and
/// the tally keeps the nodes that answer.
async fn read_presence(
    js: jetstream::Context,
    source: PresenceSource,
    stream: String,
    tally: Arc<Mutex<Tally>>,
) {
    let mut warned = false;
    let mut ticker = tokio::time::interval(PRESENCE_EVERY);
    loop {
        ticker.tick().await;
        let read_at = Instant::now();
        match invalog::presence::read_all(&js, &source.bucket, &stream).await {
            Ok(reports) => {
                let now = SystemTime::now();
                let (stopped, running): (Vec<_>, Vec<_>) =
                    reports.into_iter().partition(|r| r.state == "stopped");
                let live = running
                    .into_iter()
                    .filter(|r| {
                        now.duration_since(r.last_seen).unwrap_or_default() <= source.stale_after
                    })
                    .map(|r| r.node)
                    .collect();
                let stopped: Vec<String> = stopped.into_iter().map(|r| r.node).collect();
                tally
                    .lock()
                    .expect("not poisoned")
                    .presence(read_at, live, &stopped);
            }
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(%error, "probe: cannot read presence reports; expecting only the nodes that answer and those named with --node");
            }
            Err(error) => tracing::debug!(%error, "probe: cannot read presence reports"),
        }
    }
}

/// `/metrics` (the tally as of the request) and `/healthz`.
fn router(tally: Arc<Mutex<Tally>>, every: Duration) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let text = tally
                    .lock()
                    .expect("not poisoned")
                    .render(Instant::now(), every);
                std::future::ready(([(header::CONTENT_TYPE, CONTENT_TYPE)], text))
            }),
        )
}

/// The minute's line: what changed since `previous`.
fn log_summary(previous: &Totals, now: &Totals) {
    tracing::info!(
        published = now.published - previous.published,
        publish_failed = now.failed - previous.failed,
        applied_on_all_nodes = now.fleet_applied - previous.fleet_applied,
        within_100ms = now.fleet_within_100ms - previous.fleet_within_100ms,
        missed = now.fleet_missed - previous.fleet_missed,
        nodes_answering = now.answering,
        "probe: last minute"
    );
}
