//! The consumer side of the runner: [`Runner::follow`] opens a consumer
//! (`pull`: ephemeral, removed by the server once nobody asks it) from the
//! next sequence to apply, hands what it delivers to `window` in order,
//! and opens it again after errors, lost deliveries, stalls and
//! reconnects. While the server takes longer than
//! [`CREATE_PATIENCE`] to answer a creation, the node applies what waits
//! by reading directly (`direct`), so a creation that will never be
//! answered (a consumer placed on a cluster peer that died) does not hold
//! up applying until the request times out.

use std::time::{Duration, Instant};

use super::pull::{Delivery, Next, PullReader};
use super::run::{Flow, Runner, Stored, CHECK_INTERVAL};
use super::status::Stats;
use super::window::WINDOW_WAIT;

/// How long a consumer creation may be pending before the node reads what
/// waits directly (and again after every such interval).
const CREATE_PATIENCE: Duration = Duration::from_secs(1);

/// How often the consumer loop looks for a stall or a reconnect (locally,
/// without asking the server).
const STALL_CHECK: Duration = Duration::from_millis(250);

/// What the runner knows of its consumer's health: changed only through
/// these methods (`run` and `direct` report deliveries, `check` reads the
/// quiet time and asks for direct reads).
#[derive(Debug)]
pub(super) struct Liveness {
    /// Whether the current consumer's deliveries are known to come from
    /// the incarnation followed (checked on its first delivery).
    consumer_verified: bool,
    /// When the consumer last delivered a message (or was created); direct
    /// reads leave it alone.
    last_delivery: Instant,
    /// Messages the server said were still pending after the last one
    /// delivered, if the current consumer delivered any.
    pending_after_last: Option<u64>,
    /// When the stream was last checked (`check::on_tick`).
    last_check: Instant,
    /// Since when the stream checks have seen messages waiting.
    waiting_since: Option<Instant>,
    /// Set when the consumer failed or stayed quiet while messages wait:
    /// read what waits directly before creating the next one (`direct`).
    read_directly: bool,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            consumer_verified: false,
            last_delivery: Instant::now(),
            pending_after_last: None,
            last_check: Instant::now(),
            waiting_since: None,
            read_directly: false,
        }
    }
}

impl Liveness {
    /// A message was delivered (or applied) now.
    pub(super) fn delivered(&mut self) {
        self.last_delivery = Instant::now();
    }

    /// Messages were delivered now; the server said `pending` follow.
    pub(super) fn delivered_with(&mut self, pending: u64) {
        self.last_delivery = Instant::now();
        self.pending_after_last = Some(pending);
    }

    /// When the consumer last delivered.
    pub(super) fn last_delivery(&self) -> Instant {
        self.last_delivery
    }

    /// Puts back the delivery time a direct read found (a direct read is
    /// no delivery).
    pub(super) fn restore_delivery(&mut self, at: Instant) {
        self.last_delivery = at;
    }

    /// Pending messages the last delivery reported, and the quiet since.
    pub(super) fn pending_and_quiet(&self) -> (Option<u64>, Duration) {
        (self.pending_after_last, self.last_delivery.elapsed())
    }

    /// The consumer must prove its incarnation again.
    pub(super) fn forget_consumer(&mut self) {
        self.consumer_verified = false;
    }

    /// A stream check runs now.
    pub(super) fn checked(&mut self) {
        self.last_check = Instant::now();
    }

    /// Read what waits directly before the next consumer.
    pub(super) fn ask_direct_read(&mut self) {
        self.read_directly = true;
    }

    /// The stream is caught up with: forget the wait only if the consumer
    /// delivered since it began (if direct reads did the work, the consumer
    /// is still suspect, and the next message that waits finds it quiet
    /// for long enough to be recreated).
    pub(super) fn nothing_waits(&mut self) {
        if self
            .waiting_since
            .is_some_and(|since| self.last_delivery >= since)
        {
            self.waiting_since = None;
        }
    }

    /// Messages wait: how long the consumer has been quiet, counted from
    /// the later of its last delivery and the first check that saw them.
    pub(super) fn quiet_while_waiting(&mut self) -> Duration {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        self.last_delivery.elapsed().min(since.elapsed())
    }
}

/// What opening a consumer gave.
pub(super) enum Opened {
    /// A consumer.
    Consumer(Box<PullReader>),
    /// No consumer: do this instead.
    Flow(Flow),
}

