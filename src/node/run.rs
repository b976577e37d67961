//! The node's task: carries out the start plan, then consumes the stream
//! with an ordered consumer (no server-side state) from the next sequence,
//! applying each message in order and handing the applied sequence to the
//! checkpoint writer (`writer`) every `flush_interval` and on shutdown. The
//! checks of the stream and the consumer, and the cold boot, are in `check`;
//! reading without a consumer when none can be used is in `direct`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::open::Opened;
use super::position::PositionExt;
use super::status::{now_ms, ColdBootReason, NodeState, Stats};
use super::writer::CheckpointWriter;
use super::{NodeSettings, Shared, StartPlan};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::refresher::Registry;
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
    pub(super) registry: Registry,
    writer: CheckpointWriter,
    pub(super) shared: Arc<Shared>,
    pub(super) cancel: CancellationToken,
    /// The stream incarnation being followed.
    pub(super) incarnation: Incarnation,
    /// The consumer whose deliveries are known to come from `incarnation`
    /// (checked on the first delivery of every consumer, including those
    /// async-nats recreates by itself).
    pub(super) verified_consumer: Option<String>,
    /// The next sequence to apply.
    pub(super) next: u64,
    /// Ready once `next > target`.
    pub(super) target: u64,
    /// Last sequence handed to the checkpoint writer.
    pub(super) stored: Option<u64>,
    /// When `flush` last ran.
    pub(super) last_flush: Instant,
    /// When the consumer last delivered a message (or was created); direct
    /// reads leave it alone.
    pub(super) last_delivery: Instant,
    /// Since when the stream checks have seen messages waiting (`check`).
    pub(super) waiting_since: Option<Instant>,
    /// Messages the server said were still pending after the last one
    /// delivered, if the current consumer delivered any.
    pub(super) pending_after_last: Option<u64>,
    /// When the stream was last checked (`on_tick`).
    pub(super) last_check: Instant,
    /// Set when the consumer failed or stayed quiet while messages wait:
    /// read what waits directly before creating the next one (`direct`).
    pub(super) read_directly: bool,
    /// When a direct read last failed other than "no such message"
    /// (`direct`): such reads are not tried again for a while.
    pub(super) direct_failed_at: Option<Instant>,
    /// What the last escalation of each refresher covers (`apply`).
    pub(super) escalation_covers: super::apply::EscalationCovers,
}

