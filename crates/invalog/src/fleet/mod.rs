//! The fleet view behind `invalog status`: the log's stream (sequences,
//! size, age of its oldest message, replicas and their health on a cluster)
//! and every node's position as it reported it to the presence bucket
//! (`crate::presence`), with its lag measured against the stream's current
//! last sequence and a `stale` flag for nodes that stopped reporting.
//!
//! [`FleetStatus::healthy`] is what monitoring asks: every node that has not
//! said it stopped is ready and has reported recently, and every entry of the
//! bucket is readable. [`explain`](mod@explain) answers "why is this entry
//! stale?" from the log's history and every node's position.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;

pub mod explain;

use crate::presence::{self, NodeReport, PresenceError, Unreadable, STOPPED};
use crate::stream::LogSettings;

/// The stream, and every node's position.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetStatus {
    /// When it was read (this machine's clock).
    pub checked_at: SystemTime,
    /// The staleness limit it was judged with.
    pub stale_after: Duration,
    /// The log's stream.
    pub stream: StreamSummary,
    /// One entry per node that reported, sorted by node id.
    pub nodes: Vec<NodeStatus>,
    /// Entries of the presence bucket that are not readable reports.
    pub unreadable: Vec<Unreadable>,
}

impl FleetStatus {
    /// True when every node is healthy (see [`NodeStatus::healthy`]) and
    /// every entry of the bucket was readable.
    pub fn healthy(&self) -> bool {
        self.unreadable.is_empty() && self.nodes.iter().all(NodeStatus::healthy)
    }
}

/// The stream, from its info.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummary {
    /// Its name.
    pub name: String,
    /// First sequence retained.
    pub first_sequence: u64,
    /// Last sequence written.
    pub last_sequence: u64,
    /// Messages retained.
    pub messages: u64,
    /// Bytes retained.
    pub bytes: u64,
    /// When the oldest retained message was written (`None` when empty).
    pub oldest_at: Option<SystemTime>,
    /// Its age at `checked_at`.
    pub oldest_age: Option<Duration>,
    /// Configured replicas.
    pub replicas: usize,
    /// The RAFT group, when the server reports one.
    pub cluster: Option<ClusterSummary>,
    /// When this incarnation of the stream was created.
    pub created: SystemTime,
}

/// The stream's RAFT group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSummary {
    /// The NATS cluster's name.
    pub name: Option<String>,
    /// The server leading the stream.
    pub leader: Option<String>,
    /// Every server holding a copy: the leader first, then the others as
    /// the leader sees them.
    pub replicas: Vec<ReplicaSummary>,
}

/// One server holding a copy of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSummary {
    /// The server's name.
    pub name: String,
    /// True for the leader.
    pub leader: bool,
    /// Up to date with the leader.
    pub current: bool,
    /// Considered offline by the group.
    pub offline: bool,
    /// Time since the leader last heard from it (zero for the leader).
    pub active: Duration,
    /// Operations it is behind the leader.
    pub lag: u64,
}

impl ReplicaSummary {
    /// Current and online.
    pub fn healthy(&self) -> bool {
        self.current && !self.offline
    }
}

/// One node, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// What the node reported.
    pub report: NodeReport,
    /// True when its last report is older than `stale_after` (and it did
    /// not say it stopped): the node or its reporter is gone or cut off.
    pub stale: bool,
    /// Messages between what it applied and the stream's last sequence now.
    pub lag: u64,
    /// Time since its last report.
    pub seen_ago: Duration,
    /// True when the node reported a position in another incarnation of
    /// the stream than the current one (it has not moved to the stream
    /// created again yet): nothing of the current one counts as applied.
    pub other_incarnation: bool,
}

impl NodeStatus {
    /// True when the node stopped cleanly.
    pub fn stopped(&self) -> bool {
        self.report.state == STOPPED
    }

