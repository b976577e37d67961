//! What the probe service ([`super`]) has seen, as live
//! `prometheus-client` metrics: per node (label `node`) and for the fleet,
//! canaries applied within 10 ms / 100 ms / 1 s, never applied within the
//! timeout, and the publish → applied latency histogram; canaries published
//! and failed; nodes answering; the age of the last canary.
//!
//! Memory stays bounded however long the service runs: a canary is
//! forgotten once every node it expected answered or its timeout passed,
//! a node that has not answered for `forget_after` (and has no recent
//! presence report) stops being expected and reported (its series are
//! removed), a node whose presence report says `stopped` at once, and at
//! most [`MAX_NODES`] nodes are tracked at once.
//!
//! The nodes expected to apply a canary: those named with `--node`, those
//! with a recent presence report, and those that answered recently.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The latency histogram's buckets, in seconds (the agent's apply buckets).
pub const LATENCY_BUCKETS: [f64; 14] = invalog::node::APPLY_BUCKETS;

/// The thresholds of `…_within_total{within}`, in seconds.
pub const WITHIN: [(f64, &str); 3] = [(0.01, "0.01"), (0.1, "0.1"), (1.0, "1")];

/// How long after its timeout a canary waits for a presence read before
/// its misses are counted anyway (see [`Tally::presence`]).
pub const PRESENCE_GRACE: Duration = Duration::from_secs(15);

