//! The propagation probe. `invalog probe` publishes *canary* batches to the
//! reserved refresher [`PROBE_REFRESHER`]; every running [`crate::Node`]
//! answers each canary it applies — in stream order, like any message — with
//! a core NATS reply naming the node and the sequence, so the probe can time
//! publish → applied on every node, from one clock.
//!
//! A canary is a `refresh_json` instruction whose JSON is
//! `{"probe": "<run id>", "canary": <n>, "reply": "<subject>"}`; the reply is
//! encoded by [`crate::wire::encode_probe_reply`].
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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use futures::StreamExt;
use uuid::Uuid;

use crate::model::{Instruction, Provenance, RefresherDef, RefresherName};
use crate::publish::{Publisher, PublisherSettings};
use crate::stream::LogSettings;
use crate::wire::{self, Canary};

/// Name of the reserved probe refresher (subject `<prefix>._probe`).
pub const PROBE_REFRESHER: &str = "_probe";

/// Fixed id of the reserved probe refresher.
pub const PROBE_REFRESHER_ID: Uuid = Uuid::from_u128(0x1a7a_10c0_0000_4000_8000_0000_0000_b0b0);

/// The reserved probe refresher's definition.
pub fn probe_refresher() -> RefresherDef {
    RefresherDef {
        id: PROBE_REFRESHER_ID,
        name: RefresherName::new(PROBE_REFRESHER).expect("a valid name"),
    }
}

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
    pub expected_nodes: Vec<String>,
}

/// Latencies of a set of canaries: exact nearest-rank percentiles, where a
/// canary that was not answered counts as slower than every answer (so a
/// percentile that falls on one is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Canaries measured.
    pub samples: u64,
    /// Of which answered.
    pub answered: u64,
    /// Median.
    pub p50: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// Slowest (`None` when one was not answered at all).
    pub max: Option<Duration>,
}

impl Latencies {
    /// Computes percentiles from samples (`None` = not answered).
    pub fn of(mut samples: Vec<Option<Duration>>) -> Self {
        samples.sort_by_key(|s| (s.is_none(), *s));
        Latencies {
            samples: samples.len() as u64,
            answered: samples.iter().filter(|s| s.is_some()).count() as u64,
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: samples.last().copied().flatten(),
        }
    }
}

/// Nearest rank: the smallest sample with at least `p`% of samples at or
/// below it (`sorted` ascending, unanswered last).
fn percentile(sorted: &[Option<Duration>], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the probe saw of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    /// The node id.
    pub node: String,
    /// True when the node was listed in [`ProbeSettings::expected_nodes`];
    /// false when it was discovered by its answers.
    pub listed: bool,
    /// Canaries this node had to apply.
    pub expected: u64,
    /// Of which it answered (at any time before the probe ended).
    pub applied: u64,
    /// Of which within [`ProbeSettings::within`].
    pub within: u64,
    /// Expected canaries not answered within [`ProbeSettings::timeout`].
    pub missed: u64,
    /// The first of them (canary number).
    pub first_missed: Option<u64>,
    /// Highest stream sequence it reported applying.
    pub last_sequence: Option<u64>,
    /// Publish → applied on this node.
    pub latency: Latencies,
}

/// A canary that could not be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFailure {
    /// Canary number.
    pub canary: u64,
    /// Why.
    pub error: String,
}

/// The outcome of a probe run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The run id, in every canary.
    pub probe: String,
    /// When the first canary was sent (wall clock, for the record).
    pub started_at: SystemTime,
    /// From the first send to the end of the wait.
    pub duration: Duration,
    /// The settings it ran with.
    pub settings: ProbeSettings,
    /// Canaries sent.
    pub sent: u64,
    /// Canaries stored in the stream (acknowledged).
    pub published: u64,
    /// Canaries not acknowledged.
    pub publish_failures: Vec<PublishFailure>,
    /// Send → JetStream acknowledgement.
    pub publish_ack: Latencies,
    /// Every node, sorted by id.
    pub nodes: Vec<NodeResult>,
    /// Per canary, send → applied on *all* nodes that had to apply it.
    pub fleet: Latencies,
    /// Canaries applied on all nodes within [`ProbeSettings::within`] (N of
    /// "N of M applied on all L nodes within T").
    pub all_within: u64,
    /// Canaries applied on all nodes within [`ProbeSettings::timeout`].
    pub all_within_timeout: u64,
}

