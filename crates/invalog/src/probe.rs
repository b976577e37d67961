//! The propagation probe. `invalog probe` publishes *canary* batches to the
//! reserved refresher [`PROBE_REFRESHER`]; every running [`crate::Node`]
//! answers each canary it applies — in stream order, like any message — with
//! a core NATS reply naming the node and the sequence, so the probe can time
//! publish → applied on every node, from one clock.
//!
//! A canary is a `refresh_json` instruction whose JSON is
//! `{"probe": "<run id>", "canary": <n>, "reply": "_INVALOG.probe.<run id>"}`;
//! the reply is encoded by [`encode_probe_reply`]. Nodes answer
//! only on that subject of the canary's own run, at most
//! [`MAX_CANARIES_PER_MESSAGE`] per message (`reply`).
//!
//! [`run`] sends [`ProbeSettings::count`] canaries at [`ProbeSettings::rate`]
//! per second. Each latency is measured on the probe's monotonic clock from
//! just before the canary is handed to the publisher (before JetStream's
//! acknowledgement) to the arrival of the node's reply, so it includes the
//! publish round trip, the node's read and its turn in the stream order,
//! and the reply's trip back. The [`ProbeReport`] gives, per node and for
//! the fleet, exact nearest-rank percentiles over the canaries each node was
//! expected to apply (a canary a node never answered counts as slower than
//! any answer), and "N of M canaries applied on all nodes within T".
//!
//! `report` turns what the run recorded into the [`ProbeReport`]; `reply`
//! checks where a node may answer. The agent crate's `probe_service` runs
//! the probe forever (`invalog probe --serve`) and serves what it counts
//! as OpenMetrics.

mod canary;
mod reply;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use futures::StreamExt;
use uuid::Uuid;

use crate::model::{Instruction, Provenance};
use crate::publish::{Publisher, PublisherSettings};
use crate::stream::LogSettings;
use report::{expected_of, report, Answers, CanaryState};

pub use canary::{
    canary_json, decode_probe_reply, encode_probe_reply, parse_canary, Canary, ProbeReply,
};
pub use reply::{
    check_reply, redact_subject, reply_subject, ReplyRefused, MAX_CANARIES_PER_MESSAGE,
    REPLY_PREFIX,
};
pub use report::{Latencies, NodeResult, ProbeReport, PublishFailure};

pub use crate::model::{probe_refresher, PROBE_REFRESHER, PROBE_REFRESHER_ID};

/// How a probe runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    /// Canaries per second (more than 0).
    pub rate: f64,
    /// Canaries to send (at least 1).
    pub count: u64,
    /// The threshold of "applied on all nodes within T".
    pub within: Duration,
    /// How long a canary may take to reach every node before it counts as
    /// missed; the probe also waits at most this long after the last send.
    pub timeout: Duration,
    /// Nodes known to be live (from presence reports, or named by the
    /// operator): each must answer every canary. Nodes that answer without
    /// being listed are counted too, from the first canary they answered.
    /// The probe ends as soon as every node answered every canary, but with
    /// no node listed it cannot know that and always waits `timeout` after
    /// the last canary.
    pub expected_nodes: Vec<String>,
}

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// A setting is out of range.
    #[error("invalid probe setting: {0}")]
    InvalidSettings(String),
    /// The reply subscription failed.
    #[error("cannot subscribe to the probe's reply subject: {0}")]
    Subscribe(String),
}

/// Runs a probe: publishes canaries through a publisher with `publisher`
/// settings (its origin names the probe in the log), collects the answers,
/// and reports. Only core NATS and JetStream publishing are used; nothing
/// is stored apart from the canaries themselves.
pub async fn run(
    js: &jetstream::Context,
    log: &LogSettings,
    publisher: PublisherSettings,
    settings: &ProbeSettings,
) -> Result<ProbeReport, ProbeError> {
    if !(settings.rate.is_finite() && settings.rate > 0.0) {
        return Err(ProbeError::InvalidSettings(format!(
            "rate must be more than 0 per second, not {}",
            settings.rate
        )));
    }
    if settings.count == 0 || settings.timeout.is_zero() {
        return Err(ProbeError::InvalidSettings(
            "count and timeout must be more than 0".into(),
        ));
    }
    let client = js.client();
    let publisher = Publisher::new(js.clone(), log.clone(), publisher, [probe_refresher()]);
    let probe = Uuid::now_v7().to_string();
    let inbox = reply_subject(&probe).expect("a UUID is a token");
    let first = Canary {
        probe: probe.clone(),
        canary: 0,
        reply: inbox.clone(),
    };
    if let Err(why) = check_reply(&first, &log.subject_prefix) {
        return Err(ProbeError::InvalidSettings(format!(
            "nodes would refuse to answer: {why}; choose a [stream] subject_prefix outside `{REPLY_PREFIX}`"
        )));
    }
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ProbeError::Subscribe(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| ProbeError::Subscribe(e.to_string()))?;

    let count = settings.count as usize;
    let mut canaries: Vec<CanaryState> = (0..count).map(|_| CanaryState::default()).collect();
    // node → canary → (latency, sequence); first answer only.
    let mut answers: Answers = BTreeMap::new();
    let mut acks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut next = 0usize;
    let mut deadline = None;
    loop {
        tokio::select! {
            _ = ticker.tick(), if next < count => {
                let canary = Canary { probe: probe.clone(), canary: next as u64, reply: inbox.clone() };
                let instructions = vec![Instruction::RefreshJson(canary_json(&canary))];
                let publisher = publisher.clone();
                let sent = Instant::now();
                canaries[next].sent = Some(sent);
                acks.spawn(async move {
                    let outcome = publisher.publish(PROBE_REFRESHER, instructions, &Provenance::default()).await;
                    (canary.canary, outcome.map(|_| sent.elapsed()).map_err(|e| e.chain()))
                });
                next += 1;
                if next == count {
                    deadline = Some(tokio::time::Instant::now() + settings.timeout);
                }
            }
            Some(joined) = acks.join_next(), if !acks.is_empty() => {
                if let Ok((n, outcome)) = joined {
                    canaries[n as usize].acked = Some(outcome);
                }
            }
            message = replies.next() => {
                let arrived = Instant::now();
                let Some(message) = message else { break };
                let Ok(reply) = decode_probe_reply(&message.payload) else { continue };
                let sent = canaries.get(reply.canary as usize).and_then(|c| c.sent);
                if let (true, Some(sent)) = (reply.probe == probe, sent) {
                    answers.entry(reply.node).or_default().entry(reply.canary)
                        .or_insert((arrived.duration_since(sent), reply.sequence));
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => break,
        }
        if next == count
            && acks.is_empty()
            && all_answered(&canaries, &answers, &settings.expected_nodes)
        {
            break;
        }
    }
    acks.abort_all();
    let duration = started.elapsed();
    drop(replies);
    Ok(report(
        probe, started_at, duration, settings, &canaries, &answers,
    ))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// True when every listed node, and every node that answered, answered
/// every canary it had to apply. False when no node is listed: the probe
/// cannot know which nodes are still to answer, so it waits until its
/// deadline.
fn all_answered(canaries: &[CanaryState], answers: &Answers, expected: &[String]) -> bool {
    let nodes: BTreeSet<&String> = expected.iter().chain(answers.keys()).collect();
    !expected.is_empty()
        && nodes.into_iter().all(|node| {
            let answered = answers.get(node);
            let listed = expected.contains(node);
            expected_of(canaries, answered, listed)
                .all(|n| answered.is_some_and(|a| a.contains_key(&n)))
        })
}
