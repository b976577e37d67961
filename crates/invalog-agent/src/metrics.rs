//! The agent's `/metrics`: one [`Scrape`] of the node's counters
//! ([`Node::stats`]), its readiness and state, and the NATS client's
//! statistics, rendered in the OpenMetrics text format by `prometheus-client`
//! (a registry built per scrape around a collector; nothing is kept between
//! scrapes, so the node's atomics stay the single source of truth).
//!
//! Names (documented with types and labels in `docs/http-api.md`):
//! counters `invalog_messages_applied_total{refresher}`,
//! `invalog_instructions_applied_total{refresher}`,
//! `invalog_escalations_total{refresher}`,
//! `invalog_superseded_total{refresher}`, `invalog_decode_errors_total`,
//! `invalog_unhosted_messages_total`, `invalog_own_messages_skipped_total`,
//! `invalog_retries_total`, `invalog_cold_boots_total`, `invalog_gaps_total`,
//! `invalog_checkpoint_errors_total`, `invalog_consumer_restarts_total`,
//! `invalog_direct_reads_total`, `invalog_escalations_coalesced_total`,
//! `invalog_probe_canaries_refused_total`,
//! `invalog_nats_reconnects_total`, `invalog_nats_{received,sent}_bytes_total`,
//! `invalog_nats_{received,sent}_messages_total`; gauges
//! `invalog_applied_sequence`, `invalog_stored_sequence`,
//! `invalog_stream_last_sequence`, `invalog_lag_messages`,
//! `invalog_lag_seconds`, `invalog_ready`, `invalog_state{state}`,
//! `invalog_nats_connected`; the histogram `invalog_apply_duration_seconds`;
//! the info metric `invalog_build_info{version}`.

use std::fmt;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use invalog::node::{HistogramSnapshot, RefresherSnapshot, Snapshot};
use invalog::Node;

/// The `Content-Type` of [`Scrape::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every value of `invalog_state{state}`; the current state is 1, the
/// others 0.
pub const STATES: [&str; 8] = [
    "starting",
    "waiting_for_slot",
    "cold_booting",
    "catching_up",
    "ready",
    "stalled",
    "stopped",
    "failed",
];

/// The NATS client's side of a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsSample {
    /// Connections established, the first one included.
    pub connects: u64,
    /// Connected right now.
    pub connected: bool,
    /// Payload bytes received.
    pub received_bytes: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Messages received.
    pub received_messages: u64,
    /// Messages sent.
    pub sent_messages: u64,
}

impl NatsSample {
    /// Reads a client's statistics and connection state.
    pub fn of(client: &async_nats::Client) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = client.statistics();
        Self {
            connects: stats.connects.load(Relaxed),
            connected: client.connection_state() == async_nats::connection::State::Connected,
            received_bytes: stats.in_bytes.load(Relaxed),
            sent_bytes: stats.out_bytes.load(Relaxed),
            received_messages: stats.in_messages.load(Relaxed),
            sent_messages: stats.out_messages.load(Relaxed),
        }
    }

    /// Reconnects: connections after the first.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }
}

/// Everything one scrape reports, read at one moment.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The node's position, readiness and counters.
    pub node: Snapshot,
    /// The NATS client.
    pub nats: NatsSample,
    /// When the scrape was taken (for the lag in seconds).
    pub at: SystemTime,
    /// The agent's version.
    pub version: &'static str,
}

impl Scrape {
    /// Reads a node and its NATS client now.
    pub fn take(node: &Node, client: &async_nats::Client, version: &'static str) -> Self {
        Self {
            node: node.snapshot(),
            nats: NatsSample::of(client),
            at: SystemTime::now(),
            version,
        }
    }

    /// See [`lag_seconds`].
    pub fn lag_seconds(&self) -> f64 {
        lag_seconds(&self.node, self.at)
    }

