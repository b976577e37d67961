//! The node's task: carries out the start plan, then consumes the stream
//! with an ephemeral consumer (`push`) from the next sequence,
//! applying each message in order and handing the applied sequence to the
//! checkpoint writer (`writer`) every `flush_interval` and on shutdown. The
//! checks of the stream and the consumer, and the cold boot, are in `check`;
//! reading without a consumer when none can be used is in `direct`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::consume::Liveness;
use super::cursor::Cursor;
use super::direct::DirectReads;
use super::position::PositionExt;
use super::status::{now_ms, ColdBootReason, NodeState, Stats};
use super::writer::CheckpointWriter;
use super::{NodeSettings, Shared, StartPlan};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::model::Batch;
use crate::refresher::{BatchContext, Registry};
use crate::stream::{LogSettings, StreamPosition};
use crate::token::Incarnation;
use crate::wire;

/// One message as stored in the stream.
pub(super) struct Stored<'a> {
    pub(super) sequence: u64,
    pub(super) subject: &'a str,
    pub(super) payload: &'a [u8],
    pub(super) published: SystemTime,
}

/// What the loop does next.
pub(super) enum Flow {
    /// Keep consuming.
    Continue,
    /// Create the consumer again from `next`.
    Restart,
    /// Shut down.
    Stop,
}

pub(super) struct Runner {
    pub(super) js: jetstream::Context,
    pub(super) log: LogSettings,
    pub(super) settings: NodeSettings,
    pub(super) registry: Arc<Registry>,
    /// invalog's own refreshers (`canary`), looked up after the app's.
    builtins: Registry,
    writer: CheckpointWriter,
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: CancellationToken,
    /// Where the runner is in the log (`cursor`).
    pub(super) cursor: Cursor,
    /// The consumer's health (`consume`).
    pub(super) liveness: Liveness,
    /// What direct reads remember (`direct`).
    pub(super) direct: DirectReads,
    /// What the last escalation of each refresher covers (`apply`).
    pub(super) escalation_covers: super::apply::EscalationCovers,
    /// Delivered messages held while catching up (`window`).
    pub(super) window: super::window::Window,
    /// Messages applied since waiters were last woken (`advance_to`).
    unwoken: u32,
}

/// While catching up, waiters are woken once per this many messages.
const WAKE_EVERY: u32 = 256;

/// How often a running node checks the stream (recreation, gaps, contact).
pub(super) const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a runner starts with (`Node::start` gathers it).
pub(super) struct RunnerParts {
    pub(super) js: jetstream::Context,
    pub(super) log: LogSettings,
    pub(super) settings: NodeSettings,
    pub(super) registry: Registry,
    pub(super) store: Box<dyn CheckpointStore>,
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: CancellationToken,
    /// The stream as read at start.
    pub(super) position: StreamPosition,
    /// The sequence stored for this incarnation (0: none).
    pub(super) stored: u64,
}

