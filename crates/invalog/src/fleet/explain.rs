//! "Why is this page stale?": the last changes that touched one entry of one
//! refresher, and whether each node (or one node) has applied the newest of
//! them. The changes come from a history read filtered on the server by the
//! refresher's subject and matched here by [`Target`] (a `refresh_all` of
//! the refresher counts: it touches every entry); the nodes' positions come
//! from the presence bucket ([`crate::presence`]), judged by
//! [`NodeStatus::judge`].
//!
//! A position is what the node last *reported* (every few seconds), so a
//! node reported as behind may have caught up since; a node that applied a
//! sequence has applied it for good.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;

use super::NodeStatus;
use crate::history::{read, Entry, HistoryError, Limit, Query, Target, Touch};
use crate::model::RefresherName;
use crate::presence::{self, PresenceError};
use crate::stream::LogSettings;

/// What to explain.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The refresher that caches the entry.
    pub refresher: RefresherName,
    /// The entry.
    pub target: Target,
    /// One node, or every node that reports its presence.
    pub node: Option<String>,
    /// How many of the last changes to list.
    pub last: usize,
    /// The presence bucket.
    pub bucket: String,
    /// A report older than this marks its node stale.
    pub stale_after: Duration,
}

/// One change that touched the entry.
#[derive(Debug, Clone)]
pub struct Change {
    /// The message.
    pub entry: Entry,
    /// How it touched the entry.
    pub touch: Touch,
}

/// The answer.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The question.
    pub question: Question,
    /// The stream's first sequence: older changes left the log.
    pub first_sequence: u64,
    /// The stream's last sequence when the log was read.
    pub last_sequence: u64,
    /// The last changes that touched the entry, oldest first.
    pub changes: Vec<Change>,
    /// One answer per node, sorted by node id.
    pub nodes: Vec<NodeAnswer>,
    /// Why no node could be judged (no presence bucket), when none is asked
    /// for by name.
    pub no_presence: Option<String>,
}

impl Explanation {
    /// The sequence of the newest change, if any is in the log.
    pub fn newest(&self) -> Option<u64> {
        self.changes.last().map(|c| c.entry.sequence)
    }
}

/// One node's position against the newest change.
#[derive(Debug, Clone)]
pub struct NodeAnswer {
    /// The node as it reported, judged (lag, staleness).
    pub status: NodeStatus,
    /// The verdict.
    pub verdict: Verdict,
}

/// Whether a node has applied the newest change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It has: a stale entry there is not invalidation's fault.
    Applied {
        /// The newest change.
        newest: u64,
    },
    /// It has not yet.
    Behind {
        /// The newest change.
        newest: u64,
    },
    /// No change to the entry is in the log.
    NoChange,
    /// The node does not host the refresher.
    NotHosted,
}

impl Verdict {
    /// A stable name for output: `applied`, `behind`, `no_change`,
    /// `not_hosted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Applied { .. } => "applied",
            Verdict::Behind { .. } => "behind",
            Verdict::NoChange => "no_change",
            Verdict::NotHosted => "not_hosted",
        }
    }
}

impl NodeAnswer {
    /// One sentence for people, for example "web-2 has applied sequence
    /// 1234 (the last change to content 42): a stale page there is not
    /// invalidation's fault".
    pub fn sentence(&self, question: &Question) -> String {
        let node = &self.status.report.node;
        let applied = self.status.applied();
        let what = format!("{} {}", question.refresher, question.target);
        let mut s = match self.verdict {
            Verdict::Applied { newest } => format!(
                "{node} has applied sequence {newest} (the last change to {what}): a stale page there is not invalidation's fault"
            ),
            Verdict::Behind { newest } => format!(
                "{node} is at {applied}, behind {newest}: it has not applied the last change to {what} yet"
            ),
            Verdict::NoChange => format!(
                "{node} is at {applied}; no change to {what} is in the log"
            ),
            Verdict::NotHosted => {
                format!("{node} does not host refresher {}", question.refresher)
            }
        };
        if self.status.stopped() {
            s.push_str(" (it has stopped)");
        } else if self.status.stale {
            s.push_str(&format!(
                " (its last report is {}s old: it may be gone, or have moved on since)",
                self.status.seen_ago.as_secs()
            ));
        } else if !self.status.report.ready {
            s.push_str(" (not ready)");
        }
        s
    }
}

/// Why there is no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// The log could not be read.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The presence bucket could not be read.
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// The node asked for has not reported its presence.
    #[error("node `{node}` has not reported to the presence bucket (nodes that did: {known})")]
    UnknownNode {
        /// The node asked for.
        node: String,
        /// The nodes that did, comma-separated (or `none`).
        known: String,
    },
}

/// Reads the last changes that touched the entry and every node's position,
/// and judges each node against the newest change.
pub async fn explain(
    js: &jetstream::Context,
    log: &LogSettings,
    question: Question,
) -> Result<Explanation, ExplainError> {
    let query = Query {
        refreshers: vec![question.refresher.clone()],
        target: Some(question.target.clone()),
        limit: Limit::Last(question.last.max(1)),
        ..Query::default()
    };
    let mut reader = read(js, log, query).await?;
    let (first_sequence, last_sequence) = (reader.first_sequence(), reader.end_sequence());
    let stream_created = reader.stream_created();
    let mut changes = Vec::new();
    while let Some(entry) = reader.next().await? {
        if let Some(touch) = question.target.touches(&entry.batch) {
            changes.push(Change { entry, touch });
        }
    }
    let reports = match presence::read_all(js, &question.bucket, &log.stream).await {
        Ok(reports) => reports,
        Err(e @ PresenceError::NoBucket { .. }) if question.node.is_none() => {
            return Ok(Explanation {
                no_presence: Some(e.to_string()),
                question,
                first_sequence,
                last_sequence,
                changes,
                nodes: Vec::new(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let known = reports
        .iter()
        .map(|r| r.node.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let reports: Vec<_> = reports
        .into_iter()
        .filter(|r| question.node.as_ref().is_none_or(|n| &r.node == n))
        .collect();
    if let (Some(node), true) = (&question.node, reports.is_empty()) {
        return Err(ExplainError::UnknownNode {
            node: node.clone(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known
            },
        });
    }
    let newest = changes.last().map(|c| c.entry.sequence);
    let now = SystemTime::now();
    let nodes = reports
        .into_iter()
        .map(|report| {
            let hosts = report.refreshers.is_empty()
                || report
                    .refreshers
                    .iter()
                    .any(|r| r == question.refresher.as_str());
            let status = NodeStatus::judge(
                report,
                last_sequence,
                stream_created,
                now,
                question.stale_after,
            );
            let verdict = match newest {
                _ if !hosts => Verdict::NotHosted,
                None => Verdict::NoChange,
                Some(newest) if status.applied() >= newest => Verdict::Applied { newest },
                Some(newest) => Verdict::Behind { newest },
            };
            NodeAnswer { status, verdict }
        })
        .collect();
    Ok(Explanation {
        question,
        first_sequence,
        last_sequence,
        changes,
        nodes,
        no_presence: None,
    })
}