    /// The OpenMetrics text (ending in `# EOF`), served as [`CONTENT_TYPE`].
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// How old the last applied message is while messages wait: `at` minus its
/// publish time when the lag is above 0, else 0 (also 0 when nothing was
/// applied yet; the lag in messages tells then).
pub fn lag_seconds(node: &Snapshot, at: SystemTime) -> f64 {
    match node.stats.last_applied_published_at {
        Some(published) if node.position.lag() > 0 => at
            .duration_since(published)
            .map_or(0.0, |d| d.as_secs_f64()),
        _ => 0.0,
    }
}

/// Per-refresher counters (`{refresher}`): name without `_total`, help.
const PER_REFRESHER: [(&str, &str); 4] = [
    ("invalog_messages_applied", "Messages (batches) applied."),
    (
        "invalog_instructions_applied",
        "Instruction units (ids, keys, payloads…) applied.",
    ),
    ("invalog_escalations", "Escalations to refresh-all."),
    (
        "invalog_superseded",
        "Messages not applied while catching up: a later refresh-all of the refresher covered them.",
    ),
];

/// Node-wide and NATS counters: name without `_total`, help.
const COUNTERS: [(&str, &str); 16] = [
    (
        "invalog_decode_errors",
        "Messages that could not be decoded.",
    ),
    (
        "invalog_unhosted_messages",
        "Messages for refreshers not hosted here (ignored).",
    ),
    (
        "invalog_own_messages_skipped",
        "Own messages already applied locally.",
    ),
    ("invalog_retries", "Retries of a failing refresher."),
    (
        "invalog_cold_boots",
        "Cold boots (refresh-all of every refresher).",
    ),
    (
        "invalog_gaps",
        "Gaps: messages that left the stream unapplied.",
    ),
    (
        "invalog_checkpoint_errors",
        "Failed writes of the stored sequence.",
    ),
    (
        "invalog_consumer_restarts",
        "Times the stream consumer was created again.",
    ),
    (
        "invalog_direct_reads",
        "Messages read without a consumer while it could not be used.",
    ),
    (
        "invalog_escalations_coalesced",
        "Escalations covered by an earlier refresh-all of the same refresher.",
    ),
    (
        "invalog_probe_canaries_refused",
        "Probe canaries not answered (reply subject refused, or over the cap).",
    ),
    ("invalog_nats_reconnects", "Reconnections to NATS."),
    (
        "invalog_nats_received_bytes",
        "Payload bytes received from NATS.",
    ),
    ("invalog_nats_sent_bytes", "Payload bytes sent to NATS."),
    (
        "invalog_nats_received_messages",
        "Messages received from NATS.",
    ),
    ("invalog_nats_sent_messages", "Messages sent to NATS."),
];

/// The metrics of an agent still connecting to NATS at start (see
/// `super::starting`): `invalog_ready` and `invalog_nats_connected`, both 0.
pub(super) fn not_connected() -> String {
    let mut text = String::new();
    for (name, help) in GAUGES {
        if matches!(name, "invalog_ready" | "invalog_nats_connected") {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} 0\n"
            ));
        }
    }
    text + "# EOF\n"
}

