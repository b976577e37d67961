//! Catching up through a window. While the node is not ready, what the
//! consumer delivers waits in a sliding window, decoded once on the way
//! in: the message at its head is applied once
//! [`crate::node::NodeSettings::catch_up_lookahead`] messages follow it
//! there (at least [`GROUP_WINDOW`] when a hosted refresher takes groups),
//! when the consumer says nothing more is pending, or when it has been
//! quiet for [`WINDOW_WAIT`]. Every delivered message takes a slot. At the
//! head:
//!
//! - a message of a hosted refresher that a refresh-all of the same
//!   refresher follows in the window is *superseded* (`supersede`): not
//!   applied, counted, and the stored sequence stays below it until that
//!   refresh-all is applied (`cursor`);
//! - a run of messages of a refresher that takes groups goes to
//!   [`crate::Refresher::apply_group`] (`group`);
//! - anything else goes through the one-message path (`run`).
//!
//! A ready node has no window: a delivered message is applied at once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::group::Member;
use super::pull::Delivery;
use super::run::{Flow, Runner, Stored};
use super::status::Stats;
use crate::model::Batch;
use crate::refresher::Hosted;
use crate::supersede::{refreshes_all, Lookahead};
use crate::wire;

/// The smallest window while some refresher takes groups: the most
/// messages one group can gather.
pub(super) const GROUP_WINDOW: usize = 1000;

/// How long the window waits for the consumer before applying what it
/// holds although it is not full.
pub(super) const WINDOW_WAIT: Duration = Duration::from_millis(100);

/// A delivered message waiting in the window.
struct Held {
    delivery: Delivery,
    decoded: Result<Batch, wire::DecodeError>,
}

/// The window (owned by the runner; emptied whenever the consumer ends).
#[derive(Default)]
pub(super) struct Window {
    held: VecDeque<Held>,
    lookahead: Lookahead,
    /// Messages that follow the head before it is applied (0: no window).
    ahead: usize,
    /// Whether superseding is on (`catch_up_lookahead` > 0).
    supersedes: bool,
}

impl Window {
    /// A window for `lookahead` (0: no superseding), at least
    /// [`GROUP_WINDOW`] when `groups`.
    pub(super) fn new(lookahead: usize, groups: bool) -> Self {
        let floor = if groups { GROUP_WINDOW } else { 0 };
        Self {
            held: VecDeque::new(),
            lookahead: Lookahead::default(),
            ahead: lookahead.max(floor),
            supersedes: lookahead > 0,
        }
    }

    /// True when the head has the messages it waits for behind it.
    fn full(&self) -> bool {
        self.held.len() > self.ahead
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Forgets what it holds (the consumer that delivered it ended; the
    /// next one delivers it again).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.lookahead.clear();
    }
}

impl Runner {
    /// Takes a delivered message: applied at once by a ready node (or one
    /// without a window), else held in the window, whose head is applied
    /// when it is full or nothing more is pending.
    pub(super) async fn on_delivered(&mut self, delivery: Delivery) -> Flow {
        if self.window.is_empty() && (self.cursor.caught_up() || self.window.ahead == 0) {
            return self.on_message(&delivery).await;
        }
        if let Some(flow) = self.verify_consumer().await {
            self.window.clear();
            return flow;
        }
        let pending = delivery.pending;
        self.liveness.delivered_with(pending);
        let decoded = wire::decode_on_subject(&delivery.message.subject, &delivery.message.payload);
        // Only a refresh-all the node applies covers anything: the registry
        // is looked up for those alone, not for every message.
        if let Ok(batch) = &decoded {
            if self.window.supersedes && refreshes_all(batch) {
                let applies = self.registry.get(batch.refresher.name.as_str()).is_some()
                    && !self.own_applied(batch);
                self.window
                    .lookahead
                    .entered(delivery.stream_sequence, batch, applies);
            }
        }
        self.window.held.push_back(Held { delivery, decoded });
        if pending == 0 {
            self.apply_window(true).await
        } else if self.window.full() {
            self.apply_window(false).await
        } else {
            Flow::Continue
        }
    }

