//! What a node reports about itself besides its position (`position`): its
//! [`NodeState`] and counters ([`Stats`]) that the agent's metrics
//! and `invalog status` read. Counters are atomics: the apply loop writes
//! them without locks and anyone may read a [`StatsSnapshot`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use crate::model::RefresherName;

/// Why a node did (or does) a cold boot: a refresh-all of every refresher.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColdBootReason {
    /// No stored sequence, and the `new_node` policy is `cold_boot`.
    NewNode,
    /// The stored sequence is older than what the stream retains.
    BehindRetention {
        /// The stored sequence.
        stored: u64,
        /// The first sequence the stream still has.
        first: u64,
    },
    /// More messages are pending than the configured threshold.
    OverThreshold {
        /// Messages pending.
        pending: u64,
        /// The threshold.
        threshold: u64,
    },
    /// The stream was deleted and created again since the sequence was stored.
    StreamRecreated,
    /// The stored sequence is past the stream's last sequence.
    StoredAheadOfStream {
        /// The stored sequence.
        stored: u64,
        /// The stream's last sequence.
        last: u64,
    },
    /// Messages vanished from the stream before this node applied them.
    Gap {
        /// The sequence expected next.
        expected: u64,
        /// The first sequence actually available.
        found: u64,
    },
}

impl fmt::Display for ColdBootReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NewNode => write!(f, "new node (no stored sequence)"),
            Self::BehindRetention { stored, first } => write!(
                f,
                "stored sequence {stored} is older than the stream's first sequence {first}"
            ),
            Self::OverThreshold { pending, threshold } => write!(
                f,
                "{pending} messages pending, over the cold-boot threshold of {threshold}"
            ),
            Self::StreamRecreated => write!(
                f,
                "the stream was created again since the sequence was stored"
            ),
            Self::StoredAheadOfStream { stored, last } => write!(
                f,
                "stored sequence {stored} is past the stream's last sequence {last}"
            ),
            Self::Gap { expected, found } => write!(
                f,
                "messages {expected}..{found} left the stream before they were applied"
            ),
        }
    }
}

/// Where a node is in its life. Only `Ready` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeState {
    /// Reading its stored sequence and the stream.
    Starting,
    /// Refreshing every refresher fully.
    ColdBooting {
        /// Why.
        reason: ColdBootReason,
    },
    /// A cold boot is due, but every cold-boot slot of the fleet is busy
    /// (`node.cold_boot.max_concurrent`): waiting for one before refreshing.
    WaitingForColdBootSlot {
        /// Why the cold boot.
        reason: ColdBootReason,
        /// Slots found taken by other nodes at the last try.
        busy: u32,
        /// This node's number of slots (K).
        slots: u32,
    },
    /// Replaying up to the last sequence seen at start.
    CatchingUp {
        /// The sequence to reach.
        target: u64,
    },
    /// Caught up; applying new messages as they come.
    Ready,
    /// A refresher keeps failing, even its refresh-all: the node does not
    /// advance and is not ready until it succeeds.
    Stalled {
        /// The refresher.
        refresher: RefresherName,
        /// The sequence it fails on (0 during a cold boot).
        sequence: u64,
        /// The last error.
        error: String,
    },
    /// Shut down (or its task ended).
    Stopped,
    /// The node's task panicked: it applies nothing more and is not ready
    /// until the process restarts it.
    Failed {
        /// The panic's message.
        error: String,
    },
}