/// At most this many nodes are tracked at once; answers from further nodes
/// are ignored until one is forgotten.
pub const MAX_NODES: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeWithin {
    node: String,
    within: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Within {
    within: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// One canary still waiting for answers.
struct Pending {
    sent: Instant,
    expected: BTreeSet<String>,
    answered: BTreeSet<String>,
    slowest: Duration,
}

/// The service's counters and what it still waits for.
pub struct Tally {
    timeout: Duration,
    forget_after: Duration,
    listed: BTreeSet<String>,
    /// Nodes whose presence report is recent (and not `stopped`).
    live: BTreeSet<String>,
    /// When the last successful presence read began.
    presence_read: Option<Instant>,
    /// Whether reaching [`MAX_NODES`] was logged.
    warned_full: bool,
    pending: BTreeMap<u64, Pending>,
    /// node → when it last answered.
    seen: BTreeMap<String, Instant>,
    last_published: Option<Instant>,
    registry: Registry,
    published: Counter,
    publish_failed: Counter,
    applied: Family<NodeLabel, Counter>,
    within: Family<NodeWithin, Counter>,
    missed: Family<NodeLabel, Counter>,
    latency: Family<NodeLabel, Histogram>,
    answer_age: Family<NodeLabel, FloatGauge>,
    fleet_applied: Counter,
    fleet_within: Family<Within, Counter>,
    fleet_missed: Counter,
    fleet_latency: Histogram,
    answering: Gauge,
    published_age: FloatGauge,
}

/// A node's series start at 0 when it first answers, so rates and
/// increases see its first misses.
fn first_seen(
    missed: &Family<NodeLabel, Counter>,
    within: &Family<NodeWithin, Counter>,
    node: &str,
) {
    missed
        .get_or_create(&NodeLabel { node: node.into() })
        .inc_by(0);
    for (_, w) in WITHIN {
        within
            .get_or_create(&NodeWithin {
                node: node.into(),
                within: w,
            })
            .inc_by(0);
    }
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Tally {
    /// A tally whose canaries are missed after `timeout`, forgetting nodes
    /// silent for `forget_after`; `listed` nodes are always expected.
    pub fn new(timeout: Duration, forget_after: Duration, listed: &[String]) -> Self {
        let mut registry = Registry::with_prefix("invalog_probe");
        let t = Tally {
            timeout,
            forget_after,
            listed: listed.iter().cloned().collect(),
            live: BTreeSet::new(),
            presence_read: None,
            warned_full: false,
            pending: BTreeMap::new(),
            seen: BTreeMap::new(),
            last_published: None,
            published: Counter::default(),
            publish_failed: Counter::default(),
            applied: Family::default(),
            within: Family::default(),
            missed: Family::default(),
            latency: Family::new_with_constructor(histogram),
            answer_age: Family::default(),
            fleet_applied: Counter::default(),
            fleet_within: Family::default(),
            fleet_missed: Counter::default(),
            fleet_latency: histogram(),
            answering: Gauge::default(),
            published_age: FloatGauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "canaries_published",
            "Canaries JetStream acknowledged",
            t.published.clone(),
        );
        r.register(
            "canaries_publish_failed",
            "Canaries that could not be published",
            t.publish_failed.clone(),
        );
        r.register(
            "applied",
            "Canaries the node applied (answered), however late",
            t.applied.clone(),
        );
        r.register(
            "applied_within",
            "Canaries the node applied within `within` seconds of publishing",
            t.within.clone(),
        );
        r.register(
            "missed",
            "Canaries the node did not apply within the timeout",
            t.missed.clone(),
        );
        r.register_with_unit(
            "latency",
            "Publish → applied on the node",
            Unit::Seconds,
            t.latency.clone(),
        );
        r.register_with_unit(
            "last_applied_age",
            "Time since the node last applied a canary",
            Unit::Seconds,
            t.answer_age.clone(),
        );
        r.register(
            "fleet_applied",
            "Canaries applied on every expected node within the timeout",
            t.fleet_applied.clone(),
        );
        r.register(
            "fleet_applied_within",
            "Canaries applied on every expected node within `within` seconds",
            t.fleet_within.clone(),
        );
        r.register(
            "fleet_missed",
            "Canaries some expected node did not apply within the timeout",
            t.fleet_missed.clone(),
        );
        r.register_with_unit(
            "fleet_latency",
            "Publish → applied on the last expected node",
            Unit::Seconds,
            t.fleet_latency.clone(),
        );
        r.register(
            "nodes_answering",
            "Nodes that applied a canary within the last timeout + interval",
            t.answering.clone(),
        );
        r.register_with_unit(
            "last_published_age",
            "Time since JetStream last acknowledged a canary (-1 before the first)",
            Unit::Seconds,
            t.published_age.clone(),
        );
        for (_, within) in WITHIN {
            t.fleet_within.get_or_create(&Within { within }).inc_by(0);
        }
        for node in &t.listed {
            first_seen(&t.missed, &t.within, node);
        }
        Tally { registry, ..t }
    }

    /// Canary `n` was handed to the publisher at `sent`; every node known
    /// now is expected to apply it.
    pub fn sent(&mut self, n: u64, sent: Instant) {
        let known = self.listed.iter().chain(&self.live);
        let expected = known.chain(self.seen.keys()).cloned().collect();
        self.pending.insert(
            n,
            Pending {
                sent,
                expected,
                answered: BTreeSet::new(),
                slowest: Duration::ZERO,
            },
        );
    }

    /// JetStream acknowledged canary `n` (`Ok`) or it could not be
    /// published: then nobody is expected to apply it.
    pub fn acknowledged(&mut self, n: u64, ok: bool, at: Instant) {
        if ok {
            self.published.inc();
            self.last_published = Some(at);
        } else {
            self.publish_failed.inc();
            self.pending.remove(&n);
        }
    }

    /// What the presence reports say: `live` nodes (recent reports) are
    /// expected from the next canary on, even before they answer; `stopped`
    /// nodes (stopped cleanly) are forgotten at once, so a rolling restart
    /// counts no misses.
    ///
    /// Once presence has been read, a canary's misses are judged only after
    /// a read that began past its timeout (so a node that stopped meanwhile
    /// is not counted), or [`PRESENCE_GRACE`] after its timeout when reads
    /// fail.
    pub fn presence(&mut self, read_at: Instant, live: Vec<String>, stopped: &[String]) {
        self.presence_read = Some(read_at);
        self.live = live.into_iter().take(MAX_NODES).collect();
        for node in stopped {
            if self.seen.remove(node).is_some() && !self.listed.contains(node) {
                tracing::info!(%node, "probe: node stopped; no longer expected or reported");
                self.remove_series(node.clone());
            }
            for p in self.pending.values_mut() {
                p.expected.remove(node);
            }
        }
    }

    /// A canary that could not even be handed to the publisher.
    pub fn not_sent(&mut self) {
        self.publish_failed.inc();
    }

    /// `node` answered canary `n` at `at`.
    pub fn answered(&mut self, n: u64, node: &str, at: Instant) {
        if !self.seen.contains_key(node) && self.seen.len() >= MAX_NODES {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    max = MAX_NODES,
                    "probe: more nodes answer than are tracked; answers of further nodes are ignored"
                );
            }
            return;
        }
        let Some(p) = self.pending.get_mut(&n) else {
            return; // forgotten (timed out) or not ours
        };
        if !p.answered.insert(node.to_owned()) {
            return; // a second answer
        }
        if self.seen.insert(node.to_owned(), at).is_none() {
            first_seen(&self.missed, &self.within, node);
        }
        let latency = at.saturating_duration_since(p.sent);
        let label = NodeLabel { node: node.into() };
        self.applied.get_or_create(&label).inc();
        self.latency
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
        for (bound, within) in WITHIN {
            if latency.as_secs_f64() <= bound {
                let label = NodeWithin {
                    node: node.into(),
                    within,
                };
                self.within.get_or_create(&label).inc();
            }
        }
        p.slowest = p.slowest.max(latency);
        if !p.expected.is_empty() && p.expected.is_subset(&p.answered) {
            let slowest = p.slowest;
            self.pending.remove(&n);
            self.fleet_applied.inc();
            self.fleet_latency.observe(slowest.as_secs_f64());
            for (bound, within) in WITHIN {
                if slowest.as_secs_f64() <= bound {
                    self.fleet_within.get_or_create(&Within { within }).inc();
                }
            }
        }
    }

    /// Counts the canaries whose timeout passed as missed by every expected
    /// node that did not answer, and forgets nodes silent for
    /// `forget_after` (unless listed).
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        let judged = |p: &Pending| {
            let deadline = p.sent + timeout;
            now >= deadline
                && self
                    .presence_read
                    .is_none_or(|read| read >= deadline || now >= deadline + PRESENCE_GRACE)
        };
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| judged(p))
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            let p = self.pending.remove(&n).expect("listed above");
            let missing: Vec<&String> = p.expected.difference(&p.answered).collect();
            if missing.is_empty() {
                continue; // nobody was expected
            }
            self.fleet_missed.inc();
            for node in missing {
                self.missed
                    .get_or_create(&NodeLabel { node: node.clone() })
                    .inc();
            }
        }
        let forget_after = self.forget_after;
        let gone: Vec<String> = self
            .seen
            .iter()
            .filter(|(node, at)| {
                !self.listed.contains(*node)
                    && !self.live.contains(*node)
                    && now.saturating_duration_since(**at) >= forget_after
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            tracing::info!(%node, "probe: node silent; no longer expected or reported");
            self.seen.remove(&node);
            self.remove_series(node);
        }
    }

    fn remove_series(&self, node: String) {
        let label = NodeLabel { node };
        self.applied.remove(&label);
        self.missed.remove(&label);
        self.latency.remove(&label);
        self.answer_age.remove(&label);
        for (_, within) in WITHIN {
            self.within.remove(&NodeWithin {
                node: label.node.clone(),
                within,
            });
        }
    }

    /// Canaries still waiting for an answer or their timeout.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The OpenMetrics text (ending in `# EOF`) as of `now`, served as
    /// [`crate::metrics::CONTENT_TYPE`].
    pub fn render(&self, now: Instant, every: Duration) -> String {
        self.count_answering(now, every);
        for (node, at) in &self.seen {
            let age = now.saturating_duration_since(*at).as_secs_f64();
            let label = NodeLabel { node: node.clone() };
            self.answer_age.get_or_create(&label).set(age);
        }
        let age = self
            .last_published
            .map_or(-1.0, |at| now.saturating_duration_since(at).as_secs_f64());
        self.published_age.set(age);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Sets `nodes_answering`: nodes that answered within the last
    /// timeout + `every`.
    fn count_answering(&self, now: Instant, every: Duration) -> i64 {
        let recent = self.timeout + every;
        let answering = self
            .seen
            .values()
            .filter(|at| now.saturating_duration_since(**at) <= recent)
            .count();
        self.answering.set(answering as i64);
        answering as i64
    }

    /// The numbers of the minute's summary line: published, failed, fleet
    /// applied, fleet within 100 ms, fleet missed, nodes answering now.
    pub fn totals(&self, now: Instant, every: Duration) -> Totals {
        Totals {
            published: self.published.get(),
            failed: self.publish_failed.get(),
            fleet_applied: self.fleet_applied.get(),
            fleet_within_100ms: self
                .fleet_within
                .get_or_create(&Within { within: "0.1" })
                .get(),
            fleet_missed: self.fleet_missed.get(),
            answering: self.count_answering(now, every),
        }
    }
}