/// Integer gauges: name, help.
const GAUGES: [(&str, &str); 7] = [
    ("invalog_applied_sequence", "Last stream sequence applied."),
    (
        "invalog_stored_sequence",
        "Last stream sequence stored (file or KV).",
    ),
    (
        "invalog_stream_last_sequence",
        "Last sequence the node knows the stream has.",
    ),
    (
        "invalog_lag_messages",
        "Messages in the stream not yet applied.",
    ),
    (
        "invalog_ready",
        "1 when ready (caught up, not stalled, not fenced).",
    ),
    ("invalog_nats_connected", "1 while connected to NATS."),
    (
        "invalog_duplicate_node_id",
        "1 once another process was seen using this node id.",
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let (s, n) = (&self.node.stats, &self.nats);
        let per: [fn(&RefresherSnapshot) -> u64; PER_REFRESHER.len()] = [
            |c| c.messages,
            |c| c.units,
            |c| c.escalations,
            |c| c.superseded,
        ];
        for ((name, help), value) in PER_REFRESHER.into_iter().zip(per) {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (refresher, counters) in &s.per_refresher {
                let labels = [("refresher", refresher.as_str())];
                ConstCounter::new(value(counters)).encode(m.encode_family(&labels)?)?;
            }
        }
        let counters: [u64; COUNTERS.len()] = [
            s.decode_errors,
            s.unhosted_messages,
            s.own_messages_skipped,
            s.retries,
            s.cold_boots,
            s.gaps,
            s.checkpoint_errors,
            s.consumer_restarts,
            s.direct_reads,
            s.escalations_coalesced,
            s.probe_canaries_refused,
            n.reconnects(),
            n.received_bytes,
            n.sent_bytes,
            n.received_messages,
            n.sent_messages,
        ];
        for ((name, help), value) in COUNTERS.into_iter().zip(counters) {
            let metric = ConstCounter::new(value);
            metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let p = &self.node.position;
        let gauges: [u64; GAUGES.len()] = [
            p.applied,
            p.stored,
            p.stream_last,
            p.lag(),
            u64::from(self.node.readiness.is_ready()),
            u64::from(n.connected),
            u64::from(self.node.duplicate.is_some()),
        ];
        for ((name, help), value) in GAUGES.into_iter().zip(gauges) {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let lag = ConstGauge::new(self.lag_seconds());
        let help = "Age of the last applied message while messages wait, else 0.";
        let unit = Some(&Unit::Seconds);
        lag.encode(e.encode_descriptor("invalog_lag", help, unit, lag.metric_type())?)?;
        let help = "1 for the node's current state, 0 for the others.";
        let mut m = e.encode_descriptor("invalog_state", help, None, MetricType::Gauge)?;
        let now = p.state.name();
        let current = (!STATES.contains(&now)).then_some(now);
        for state in STATES.into_iter().chain(current) {
            let labels = [("state", state)];
            ConstGauge::new(i64::from(state == now)).encode(m.encode_family(&labels)?)?;
        }
        histogram(&mut e, &s.apply_latency)?;
        let help = "The agent's version.";
        let mut m = e.encode_descriptor("invalog_build", help, None, MetricType::Info)?;
        m.encode_info(&[("version", self.version)])
    }
}

/// `prometheus-client` wants per-bucket counts ending with an `f64::MAX`
/// (+Inf) bucket; the node keeps cumulative ones.
fn histogram(e: &mut DescriptorEncoder, h: &HistogramSnapshot) -> fmt::Result {
    let mut buckets = Vec::with_capacity(h.buckets.len() + 1);
    let mut previous = 0;
    for &(bound, cumulative) in &h.buckets {
        buckets.push((bound, cumulative.saturating_sub(previous)));
        previous = previous.max(cumulative);
    }
    buckets.push((f64::MAX, h.count.saturating_sub(previous)));
    let help = "Time spent applying one message (retries and escalation included).";
    let unit = Some(&Unit::Seconds);
    let name = "invalog_apply_duration";
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use invalog::model::RefresherName;
    use invalog::node::{NodeState, Position, Readiness, StatsSnapshot};
    use invalog::token::Incarnation;

    fn scrape() -> Scrape {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut stats = StatsSnapshot {
            decode_errors: 1,
            escalations_coalesced: 4,
            probe_canaries_refused: 5,
            last_applied_published_at: Some(at - Duration::from_millis(1500)),
            apply_latency: HistogramSnapshot {
                buckets: vec![(0.001, 2), (0.01, 5), (0.1, 5)],
                count: 6,
                sum_seconds: 1.25,
            },
            ..StatsSnapshot::default()
        };
        stats.per_refresher.insert(
            RefresherName::new("content").unwrap(),
            RefresherSnapshot {
                messages: 3,
                units: 7,
                escalations: 1,
                superseded: 6,
            },
        );
        let position = Position {
            incarnation: Incarnation::new(at),
            applied: 40,
            stored: 38,
            stream_last: 42,
            target: 42,
            state: NodeState::CatchingUp { target: 42 },
        };
        Scrape {
            node: Snapshot {
                position,
                readiness: Readiness::NotReady("catching up".into()),
                stats,
                duplicate: None,
            },
            nats: NatsSample {
                connects: 3,
                connected: true,
                ..NatsSample::default()
            },
            at,
            version: "9.9.9",
        }
    }

    #[test]
    fn renders_every_family_in_openmetrics_text() {
        let text = scrape().render();
        for line in [
            "# TYPE invalog_messages_applied counter",
            "invalog_messages_applied_total{refresher=\"content\"} 3",
            "invalog_instructions_applied_total{refresher=\"content\"} 7",
            "invalog_escalations_total{refresher=\"content\"} 1",
            "# TYPE invalog_superseded counter",
            "invalog_superseded_total{refresher=\"content\"} 6",
            "invalog_decode_errors_total 1",
            "invalog_escalations_coalesced_total 4",
            "invalog_probe_canaries_refused_total 5",
            "invalog_nats_reconnects_total 2",
            "invalog_nats_connected 1",
            "invalog_applied_sequence 40",
            "invalog_stored_sequence 38",
            "invalog_stream_last_sequence 42",
            "invalog_lag_messages 2",
            "invalog_lag_seconds 1.5",
            "# UNIT invalog_lag_seconds seconds",
            "invalog_ready 0",
            "invalog_duplicate_node_id 0",
            "invalog_state{state=\"catching_up\"} 1",
            "invalog_state{state=\"ready\"} 0",
            "invalog_apply_duration_seconds_bucket{le=\"0.001\"} 2",
            "invalog_apply_duration_seconds_bucket{le=\"0.01\"} 5",
            "invalog_apply_duration_seconds_bucket{le=\"0.1\"} 5",
            "invalog_apply_duration_seconds_bucket{le=\"+Inf\"} 6",
            "invalog_apply_duration_seconds_count 6",
            "invalog_apply_duration_seconds_sum 1.25",
            "invalog_build_info{version=\"9.9.9\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn lag_seconds_is_zero_when_caught_up() {
        let mut s = scrape();
        s.node.position.applied = 42;
        assert_eq!(s.lag_seconds(), 0.0);
        s.node.position.applied = 37;
        s.node.stats.last_applied_published_at = None;
        assert_eq!(s.lag_seconds(), 0.0);
    }

    #[test]
    fn a_failed_node_reports_the_failed_state() {
        let mut s = scrape();
        s.node.position.state = NodeState::Failed {
            error: "boom".into(),
        };
        assert!(s.render().contains("invalog_state{state=\"failed\"} 1\n"));
    }
}