impl ProbeReport {
    /// `all_within / published`; 0 when nothing was published or no node
    /// answered.
    pub fn fraction_within(&self) -> f64 {
        if self.published == 0 {
            return 0.0;
        }
        self.all_within as f64 / self.published as f64
    }

    /// The "nines" of [`Self::fraction_within`]: ⌊−log10(1 − fraction)⌋
    /// (0.99 → 2, 0.999 → 3). When every canary made it, the sample size
    /// bounds the claim: ⌊log10(published)⌋ (100 of 100 → 2).
    pub fn nines(&self) -> u32 {
        let fraction = self.fraction_within();
        if self.published == 0 || fraction <= 0.0 {
            return 0;
        }
        let nines = if self.all_within == self.published {
            (self.published as f64).log10()
        } else {
            -(1.0 - fraction).log10()
        };
        (nines + 1e-9).floor() as u32
    }

    /// True when every canary was published and reached every node within
    /// the timeout, and at least one node answered.
    pub fn is_ok(&self) -> bool {
        self.publish_failures.is_empty()
            && !self.nodes.is_empty()
            && self.nodes.iter().all(|n| n.missed == 0)
    }
}

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A setting is out of range.
    #[error("invalid probe setting: {0}")]
    InvalidSettings(String),
    /// The reply subscription failed.
    #[error("cannot subscribe to the probe's reply subject: {0}")]
    Subscribe(String),
}