/// Cumulative counts, for the summary line (see `Tally::totals`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Canaries published.
    pub published: u64,
    /// Canaries not published.
    pub failed: u64,
    /// Canaries applied on every expected node.
    pub fleet_applied: u64,
    /// … within 100 ms.
    pub fleet_within_100ms: u64,
    /// Canaries some expected node missed.
    pub fleet_missed: u64,
    /// Nodes answering.
    pub answering: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
    }

    #[test]
    fn counts_per_node_and_fleet_then_forgets_silent_nodes() {
        let every = Duration::from_secs(1);
        let mut t = Tally::new(Duration::from_secs(5), Duration::from_secs(60), &[]);
        let t0 = Instant::now();
        // Canary 0: no node known yet; web-1 answers in 5 ms.
        t.sent(0, t0);
        t.acknowledged(0, true, t0);
        t.answered(0, "web-1", t0 + Duration::from_millis(5));
        // Canary 1: web-1 expected, answers in 50 ms; web-2 appears.
        t.sent(1, t0 + every);
        t.answered(1, "web-2", t0 + every + Duration::from_millis(2));
        t.answered(1, "web-1", t0 + every + Duration::from_millis(50));
        t.answered(1, "web-1", t0 + every + Duration::from_millis(60));
        // Canary 2: both expected; only web-2 answers.
        t.sent(2, t0 + 2 * every);
        t.answered(2, "web-2", t0 + 2 * every + Duration::from_millis(500));
        // Canary 3: not published.
        t.sent(3, t0 + 3 * every);
        t.acknowledged(3, false, t0 + 3 * every);
        t.expire(t0 + 10 * every);
        assert_eq!(t.pending(), 0);
        let text = t.render(t0 + 10 * every, every);
        for (name, value) in [
            ("invalog_probe_applied_total{node=\"web-1\"}", 2.0),
            (
                "invalog_probe_applied_within_total{node=\"web-1\",within=\"0.01\"}",
                1.0,
            ),
            (
                "invalog_probe_applied_within_total{node=\"web-1\",within=\"0.1\"}",
                2.0,
            ),
            (
                "invalog_probe_applied_within_total{node=\"web-2\",within=\"1\"}",
                2.0,
            ),
            ("invalog_probe_missed_total{node=\"web-1\"}", 1.0),
            ("invalog_probe_latency_seconds_count{node=\"web-1\"}", 2.0),
            ("invalog_probe_fleet_applied_total", 1.0),
            (
                "invalog_probe_fleet_applied_within_total{within=\"0.1\"}",
                1.0,
            ),
            ("invalog_probe_fleet_missed_total", 1.0),
            ("invalog_probe_canaries_published_total", 1.0),
            ("invalog_probe_canaries_publish_failed_total", 1.0),
            ("invalog_probe_nodes_answering", 0.0),
        ] {
            assert_eq!(line(&text, name), Some(value), "{name} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // A minute later both nodes are forgotten: no series, not expected.
        t.expire(t0 + 100 * every);
        t.sent(4, t0 + 100 * every);
        t.expire(t0 + 110 * every);
        let text = t.render(t0 + 110 * every, every);
        assert!(!text.contains("web-"), "{text}");
        assert_eq!(line(&text, "invalog_probe_fleet_missed_total"), Some(1.0));
    }

    #[test]
    fn presence_adds_live_nodes_and_drops_stopped_ones() {
        let every = Duration::from_secs(1);
        let mut t = Tally::new(Duration::from_secs(5), Duration::from_secs(60), &[]);
        let t0 = Instant::now();
        t.sent(0, t0);
        t.answered(0, "web-1", t0 + Duration::from_millis(3));
        // web-2 reports itself live but never answers; web-1 stops cleanly
        // with canary 1 in flight.
        t.presence(t0, vec!["web-2".into()], &[]);
        t.sent(1, t0 + every);
        t.expire(t0 + 10 * every);
        assert_eq!(t.pending(), 2, "judged only after a presence read");
        t.presence(t0 + 9 * every, vec!["web-2".into()], &["web-1".into()]);
        t.expire(t0 + 10 * every);
        let text = t.render(t0 + 10 * every, every);
        assert!(!text.contains("web-1"), "{text}");
        assert_eq!(
            line(&text, "invalog_probe_missed_total{node=\"web-2\"}"),
            Some(1.0),
            "{text}"
        );
        // Still live a long while later: still expected, not forgotten;
        // judged without a new presence read after the grace.
        t.sent(2, t0 + 100 * every);
        t.expire(t0 + 110 * every);
        assert_eq!(t.pending(), 1);
        t.expire(t0 + 121 * every);
        let text = t.render(t0 + 110 * every, every);
        assert_eq!(
            line(&text, "invalog_probe_missed_total{node=\"web-2\"}"),
            Some(2.0)
        );
    }
}