impl Runner {
    /// Consumes until shutdown, creating the consumer again after errors.
    pub(super) async fn follow(&mut self) {
        let mut failures = 0;
        let cancel = self.cancel.clone();
        loop {
            if std::mem::take(&mut self.liveness.read_directly) {
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
                Ok(Opened::Consumer(consumer)) => self.drain(consumer).await,
                Ok(Opened::Flow(flow)) => Ok(flow),
                Err(message) => Err(message),
            };
            // What the window holds, the next consumer delivers again.
            self.window.clear();
            match outcome {
                Ok(Flow::Stop) => return,
                Ok(_) => failures = 0,
                Err(message) => {
                    failures += 1;
                    self.liveness.read_directly = true;
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
    async fn drain(&mut self, mut consumer: Box<PullReader>) -> Result<Flow, String> {
        // After a reconnect the consumer may be gone with its server (or
        // have lost deliveries): recreate it at once.
        let connects = self.connects();
        self.liveness.forget_consumer();
        self.liveness.last_delivery = Instant::now();
        self.liveness.pending_after_last = None;
        let check_every = self.settings.flush_interval.min(CHECK_INTERVAL);
        let mut tick = tokio::time::interval(check_every.min(STALL_CHECK).min(WINDOW_WAIT));
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
                next = consumer.next() => match next? {
                    Next::Message(delivery) => self.on_delivered(delivery).await,
                    Next::Restart(why) => {
                        tracing::warn!(node = %self.settings.node_id, next = self.cursor.next(), reason = %why, "recreating the consumer");
                        Flow::Restart
                    }
                },
                _ = tick.tick() => self.on_loop_tick(connects, check_every).await,
            };
            // `biased` polls messages first: during a catch-up the tick may never run.
            if self.cursor.flush_due(self.settings.flush_interval) {
                self.flush();
            }
            if !matches!(flow, Flow::Continue) {
                return Ok(flow);
            }
        }
    }

    /// The consumer loop's tick: waiters, then a restart
    /// (reconnect, stall), the window (a quiet consumer), or the checks.
    async fn on_loop_tick(&mut self, connects: u64, check_every: Duration) -> Flow {
        self.wake_waiters();
        if self.connects() != connects || self.stalled() {
            Flow::Restart
        } else if !self.window.is_empty() && self.liveness.last_delivery.elapsed() >= WINDOW_WAIT {
            // The consumer went quiet with messages in the window.
            self.apply_window(true).await
        } else if self.liveness.last_check.elapsed() >= check_every {
            self.on_tick().await
        } else {
            Flow::Continue
        }
    }

    /// Applies a delivered message at once (the one-message path).
    pub(super) async fn on_message(&mut self, delivery: &Delivery) -> Flow {
        self.liveness.pending_after_last = Some(delivery.pending);
        if let Some(flow) = self.verify_consumer().await {
            return flow;
        }
        let stored = Stored {
            sequence: delivery.stream_sequence,
            subject: &delivery.message.subject,
            payload: &delivery.message.payload,
            published: delivery.published,
        };
        self.on_stored(stored, delivery.pending).await
    }

    /// Nothing a consumer delivers is applied before the stream it reads is
    /// known to be the incarnation followed (it may have been created again
    /// since the last check): checked once per consumer.
    pub(super) async fn verify_consumer(&mut self) -> Option<Flow> {
        if self.liveness.consumer_verified {
            return None;
        }
        if let Some(flow) = self.verify_incarnation().await {
            return Some(flow);
        }
        self.liveness.consumer_verified = true;
        None
    }

    /// Creates a consumer at `next`, unless the stream check asks
    /// for something else first (a cold boot). A consumer that starts
    /// before `next` (messages were read directly meanwhile) is fine: what
    /// it delivers below `next` is skipped.
    pub(super) async fn open_consumer(&mut self) -> Result<Opened, String> {
        let position = self.position().await?;
        if let Some(flow) = self.check_stream(position).await {
            return Ok(Opened::Flow(flow));
        }
        let creating = PullReader::create(
            self.js.clone(),
            self.log.stream.clone(),
            self.log.all_subjects(),
            self.cursor.next(),
        );
        tokio::pin!(creating);
        let start = tokio::time::Instant::now() + CREATE_PATIENCE;
        let mut patience = tokio::time::interval_at(start, CREATE_PATIENCE);
        patience.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                created = &mut creating => return created.map(|c| Opened::Consumer(Box::new(c))),
                _ = patience.tick() => match self.read_direct().await {
                    Flow::Continue => {}
                    flow => return Ok(Opened::Flow(flow)),
                },
            }
        }
    }
}
