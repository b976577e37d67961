//! The node's checks of the stream and of its consumer, and the cold boot
//! they can lead to: a recreated stream (its creation time changed) or a
//! gap (messages left before being applied) means a cold boot; a consumer
//! that stalled with messages pending is recreated; one that stays quiet
//! while messages wait has them read directly (`direct`) after a second and
//! is recreated after three. The stream is read at most every
//! `CHECK_INTERVAL`; the stall check uses only local state.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::position::PositionExt;
use super::run::{Flow, Runner};
use super::status::{now_ms, ColdBootReason, NodeState, Stats};
use crate::stream::StreamPosition;
use crate::token::Incarnation;

/// How long a consumer may deliver nothing while the stream holds messages
/// past `next` before it is recreated.
const QUIET_CONSUMER_LIMIT: Duration = Duration::from_secs(3);

/// How long a consumer may deliver nothing while messages wait before they
/// are read directly (the consumer is kept until [`QUIET_CONSUMER_LIMIT`]).
const DIRECT_READ_AFTER: Duration = Duration::from_secs(1);

/// How long a consumer that has delivered messages, and was told more are
/// pending, may then deliver nothing before it counts as stalled and is
/// recreated. A healthy server delivers the next one within microseconds;
/// async-nats 0.51's ordered consumer (the node's reader before issue 14)
/// was seen to stop in mid catch-up (no pull answered) until its heartbeat
/// check, seconds later.
const STALL_LIMIT: Duration = Duration::from_millis(500);

impl Runner {
    /// Whether the consumer stopped delivering although the server said
    /// more messages were pending (see [`STALL_LIMIT`]).
    pub(super) fn stalled(&self) -> bool {
        let (pending, quiet) = self.liveness.pending_and_quiet();
        match pending {
            Some(pending) if pending > 0 && quiet > STALL_LIMIT => {
                tracing::warn!(
                    node = %self.settings.node_id, next = self.cursor.next(), pending,
                    quiet_ms = quiet.as_millis() as u64,
                    "consumer stalled with messages pending; recreating it"
                );
                true
            }
            _ => false,
        }
    }

    /// How many times the client has connected (grows on every reconnect).
    pub(super) fn connects(&self) -> u64 {
        self.js.client().statistics().connects.load(Relaxed)
    }

    /// Reads the stream's first/last sequence and incarnation.
    pub(super) async fn position(&self) -> Result<StreamPosition, String> {
        // `get_stream` reads the stream's info: one request, not two.
        let stream = self
            .js
            .get_stream(&self.log.stream)
            .await
            .map_err(|e| format!("reading stream info: {e}"))?;
        let position = StreamPosition::of(stream.cached_info());
        if Incarnation::new(position.created) == self.cursor.incarnation() {
            self.shared.position.saw_stream_last(position.last);
        }
        self.stats().last_contact_ms.store(now_ms(), Relaxed);
        Ok(position)
    }

    /// Reads the stream and checks it is still the incarnation followed;
    /// `Some(flow)` when it is not (a cold boot ran) or cannot be read (the
    /// consumer is recreated): then nothing read meanwhile may be applied.
    pub(super) async fn verify_incarnation(&mut self) -> Option<Flow> {
        match self.position().await {
            Ok(position) => self.check_stream(position).await,
            Err(error) => {
                tracing::debug!(node = %self.settings.node_id, %error, "cannot check the stream's identity; not applying until it can be");
                Some(Flow::Restart)
            }
        }
    }

    /// Cold boots when the stream was recreated or lost messages not yet
    /// applied.
    pub(super) async fn check_stream(&mut self, position: StreamPosition) -> Option<Flow> {
        if Incarnation::new(position.created) != self.cursor.incarnation() {
            return Some(self.cold_boot(ColdBootReason::StreamRecreated).await);
        }
        let next = self.cursor.next();
        if position.first > next && position.last >= next {
            Stats::bump(&self.stats().gaps);
            let reason = ColdBootReason::Gap {
                expected: next,
                found: position.first,
            };
            return Some(self.cold_boot(reason).await);
        }
        None
    }

    pub(super) async fn on_tick(&mut self) -> Flow {
        self.liveness.checked();
        if self.cursor.flush_due(self.settings.flush_interval) {
            self.flush();
        }
        match self.position().await {
            Ok(position) => match self.check_stream(position).await {
                Some(flow) => flow,
                None => self.check_consumer(position).await,
            },
            Err(e) => {
                tracing::debug!(node = %self.settings.node_id, error = %e, "stream check failed");
                Flow::Continue
            }
        }
    }