/// How often a running node checks the stream (recreation, gaps, contact).
pub(super) const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the consumer loop looks for a stall or a reconnect (locally,
/// without asking the server).
const STALL_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

impl Runner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        js: jetstream::Context,
        log: LogSettings,
        settings: NodeSettings,
        registry: Registry,
        store: Box<dyn CheckpointStore>,
        shared: Arc<Shared>,
        cancel: CancellationToken,
        position: StreamPosition,
        stored: u64,
    ) -> Self {
        let writer = CheckpointWriter::spawn(
            store,
            shared.clone(),
            settings.node_id.clone(),
            settings.retry.max_backoff,
        );
        Self {
            js,
            log,
            settings,
            registry,
            writer,
            shared,
            cancel,
            incarnation: Incarnation::new(position.created),
            verified_consumer: None,
            next: stored.saturating_add(1),
            target: position.last,
            stored: (stored > 0).then_some(stored),
            last_flush: Instant::now(),
            last_delivery: Instant::now(),
            waiting_since: None,
            pending_after_last: None,
            last_check: Instant::now(),
            read_directly: false,
            direct_failed_at: None,
            escalation_covers: Default::default(),
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
                if from > self.next {
                    self.reset_begins();
                    self.reset_done();
                }
                self.next = from;
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
        let (node, applied) = (self.settings.node_id.clone(), self.next - 1);
        self.writer.finish().await;
        self.shared.position.set_state(NodeState::Stopped);
        tracing::info!(%node, applied, "node stopped");
    }

    /// Consumes until shutdown, creating the consumer again after errors.
    async fn follow(&mut self) {
        let mut failures = 0;
        let cancel = self.cancel.clone();
        loop {
            if std::mem::take(&mut self.read_directly) {
                if let Flow::Stop = self.read_direct().await {
                    return;
                }
            }
            // Opening a consumer waits on the server; a shutdown need not
            // wait for it (nothing is in hand yet).
            let opened = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                opened = self.open_consumer() => opened,
            };
            let outcome = match opened {
                Ok(Opened::Consumer(messages)) => self.drain(messages).await,
                Ok(Opened::Flow(flow)) => Ok(flow),
                Err(message) => Err(message),
            };
            match outcome {
                Ok(Flow::Stop) => return,
                Ok(_) => failures = 0,
                Err(message) => {
                    failures += 1;
                    self.read_directly = true;
                    tracing::warn!(node = %self.settings.node_id, error = %message, "consumer failed; retrying");
                }
            }
            Stats::bump(&self.stats().consumer_restarts);
            if failures > 0 && !self.pause(self.settings.retry.backoff(failures)).await {
                return;
            }
        }
    }

    /// One consumer's life: apply what it delivers until it fails, the
    /// stream check asks for a restart, or shutdown.
    async fn drain(&mut self, mut messages: Box<pull::Ordered>) -> Result<Flow, String> {
        // After a reconnect the ordered consumer only notices it was lost
        // when heartbeats go missing (seconds); recreate it at once instead.
        let connects = self.connects();
        self.last_delivery = Instant::now();
        self.pending_after_last = None;
        let check_every = self.settings.flush_interval.min(CHECK_INTERVAL);
        let mut tick = tokio::time::interval(check_every.min(STALL_CHECK));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // One cancellation future for the consumer's life: creating one per
        // message registers and unregisters a waiter each time.
        let cancelled = self.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            let flow = tokio::select! {
                biased;
                _ = &mut cancelled => Flow::Stop,
                item = messages.next() => match item {
                    Some(Ok(message)) => self.on_delivered(message, &mut messages).await?,
                    Some(Err(e)) => return Err(format!("consumer: {e}")),
                    None => return Err("consumer ended".into()),
                },
                _ = tick.tick() => if self.connects() != connects || self.stalled() {
                    Flow::Restart
                } else if self.last_check.elapsed() >= check_every {
                    self.on_tick().await
                } else {
                    Flow::Continue
                },
            };
            // `biased` polls messages first: during a catch-up the tick may never run.
            if self.last_flush.elapsed() >= self.settings.flush_interval {
                self.flush();
            }
            if !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
        }
    }

    pub(super) async fn on_message(&mut self, message: &jetstream::Message) -> Flow {
        let Ok(info) = message.info() else {
            self.last_delivery = Instant::now();
            tracing::warn!(node = %self.settings.node_id, subject = %message.subject, "message without JetStream metadata; ignored");
            return Flow::Continue;
        };
        self.pending_after_last = Some(info.pending);
        if self.verified_consumer.as_deref() != Some(info.consumer) {
            // A consumer (ours, or one async-nats recreated after losing the
            // last) may sit on a stream created again since the last check:
            // nothing it delivers is applied before the stream's identity is.
            if let Some(flow) = self.verify_incarnation().await {
                return flow;
            }
            self.verified_consumer = Some(info.consumer.to_owned());
        }
        let stored = Stored {
            sequence: info.stream_sequence,
            subject: &message.subject,
            payload: &message.payload,
            published: info.published.into(),
        };
        self.on_stored(stored, info.pending).await
    }

    /// Applies one message read from the stream (by the consumer or
    /// directly), if it is the next one; `pending` is how many follow it.
    pub(super) async fn on_stored(&mut self, message: Stored<'_>, pending: u64) -> Flow {
        let started = Instant::now();
        self.last_delivery = started;
        self.stats().last_contact_ms.store(now_ms(), Relaxed);
        let sequence = message.sequence;
        if sequence < self.next {
            return Flow::Continue;
        }
        if sequence > self.next {
            Stats::bump(&self.stats().gaps);
            let reason = ColdBootReason::Gap {
                expected: self.next,
                found: sequence,
            };
            return self.cold_boot(reason).await;
        }
        let flow = self
            .apply_message(sequence, message.subject, message.payload)
            .await;
        if matches!(flow, Flow::Stop) {
            return flow;
        }
        // Quiet time starts when the loop waits again, not when a slow
        // apply began.
        let done = Instant::now();
        self.last_delivery = done;
        let stats = self.stats();
        stats.apply_latency.observe(done - started);
        let millis = message
            .published
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        stats.last_applied_published_ms.store(millis, Relaxed);
        self.advance_to(sequence, sequence.saturating_add(pending));
        Flow::Continue
    }

    /// Decodes and applies one message; never skips one silently.
    async fn apply_message(&mut self, sequence: u64, subject: &str, payload: &[u8]) -> Flow {
        let batch = match wire::decode_on_subject(subject, payload) {
            Ok(batch) => batch,
            Err(error) => {
                Stats::bump(&self.stats().decode_errors);
                let token = subject.rsplit('.').next().unwrap_or_default();
                let Some(hosted) = self.registry.get(token).cloned() else {
                    tracing::warn!(node = %self.settings.node_id, sequence, subject, %error, "undecodable message for a refresher this node does not host; ignored");
                    Stats::bump(&self.stats().unhosted_messages);
                    return Flow::Continue;
                };
                tracing::error!(node = %self.settings.node_id, sequence, subject, %error, "undecodable message; escalating to refresh_all");
                return self.escalate(&hosted, sequence).await;
            }
        };
        if batch.refresher.name.as_str() == crate::probe::PROBE_REFRESHER {
            self.answer_canaries(sequence, &batch).await;
            return Flow::Continue;
        }
        let Some(hosted) = self.registry.get(batch.refresher.name.as_str()).cloned() else {
            Stats::bump(&self.stats().unhosted_messages);
            return Flow::Continue;
        };
        if let Some(guard) = &self.shared.fill {
            // Before the refresher runs: see `fill` (own messages too: a
            // fill may have raced with their local application).
            guard.record(sequence, &hosted.def.name, &batch.instructions);
        }
        if batch.applied_at_origin && batch.origin == self.settings.node_id.as_str() {
            Stats::bump(&self.stats().own_messages_skipped);
            return Flow::Continue;
        }
        self.apply_batch(&hosted, &batch, sequence).await
    }

    /// Records `sequence` as applied and updates readiness.
    pub(super) fn advance(&mut self, sequence: u64) {
        self.advance_to(sequence, sequence);
    }

    /// Records `sequence` as applied, the stream holding at least up to
    /// `stream_last`, and updates readiness.
    pub(super) fn advance_to(&mut self, sequence: u64, stream_last: u64) {
        self.next = sequence + 1;
        self.shared.position.applied(sequence, stream_last);
        self.publish_progress();
    }

    /// Sets `Ready` or `CatchingUp` from `next` and `target`.
    pub(super) fn publish_progress(&self) {
        let state = if self.next > self.target {
            NodeState::Ready
        } else {
            NodeState::CatchingUp {
                target: self.target,
            }
        };
        self.shared.position.send_if_modified(|current| {
            current.target = self.target;
            if current.state == state {
                return false;
            }
            if state.is_ready() {
                tracing::info!(node = %self.settings.node_id, applied = self.next - 1, "caught up; ready");
            }
            current.state = state;
            true
        });
    }

    /// Hands the applied sequence to the checkpoint writer if it moved.
    pub(super) fn flush(&mut self) {
        self.last_flush = Instant::now();
        let applied = self.next.saturating_sub(1);
        if self.stored == Some(applied) {
            return;
        }
        let checkpoint = Checkpoint {
            stream: self.log.stream.clone(),
            stream_created: self.incarnation.created(),
            sequence: applied,
        };
        self.writer.submit(checkpoint);
        self.stored = Some(applied);
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