impl fmt::Display for NodeState {
    /// Why the node is (not) ready, for `/readyz` and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeState::Starting => write!(f, "starting"),
            NodeState::ColdBooting { reason } => write!(f, "cold boot: {reason}"),
            NodeState::WaitingForColdBootSlot {
                reason,
                busy,
                slots,
            } => write!(
                f,
                "waiting for a cold-boot slot ({busy} of {slots} busy) before a cold boot: {reason}"
            ),
            NodeState::CatchingUp { target } => write!(f, "catching up to sequence {target}"),
            NodeState::Ready => write!(f, "ready"),
            NodeState::Stalled {
                refresher,
                sequence,
                error,
            } => write!(
                f,
                "stalled: refresher `{refresher}` keeps failing at sequence {sequence}: {error}"
            ),
            NodeState::Stopped => write!(f, "stopped"),
            NodeState::Failed { error } => {
                write!(f, "failed: the node's task panicked ({error}); restart it")
            }
        }
    }
}

/// Whether a node should serve, with the reason when it should not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Caught up, not stalled, not fenced.
    Ready,
    /// Not ready, and why.
    NotReady(String),
}

impl Readiness {
    /// True for `Ready`.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl NodeState {
    /// True only for `Ready`.
    pub fn is_ready(&self) -> bool {
        matches!(self, NodeState::Ready)
    }

    /// True once the node's task ended (`Stopped` or `Failed`).
    pub fn is_final(&self) -> bool {
        matches!(self, NodeState::Stopped | NodeState::Failed { .. })
    }

    /// A one-word name for metrics and status output.
    pub fn name(&self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::ColdBooting { .. } => "cold_booting",
            NodeState::WaitingForColdBootSlot { .. } => "waiting_for_slot",
            NodeState::CatchingUp { .. } => "catching_up",
            NodeState::Ready => "ready",
            NodeState::Stalled { .. } => "stalled",
            NodeState::Stopped => "stopped",
            NodeState::Failed { .. } => "failed",
        }
    }
}

/// Counters for one refresher.
#[derive(Debug, Default)]
pub struct RefresherCounters {
    /// Messages applied.
    pub messages: AtomicU64,
    /// Units (ids, keys, payloads) applied.
    pub units: AtomicU64,
    /// Escalations to refresh-all.
    pub escalations: AtomicU64,
    /// Messages superseded while catching up.
    pub superseded: AtomicU64,
}

/// Upper bounds (seconds) of the apply-latency histogram's buckets.
pub const APPLY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram of apply latency, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Count per bucket of [`APPLY_BUCKETS`] (not cumulative), then +Inf.
    buckets: [AtomicU64; APPLY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = APPLY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(APPLY_BUCKETS.len());
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Cumulative counts per bucket bound (Prometheus style), the total
    /// count and the sum in seconds.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(APPLY_BUCKETS.len());
        let mut running = 0;
        for (i, bound) in APPLY_BUCKETS.iter().enumerate() {
            running += self.buckets[i].load(Relaxed);
            cumulative.push((*bound, running));
        }
        running += self.buckets[APPLY_BUCKETS.len()].load(Relaxed);
        HistogramSnapshot {
            buckets: cumulative,
            count: running,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// Copy of a histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of observations in seconds.
    pub sum_seconds: f64,
}

/// A node's counters. Written by the apply loop, read by anyone.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) applied_messages: AtomicU64,
    pub(crate) applied_units: AtomicU64,
    pub(crate) unhosted_messages: AtomicU64,
    pub(crate) own_messages_skipped: AtomicU64,
    pub(crate) probe_messages: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) escalations: AtomicU64,
    pub(crate) cold_boots: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) checkpoint_errors: AtomicU64,
    pub(crate) consumer_restarts: AtomicU64,
    pub(crate) direct_reads: AtomicU64,
    pub(crate) last_applied_published_ms: AtomicU64,
    pub(crate) apply_latency: LatencyHistogram,
    /// Unix millis of the last successful contact with the stream.
    pub(crate) last_contact_ms: AtomicU64,
    pub(crate) per_refresher: BTreeMap<RefresherName, RefresherCounters>,
    pub(crate) probe_canaries_refused: AtomicU64,
    pub(crate) escalations_coalesced: AtomicU64,
    pub(crate) superseded: AtomicU64,
}