impl Runner {
    pub(super) fn new(parts: RunnerParts) -> Self {
        let RunnerParts {
            js,
            log,
            settings,
            registry,
            store,
            shared,
            cancel,
            position,
            stored,
        } = parts;
        let writer = CheckpointWriter::spawn(
            store,
            shared.clone(),
            settings.node_id.clone(),
            settings.retry.max_backoff,
        );
        let builtins = super::canary::builtins(
            js.client(),
            settings.node_id.clone(),
            log.subject_prefix.clone(),
            shared.clone(),
        );
        // Whether some refresher takes groups is fixed at start.
        let window = super::window::Window::new(settings.catch_up_lookahead, registry.groups());
        Self {
            builtins,
            js,
            log,
            settings,
            registry: Arc::new(registry),
            writer,
            shared,
            cancel,
            cursor: Cursor::new(Incarnation::new(position.created), stored, position.last),
            liveness: Liveness::default(),
            direct: DirectReads::default(),
            escalation_covers: Default::default(),
            window,
            unwoken: 0,
        }
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Runs until shutdown; the final state is `Stopped`.
    pub(super) async fn run(mut self, plan: StartPlan) {
        let started = match plan {
            StartPlan::Replay { from } => {
                // Starting past the stored sequence skips messages.
                if self.cursor.start_at(from) {
                    self.reset_begins();
                    self.reset_done();
                }
                self.publish_progress();
                Flow::Continue
            }
            StartPlan::Tail => {
                self.jump_to_tail().await;
                Flow::Continue
            }
            StartPlan::ColdBoot(reason) => {
                if matches!(reason, ColdBootReason::BehindRetention { .. }) {
                    // Messages left the stream before this node applied
                    // them: a gap, found at start.
                    Stats::bump(&self.stats().gaps);
                }
                self.cold_boot(reason).await
            }
        };
        if !matches!(started, Flow::Stop) {
            self.follow().await;
        }
        self.flush();
        let (node, applied) = (self.settings.node_id.clone(), self.cursor.applied());
        self.writer.finish().await;
        self.shared.position.set_state(NodeState::Stopped);
        tracing::info!(%node, applied, "node stopped");
    }

    /// Applies one message read from the stream (by the consumer or
    /// directly), if it is the next one; `pending` is how many follow it.
    pub(super) async fn on_stored(&mut self, message: Stored<'_>, pending: u64) -> Flow {
        self.on_stored_decoded(message, pending, None).await
    }

    /// [`Runner::on_stored`] for a message already decoded (`decoded`), or
    /// to be decoded (`None`).
    pub(super) async fn on_stored_decoded(
        &mut self,
        message: Stored<'_>,
        pending: u64,
        decoded: Option<Result<Batch, wire::DecodeError>>,
    ) -> Flow {
        let started = Instant::now();
        self.liveness.delivered();
        self.stats().last_contact_ms.store(now_ms(), Relaxed);
        let sequence = message.sequence;
        let next = self.cursor.next();
        if sequence < next {
            return Flow::Continue;
        }
        if sequence > next {
            Stats::bump(&self.stats().gaps);
            let reason = ColdBootReason::Gap {
                expected: next,
                found: sequence,
            };
            return self.cold_boot(reason).await;
        }
        let decoded =
            decoded.unwrap_or_else(|| wire::decode_on_subject(message.subject, message.payload));
        let flow = self.apply_decoded(sequence, message.subject, decoded).await;
        if matches!(flow, Flow::Stop) {
            return flow;
        }
        self.finish_applied(started, message.published, sequence, pending);
        Flow::Continue
    }

    /// After applying up to `sequence` (begun at `started`, the last
    /// message published at `published`, `pending` more in the stream):
    /// latency and freshness stats, then the new position. Quiet time
    /// starts when the loop waits again, not when a slow apply began.
    pub(super) fn finish_applied(
        &mut self,
        started: Instant,
        published: SystemTime,
        sequence: u64,
        pending: u64,
    ) {
        let done = Instant::now();
        self.liveness.delivered();
        let stats = self.stats();
        stats.apply_latency.observe(done - started);
        let millis = published
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        stats.last_applied_published_ms.store(millis, Relaxed);
        self.advance_to(sequence, sequence.saturating_add(pending));
    }

    /// Applies one decoded message; never skips one silently.
    async fn apply_decoded(
        &mut self,
        sequence: u64,
        subject: &str,
        decoded: Result<Batch, wire::DecodeError>,
    ) -> Flow {
        let batch = match decoded {
            Ok(batch) => batch,
            Err(error) => {
                Stats::bump(&self.stats().decode_errors);
                let token = subject.rsplit('.').next().unwrap_or_default();
                let registry = Arc::clone(&self.registry);
                let Some(hosted) = registry.get(token) else {
                    tracing::warn!(node = %self.settings.node_id, sequence, subject, %error, "undecodable message for a refresher this node does not host; ignored");
                    Stats::bump(&self.stats().unhosted_messages);
                    return Flow::Continue;
                };
                tracing::error!(node = %self.settings.node_id, sequence, subject, %error, "undecodable message; escalating to refresh_all");
                return self.escalate(hosted, sequence).await;
            }
        };
        let name = batch.refresher.name.as_str();
        // Shared, not cloned: a `Hosted` clone allocates its name.
        let registry = Arc::clone(&self.registry);
        let Some(hosted) = registry.get(name) else {
            if let Some(builtin) = self.builtins.get(name) {
                // invalog's own refreshers: applied in order, never
                // counted as the app's messages, never failing.
                let context = BatchContext {
                    sequence,
                    batch: &batch,
                };
                if let Err(error) = builtin.apply_guarded(context).await {
                    tracing::warn!(node = %self.settings.node_id, sequence, refresher = name, %error, "built-in refresher failed");
                }
                return Flow::Continue;
            }
            Stats::bump(&self.stats().unhosted_messages);
            return Flow::Continue;
        };
        if let Some(guard) = &self.shared.fill {
            // Before the refresher runs: see `fill` (own messages too: a
            // fill may have raced with their local application).
            guard.record(sequence, &hosted.def.name, &batch.instructions);
        }
        if self.own_applied(&batch) {
            Stats::bump(&self.stats().own_messages_skipped);
            return Flow::Continue;
        }
        self.apply_batch(hosted, &batch, sequence).await
    }

    /// Records `sequence` as applied and updates readiness.
    pub(super) fn advance(&mut self, sequence: u64) {
        self.advance_to(sequence, sequence);
    }

    /// Records `sequence` as applied, the stream holding at least up to
    /// `stream_last`, and updates readiness.
    ///
    /// While catching up through the window, waiters (`ready`,
    /// `wait_applied`, …) are woken every [`WAKE_EVERY`] messages and when
    /// the loop waits (`wake_waiters`), not on every message: waking a task
    /// per message cost more than applying it. A state change always wakes
    /// them.
    pub(super) fn advance_to(&mut self, sequence: u64, stream_last: u64) {
        self.cursor.applied_through(sequence);
        let batched = !self.window.is_empty() && !self.cursor.caught_up();
        self.unwoken = if batched { self.unwoken + 1 } else { 0 };
        let wake = self.unwoken == 0 || self.unwoken >= WAKE_EVERY;
        if wake {
            self.unwoken = 0;
        }
        self.shared.position.applied(sequence, stream_last, wake);
        self.publish_progress();
    }

    /// Wakes the position's waiters if applied messages have not yet.
    pub(super) fn wake_waiters(&mut self) {
        if self.unwoken > 0 {
            self.unwoken = 0;
            self.shared.position.wake();
        }
    }

    /// Sets `Ready` or `CatchingUp` from `next` and `target`.
    pub(super) fn publish_progress(&self) {
        let target = self.cursor.target();
        let state = if self.cursor.caught_up() {
            NodeState::Ready
        } else {
            NodeState::CatchingUp { target }
        };
        self.shared.position.send_if_modified(|current| {
            current.target = target;
            if current.state == state {
                return false;
            }
            if state.is_ready() {
                tracing::info!(node = %self.settings.node_id, applied = self.cursor.applied(), "caught up; ready");
            }
            current.state = state;
            true
        });
    }

    /// Hands the applied sequence to the checkpoint writer if it moved.
    pub(super) fn flush(&mut self) {
        let Some(applied) = self.cursor.take_flush() else {
            return;
        };
        let checkpoint = Checkpoint {
            stream: self.log.stream.clone(),
            stream_created: self.cursor.incarnation().created(),
            sequence: applied,
        };
        self.writer.submit(checkpoint);
    }

    /// Tells the stale-fill guard (if any) that a cold boot or a skip
    /// begins: tickets from before, or taken until [`Runner::reset_done`],
    /// never fill.
    pub(super) fn reset_begins(&self) {
        if let Some(guard) = &self.shared.fill {
            guard.begin_reset();
        }
    }

    /// The cold boot or skip is over (see [`Runner::reset_begins`]).
    pub(super) fn reset_done(&self) {
        if let Some(guard) = &self.shared.fill {
            guard.end_reset();
        }
    }

    /// Sleeps unless shut down first; false on shutdown.
    pub(super) async fn pause(&self, duration: std::time::Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(duration) => true,
        }
    }
}
