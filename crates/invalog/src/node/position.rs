//! The node's position: the one source of truth for where a node is — the
//! stream incarnation it follows, the sequence it applied and the one it
//! stored there, the stream's last sequence as the node last learnt it, the
//! sequence readiness waits for, and the state. The runner and the
//! checkpoint writer change it; every surface (`Node::readiness`,
//! `/readyz`, `/status`, `/metrics`, `/applied`, presence, and through
//! presence `invalog status` and `invalog explain`) reads one [`Position`]
//! copy and derives what it shows from it, so no two of them can disagree.
//!
//! Invariants (ARCHITECTURE.md):
//! - `stored <= applied`: the writer only stores what the runner applied,
//!   in the same incarnation; a new incarnation starts with nothing stored.
//! - `applied <= stream_last`: the stream's last sequence is raised to what
//!   was applied, never lowered below it.
//! - after a warm start `applied` is the stored sequence, not 0, and
//!   `stream_last` is the stream's last sequence read at start.

use std::time::SystemTime;

use tokio::sync::watch;

use super::status::NodeState;
use crate::token::{Incarnation, ReadToken, TokenCheck};

/// Where a node is; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream incarnation the node follows (its creation time).
    pub incarnation: Incarnation,
    /// Last sequence applied in that incarnation (0: none).
    pub applied: u64,
    /// Last sequence stored in the checkpoint for that incarnation (0: none).
    pub stored: u64,
    /// The stream's last sequence, as the node last read or learnt it.
    pub stream_last: u64,
    /// Readiness waits until `applied >= target` (the stream's last sequence
    /// read at start or at the last cold boot).
    pub target: u64,
    /// Where the node is in its life.
    pub state: NodeState,
}

impl Position {
    /// A node about to start on `incarnation`, having applied and stored
    /// `stored` there (0 when nothing is stored, or it belongs to another
    /// incarnation), with the stream's last sequence `stream_last`.
    pub(crate) fn starting(incarnation: Incarnation, stored: u64, stream_last: u64) -> Self {
        Self {
            incarnation,
            applied: stored,
            stored,
            stream_last: stream_last.max(stored),
            target: stream_last,
            state: NodeState::Starting,
        }
    }

    /// Messages the node knows of and has not applied.
    pub fn lag(&self) -> u64 {
        self.stream_last.saturating_sub(self.applied)
    }

    /// The token of the last message applied (`None` before the first).
    pub fn token(&self) -> Option<ReadToken> {
        (self.applied > 0).then_some(ReadToken {
            sequence: self.applied,
            incarnation: self.incarnation,
        })
    }

    /// What this position says about `token`.
    pub fn check(&self, token: &ReadToken) -> TokenCheck {
        TokenCheck::of(token, self.incarnation, self.applied)
    }

    /// When the incarnation was created.
    pub fn stream_created(&self) -> SystemTime {
        self.incarnation.created()
    }
}

/// Changes to the shared position, made only by the node's own tasks.
pub(crate) trait PositionExt {
    /// Records `sequence` as applied (raising `stream_last` with it); wakes
    /// waiters only when somebody waits and `wake` is set (a catch-up wakes
    /// them every so many messages, not on each: see `Runner::advance_to`).
    fn applied(&self, sequence: u64, stream_last: u64, wake: bool);
    /// Wakes waiters to read what changed without waking them.
    fn wake(&self);
    /// Raises the stream's last sequence.
    fn saw_stream_last(&self, last: u64);
    /// Records `sequence` as stored, if it belongs to `incarnation`.
    fn stored(&self, incarnation: Incarnation, sequence: u64);
    /// Sets the state (notifying when it changed).
    fn set_state(&self, state: NodeState);
}

impl PositionExt for watch::Sender<Position> {
    fn applied(&self, sequence: u64, stream_last: u64, wake: bool) {
        // Waking receivers costs a lock per notifier shard even when nobody
        // waits; a receiver that subscribes later sees the value anyway.
        self.send_if_modified(|p| {
            p.applied = sequence;
            p.stream_last = p.stream_last.max(stream_last).max(sequence);
            wake && self.receiver_count() > 0
        });
    }

    fn wake(&self) {
        self.send_if_modified(|_| self.receiver_count() > 0);
    }

    fn saw_stream_last(&self, last: u64) {
        self.send_if_modified(|p| {
            let raised = last > p.stream_last;
            p.stream_last = p.stream_last.max(last);
            raised && self.receiver_count() > 0
        });
    }

    fn stored(&self, incarnation: Incarnation, sequence: u64) {
        self.send_if_modified(|p| {
            if p.incarnation != incarnation {
                return false;
            }
            p.stored = sequence.min(p.applied);
            self.receiver_count() > 0
        });
    }

    fn set_state(&self, state: NodeState) {
        self.send_if_modified(|p| {
            if p.state == state {
                return false;
            }
            p.state = state;
            true
        });
    }
}