    /// Ready, not stale, on the current stream and the only process with
    /// its id; a node that stopped cleanly counts as healthy (it left on
    /// purpose; a node that vanishes becomes stale instead).
    pub fn healthy(&self) -> bool {
        self.stopped()
            || (self.report.ready
                && !self.stale
                && !self.other_incarnation
                && self.report.duplicate.is_none())
    }

    /// What the node applied of the current stream (0 when it reported a
    /// position in another incarnation).
    pub fn applied(&self) -> u64 {
        if self.other_incarnation {
            0
        } else {
            self.report.applied
        }
    }

    /// Judges a report at `now` against the stream's `last_sequence` in the
    /// incarnation created at `stream_created`.
    pub fn judge(
        report: NodeReport,
        last_sequence: u64,
        stream_created: SystemTime,
        now: SystemTime,
        stale_after: Duration,
    ) -> Self {
        let seen_ago = now
            .duration_since(report.last_seen)
            .unwrap_or(Duration::ZERO);
        let stale = report.state != STOPPED && seen_ago > stale_after;
        let other_incarnation = report
            .stream_created
            .is_some_and(|created| created != stream_created);
        let mut status = NodeStatus {
            lag: 0,
            stale,
            seen_ago,
            other_incarnation,
            report,
        };
        status.lag = last_sequence.saturating_sub(status.applied());
        status
    }
}

/// Why the fleet could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The stream could not be read.
    #[error("stream `{stream}`: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// What failed.
        message: String,
    },
    /// The presence bucket could not be read.
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// Reads the stream's info and every node's report from `bucket`, and
/// judges each node: stale when its last report is older than
/// `stale_after`, lag against the stream's last sequence.
pub async fn fleet_status(
    js: &jetstream::Context,
    log: &LogSettings,
    bucket: &str,
    stale_after: Duration,
) -> Result<FleetStatus, FleetError> {
    let stream_err = |message: String| FleetError::Stream {
        stream: log.stream.clone(),
        message,
    };
    let mut stream = js
        .get_stream(&log.stream)
        .await
        .map_err(|e| stream_err(format!("cannot open it: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| stream_err(format!("cannot read its info: {e}")))?
        .clone();
    let reports = presence::read_reports(js, bucket, &log.stream).await?;
    let now = SystemTime::now();
    let stream = summarize(&log.stream, &info, now);
    let nodes = reports
        .reports
        .into_iter()
        .map(|r| NodeStatus::judge(r, stream.last_sequence, stream.created, now, stale_after))
        .collect();
    Ok(FleetStatus {
        checked_at: now,
        stale_after,
        stream,
        nodes,
        unreadable: reports.unreadable,
    })
}

fn summarize(name: &str, info: &jetstream::stream::Info, now: SystemTime) -> StreamSummary {
    let state = &info.state;
    let oldest_at: Option<SystemTime> = (state.messages > 0).then(|| state.first_timestamp.into());
    StreamSummary {
        created: info.created.into(),
        name: name.to_owned(),
        first_sequence: state.first_sequence,
        last_sequence: state.last_sequence,
        messages: state.messages,
        bytes: state.bytes,
        oldest_at,
        oldest_age: oldest_at.map(|at| now.duration_since(at).unwrap_or(Duration::ZERO)),
        replicas: info.config.num_replicas.max(1),
        cluster: info.cluster.as_ref().map(|c| {
            let leader = c.leader.iter().map(|name| ReplicaSummary {
                name: name.clone(),
                leader: true,
                current: true,
                offline: false,
                active: Duration::ZERO,
                lag: 0,
            });
            let others = c.replicas.iter().map(|p| ReplicaSummary {
                name: p.name.clone(),
                leader: false,
                current: p.current,
                offline: p.offline,
                active: p.active,
                lag: p.lag.unwrap_or(0),
            });
            ClusterSummary {
                name: c.name.clone(),
                leader: c.leader.clone(),
                replicas: leader.chain(others).collect(),
            }
        }),
    }
}