/// What the run loop records for one canary.
#[derive(Default)]
struct CanaryState {
    sent: Option<Instant>,
    acked: Option<Result<Duration, String>>,
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
    let inbox = client.new_inbox();
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
    let mut answers: BTreeMap<String, BTreeMap<u64, (Duration, u64)>> = BTreeMap::new();
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
                let instructions = vec![Instruction::RefreshJson(wire::canary_json(&canary))];
                let publisher = publisher.clone();
                let sent = Instant::now();
                canaries[next].sent = Some(sent);
                acks.spawn(async move {
                    let outcome = publisher.publish(PROBE_REFRESHER, instructions, &Provenance::default()).await;
                    (canary.canary, outcome.map(|_| sent.elapsed()).map_err(|e| e.to_string()))
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
                let Ok(reply) = wire::decode_probe_reply(&message.payload) else { continue };
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

/// The canaries a node had to apply: the published ones, from the first it
/// answered when it was not listed (it joined during the probe).
fn expected_of<'a>(
    canaries: &'a [CanaryState],
    answered: Option<&BTreeMap<u64, (Duration, u64)>>,
    listed: bool,
) -> impl Iterator<Item = u64> + 'a {
    let from = match (listed, answered.and_then(|a| a.keys().next())) {
        (false, Some(first)) => *first,
        _ => 0,
    };
    canaries
        .iter()
        .enumerate()
        .skip(from as usize)
        .filter(|(_, c)| matches!(c.acked, Some(Ok(_))))
        .map(|(n, _)| n as u64)
}

fn all_answered(
    canaries: &[CanaryState],
    answers: &BTreeMap<String, BTreeMap<u64, (Duration, u64)>>,
    expected: &[String],
) -> bool {
    let nodes: BTreeSet<&String> = expected.iter().chain(answers.keys()).collect();
    nodes.into_iter().all(|node| {
        let answered = answers.get(node);
        let listed = expected.contains(node);
        expected_of(canaries, answered, listed)
            .all(|n| answered.is_some_and(|a| a.contains_key(&n)))
    })
}

fn report(
    probe: String,
    started_at: SystemTime,
    duration: Duration,
    settings: &ProbeSettings,
    canaries: &[CanaryState],
    answers: &BTreeMap<String, BTreeMap<u64, (Duration, u64)>>,
) -> ProbeReport {
    let mut publish_failures = Vec::new();
    let mut ack_samples = Vec::new();
    for (n, c) in canaries
        .iter()
        .enumerate()
        .filter(|(_, c)| c.sent.is_some())
    {
        match &c.acked {
            Some(Ok(took)) => ack_samples.push(Some(*took)),
            Some(Err(error)) => publish_failures.push(PublishFailure {
                canary: n as u64,
                error: error.clone(),
            }),
            None => publish_failures.push(PublishFailure {
                canary: n as u64,
                error: "not acknowledged before the probe ended".into(),
            }),
        }
    }
    let published = ack_samples.len() as u64;
    let names: BTreeSet<&String> = settings
        .expected_nodes
        .iter()
        .chain(answers.keys())
        .collect();
    // canary → latencies on the nodes that had to apply it (None: missed).
    let mut per_canary: BTreeMap<u64, Vec<Option<Duration>>> = BTreeMap::new();
    let mut nodes = Vec::new();
    for node in names {
        let answered = answers.get(node);
        let listed = settings.expected_nodes.contains(node);
        let mut samples = Vec::new();
        let (mut within, mut missed, mut first_missed) = (0, 0, None);
        for n in expected_of(canaries, answered, listed) {
            let latency = answered.and_then(|a| a.get(&n)).map(|(l, _)| *l);
            within += u64::from(latency.is_some_and(|l| l <= settings.within));
            if !latency.is_some_and(|l| l <= settings.timeout) {
                missed += 1;
                first_missed.get_or_insert(n);
            }
            per_canary.entry(n).or_default().push(latency);
            samples.push(latency);
        }
        let latency = Latencies::of(samples);
        nodes.push(NodeResult {
            node: node.clone(),
            listed,
            expected: latency.samples,
            applied: latency.answered,
            within,
            missed,
            first_missed,
            last_sequence: answered.and_then(|a| a.values().map(|(_, s)| *s).max()),
            latency,
        });
    }
    let all: Vec<Option<Duration>> = canaries
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.acked, Some(Ok(_))))
        .map(|(n, _)| match per_canary.get(&(n as u64)) {
            Some(l) if l.iter().all(Option::is_some) => l.iter().flatten().max().copied(),
            _ => None,
        })
        .collect();
    let count_within =
        |limit: Duration| all.iter().filter(|l| l.is_some_and(|l| l <= limit)).count() as u64;
    ProbeReport {
        probe,
        started_at,
        duration,
        settings: settings.clone(),
        sent: canaries.iter().filter(|c| c.sent.is_some()).count() as u64,
        published,
        publish_failures,
        publish_ack: Latencies::of(ack_samples),
        nodes,
        all_within: count_within(settings.within),
        all_within_timeout: count_within(settings.timeout),
        fleet: Latencies::of(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn percentiles_are_nearest_rank_with_misses_last() {
        let l = Latencies::of((1..=100).rev().map(ms).collect());
        assert_eq!((l.p50, l.p99, l.max), (ms(50), ms(99), ms(100)));
        let l = Latencies::of(vec![ms(3), None, ms(1)]);
        assert_eq!((l.samples, l.answered), (3, 2));
        assert_eq!((l.p50, l.p99, l.max), (ms(3), None, None));
        assert_eq!(Latencies::of(vec![]).p50, None);
        assert_eq!(Latencies::of(vec![ms(7)]).p99, ms(7));
    }

    #[test]
    fn nines_follow_the_fraction_and_the_sample_size() {
        let report = |published, all_within| ProbeReport {
            probe: String::new(),
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            settings: ProbeSettings {
                rate: 1.0,
                count: published,
                within: Duration::ZERO,
                timeout: Duration::ZERO,
                expected_nodes: vec![],
            },
            sent: published,
            published,
            publish_failures: vec![],
            publish_ack: Latencies::default(),
            nodes: vec![],
            fleet: Latencies::default(),
            all_within,
            all_within_timeout: all_within,
        };
        assert_eq!(report(1000, 990).nines(), 2);
        assert_eq!(report(1000, 999).nines(), 3);
        assert_eq!(report(1000, 989).nines(), 1);
        assert_eq!(report(100, 100).nines(), 2);
        assert_eq!(report(50, 50).nines(), 1);
        assert_eq!(report(0, 0).nines(), 0);
        assert!(!report(10, 10).is_ok(), "no node answered");
    }
}