impl Stats {
    pub(crate) fn new(refreshers: impl IntoIterator<Item = RefresherName>) -> Self {
        Self {
            per_refresher: refreshers
                .into_iter()
                .map(|name| (name, RefresherCounters::default()))
                .collect(),
            ..Self::default()
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let published_ms = self.last_applied_published_ms.load(Relaxed);
        StatsSnapshot {
            applied_messages: self.applied_messages.load(Relaxed),
            applied_units: self.applied_units.load(Relaxed),
            unhosted_messages: self.unhosted_messages.load(Relaxed),
            own_messages_skipped: self.own_messages_skipped.load(Relaxed),
            probe_messages: self.probe_messages.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            escalations: self.escalations.load(Relaxed),
            cold_boots: self.cold_boots.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            checkpoint_errors: self.checkpoint_errors.load(Relaxed),
            consumer_restarts: self.consumer_restarts.load(Relaxed),
            direct_reads: self.direct_reads.load(Relaxed),
            last_applied_published_at: (published_ms > 0)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(published_ms)),
            apply_latency: self.apply_latency.snapshot(),
            per_refresher: self
                .per_refresher
                .iter()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        RefresherSnapshot {
                            messages: c.messages.load(Relaxed),
                            units: c.units.load(Relaxed),
                            escalations: c.escalations.load(Relaxed),
                            superseded: c.superseded.load(Relaxed),
                        },
                    )
                })
                .collect(),
            probe_canaries_refused: self.probe_canaries_refused.load(Relaxed),
            escalations_coalesced: self.escalations_coalesced.load(Relaxed),
            superseded: self.superseded.load(Relaxed),
        }
    }
}

/// Copy of one refresher's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefresherSnapshot {
    /// Messages applied.
    pub messages: u64,
    /// Units applied.
    pub units: u64,
    /// Escalations to refresh-all.
    pub escalations: u64,
    /// Messages superseded while catching up (not applied: a later
    /// refresh-all of this refresher covered them).
    pub superseded: u64,
}

/// Copy of a node's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Messages applied (including escalated ones).
    pub applied_messages: u64,
    /// Units applied.
    pub applied_units: u64,
    /// Messages for refreshers this node does not host (ignored).
    pub unhosted_messages: u64,
    /// Messages this node published and had already applied locally.
    pub own_messages_skipped: u64,
    /// Canaries of `invalog probe` answered.
    pub probe_messages: u64,
    /// Messages that could not be decoded.
    pub decode_errors: u64,
    /// Retries of a failing refresher.
    pub retries: u64,
    /// Escalations to refresh-all.
    pub escalations: u64,
    /// Cold boots (full refreshes of every refresher).
    pub cold_boots: u64,
    /// Gaps found (messages that left the stream unapplied).
    pub gaps: u64,
    /// Failed checkpoint writes.
    pub checkpoint_errors: u64,
    /// Times the consumer was created again (reconnects, errors).
    pub consumer_restarts: u64,
    /// Messages read without a consumer, while it could not be used.
    pub direct_reads: u64,
    /// When the last applied message was published.
    pub last_applied_published_at: Option<SystemTime>,
    /// Time spent applying each message.
    pub apply_latency: HistogramSnapshot,
    /// Per hosted refresher.
    pub per_refresher: BTreeMap<RefresherName, RefresherSnapshot>,
    /// Probe canaries not answered: a reply subject outside the canary's
    /// own run's reply namespace, or more canaries in one message than a
    /// node answers.
    pub probe_canaries_refused: u64,
    /// Escalations that needed no refresh-all of their own: an earlier
    /// escalation's refresh-all of the same refresher, with no message of
    /// it applied since, began after the message was stored.
    pub escalations_coalesced: u64,
    /// Messages not applied while catching up because a refresh-all of
    /// the same refresher followed them within the lookahead window
    /// ([`crate::node::NodeSettings::catch_up_lookahead`]); each is covered
    /// by that refresh-all, which is applied.
    pub superseded: u64,
}