    /// Acts on a consumer that delivers nothing although the stream holds
    /// messages this node has not applied (after a stream leader change
    /// a consumer's requests may go unanswered; async-nats's ordered
    /// consumer noticed only through missed heartbeats, about 30 s): after [`DIRECT_READ_AFTER`] of quiet it reads what
    /// waits directly (`direct`); after [`QUIET_CONSUMER_LIMIT`] it also
    /// recreates the consumer. Quiet counts from the later of the last
    /// delivery and the first check that saw messages waiting, so a node
    /// idle for an hour does not count as quiet the moment a message comes.
    pub(super) async fn check_consumer(&mut self, position: StreamPosition) -> Flow {
        if position.last < self.cursor.next() {
            // Caught up. Forget the wait only if the consumer delivered
            // since it began: if direct reads did the work, the consumer
            // is still suspect, and the next message that waits finds it
            // quiet for long enough to be recreated.
            self.liveness.nothing_waits();
            return Flow::Continue;
        }
        let quiet = self.liveness.quiet_while_waiting();
        if quiet > QUIET_CONSUMER_LIMIT {
            tracing::warn!(
                node = %self.settings.node_id, next = self.cursor.next(), last = position.last,
                quiet_ms = quiet.as_millis() as u64,
                "consumer delivers nothing although messages wait; recreating it"
            );
            self.liveness.ask_direct_read();
            return Flow::Restart;
        }
        if quiet >= DIRECT_READ_AFTER {
            return self.read_direct().await;
        }
        Flow::Continue
    }

    /// Moves to the stream's tail without applying anything.
    pub(super) async fn jump_to_tail(&mut self) {
        match self.position().await {
            Ok(position) => {
                self.reset_begins();
                self.enter_incarnation(position);
                self.cursor.raise_target(position.last);
                self.advance(position.last);
                self.reset_done();
                self.flush();
            }
            Err(e) => {
                tracing::warn!(node = %self.settings.node_id, error = %e, "cannot read the stream's tail; following from the start position")
            }
        }
    }

    /// Moves the node to the stream incarnation of `position` if it follows
    /// another: nothing is applied or stored there yet, and the consumer of
    /// the old one is no longer trusted.
    fn enter_incarnation(&mut self, position: StreamPosition) {
        let incarnation = Incarnation::new(position.created);
        if !self.cursor.enter(incarnation) {
            return;
        }
        self.liveness.forget_consumer();
        self.shared.position.send_modify(|p| {
            p.incarnation = incarnation;
            p.applied = 0;
            p.stored = 0;
            p.stream_last = position.last;
        });
    }

    /// Refreshes every hosted refresher fully, then follows from the tail
    /// seen *before* the refresh (what was published earlier is covered by
    /// the refresh; what follows is applied). The refresh waits for a
    /// cold-boot slot of the fleet (`slots`) first.
    pub(super) async fn cold_boot(&mut self, reason: ColdBootReason) -> Flow {
        tracing::warn!(node = %self.settings.node_id, %reason, "cold boot: refreshing every refresher");
        Stats::bump(&self.stats().cold_boots);
        self.reset_begins();
        self.shared.position.set_state(NodeState::ColdBooting {
            reason: reason.clone(),
        });
        let Some(position) = self.position_for_cold_boot().await else {
            return Flow::Stop;
        };
        // A recreated stream: from now on the node reports its position in
        // the new one (nothing applied there until the refresh is done).
        self.enter_incarnation(position);
        let Ok(lease) = self.take_cold_boot_slot(&reason).await else {
            return Flow::Stop;
        };
        // Waiting may have taken a while: the refresh covers what is stored
        // when it begins.
        self.shared
            .position
            .set_state(NodeState::ColdBooting { reason });
        let Some(position) = self.position_for_cold_boot().await else {
            return Flow::Stop;
        };
        // The stream may even have been recreated again meanwhile.
        self.enter_incarnation(position);
        let mut done = true;
        for hosted in self
            .registry
            .hosted()
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
        {
            done = done && self.refresh_all_until_done(&hosted, 0).await;
        }
        if let Some(lease) = lease {
            lease.release().await;
        }
        if !done {
            return Flow::Stop;
        }
        // Everything up to `position.last` is covered by the refresh; an
        // earlier target may belong to a stream that no longer exists.
        self.cursor.reset_target(position.last);
        self.advance(position.last);
        self.reset_done();
        self.flush();
        Flow::Restart
    }

    /// Reads the stream's position, retrying until it answers; `None` when
    /// the node shuts down meanwhile.
    async fn position_for_cold_boot(&mut self) -> Option<StreamPosition> {
        loop {
            match self.position().await {
                Ok(position) => return Some(position),
                Err(e) => {
                    tracing::warn!(node = %self.settings.node_id, error = %e, "cold boot waits for the stream");
                    if !self.pause(self.settings.retry.max_backoff).await {
                        return None;
                    }
                }
            }
        }
    }
}