    /// Applies the window's head while it is full, or everything (`all`).
    pub(super) async fn apply_window(&mut self, all: bool) -> Flow {
        while all || self.window.full() {
            let Some(head) = self.window.held.pop_front() else {
                break;
            };
            let flow = self.apply_head(head).await;
            if !matches!(flow, Flow::Continue) {
                self.window.clear();
                return flow;
            }
        }
        Flow::Continue
    }

    /// Applies the window's head: superseded, in a group, or alone.
    async fn apply_head(&mut self, head: Held) -> Flow {
        let sequence = head.delivery.stream_sequence;
        let on_path = sequence == self.cursor.next() && !self.cursor.caught_up();
        let registry = Arc::clone(&self.registry);
        let hosted = match &head.decoded {
            Ok(batch) if on_path && !self.own_applied(batch) => {
                registry.get(batch.refresher.name.as_str())
            }
            _ => None,
        };
        let Some(hosted) = hosted else {
            return self.apply_alone(head).await;
        };
        // Nothing entered the lookahead when superseding is off.
        if let Some(cover) = self.window.lookahead.superseded(sequence, &hosted.def.name) {
            self.supersede(hosted, head, cover);
            return Flow::Continue;
        }
        if hosted.handler.max_group() < 2 {
            return self.apply_alone(head).await;
        }
        let mut group = vec![member(head)];
        while group.len() < hosted.handler.max_group() {
            let Some(next) = self.window.held.front() else {
                break;
            };
            let joins = next.delivery.stream_sequence == sequence + group.len() as u64
                && matches!(&next.decoded, Ok(b) if b.refresher.name == hosted.def.name && !self.own_applied(b))
                && self
                    .window
                    .lookahead
                    .superseded(next.delivery.stream_sequence, &hosted.def.name)
                    .is_none();
            if !joins {
                break;
            }
            let next = self.window.held.pop_front().expect("a front");
            group.push(member(next));
        }
        self.apply_members(hosted, group).await
    }

    /// The one-message path, with the batch already decoded.
    async fn apply_alone(&mut self, head: Held) -> Flow {
        let Held { delivery, decoded } = head;
        let stored = Stored {
            sequence: delivery.stream_sequence,
            subject: &delivery.message.subject,
            payload: &delivery.message.payload,
            published: delivery.published,
        };
        self.on_stored_decoded(stored, delivery.pending, Some(decoded))
            .await
    }

    /// Skips a message a later refresh-all (at `cover`) of its refresher
    /// covers: counted, recorded for the stale-fill guard, and the stored
    /// sequence held below it until `cover` is applied.
    fn supersede(&mut self, hosted: &Hosted, head: Held, cover: u64) {
        let sequence = head.delivery.stream_sequence;
        if let (Some(guard), Ok(batch)) = (&self.shared.fill, &head.decoded) {
            guard.record(sequence, &hosted.def.name, &batch.instructions);
        }
        let stats = self.stats();
        Stats::bump(&stats.superseded);
        if let Some(counters) = stats.per_refresher.get(&hosted.def.name) {
            counters.superseded.fetch_add(1, Relaxed);
        }
        tracing::debug!(node = %self.settings.node_id, sequence, cover, refresher = %hosted.def.name, "superseded by a later refresh_all");
        self.cursor.hold(sequence, cover);
        self.liveness.delivered();
        self.advance_to(sequence, sequence.saturating_add(head.delivery.pending));
    }

    /// True for this node's own message, already applied where it was
    /// published.
    pub(super) fn own_applied(&self, batch: &Batch) -> bool {
        batch.applied_at_origin && batch.origin == self.settings.node_id.as_str()
    }
}

fn member(held: Held) -> Member {
    let Held { delivery, decoded } = held;
    Member {
        sequence: delivery.stream_sequence,
        pending: delivery.pending,
        published: delivery.published,
        batch: decoded.expect("only decoded messages join a group"),
    }
}
