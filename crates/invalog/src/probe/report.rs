//! The probe's report: what [`super::run`] recorded (send and
//! acknowledgement per canary, first answer per node and canary) turned
//! into per-node and fleet latencies with exact nearest-rank percentiles,
//! and the "N of M canaries applied on all nodes within T" count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use super::ProbeSettings;

/// node → canary → (latency, stream sequence): each node's first answer.
pub(super) type Answers = BTreeMap<String, BTreeMap<u64, (Duration, u64)>>;

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

/// What the run loop records for one canary.
#[derive(Default)]
pub(super) struct CanaryState {
    pub(super) sent: Option<Instant>,
    pub(super) acked: Option<Result<Duration, String>>,
}

/// The canaries a node had to apply: the published ones, from the first it
/// answered when it was not listed (it joined during the probe).
pub(super) fn expected_of<'a>(
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

pub(super) fn report(
    probe: String,
    started_at: SystemTime,
    duration: Duration,
    settings: &ProbeSettings,
    canaries: &[CanaryState],
    answers: &Answers,
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
            if latency.is_none_or(|l| l > settings.timeout) {
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
