//! Grouped application while catching up. When a hosted refresher takes
//! groups ([`crate::Refresher::max_group`] above 1, like the agent's
//! appliers) and the node is not ready yet, the runner takes the messages
//! the consumer has already delivered after the current one (without
//! waiting for more), and hands runs of consecutive messages of that
//! refresher to [`crate::Refresher::apply_group`] at once. A group is one
//! unit of the failure policy: retried whole, then escalated to the
//! refresher's refresh-all; the node advances past it only when it is
//! applied. Everything else — another refresher, a probe, an own message,
//! a sequence that is not the next, a consumer not verified yet, a message
//! that does not decode — ends the group and goes through the one-message
//! path (`run`), so the order and the counters stay exactly as without
//! grouping. A ready node never groups: live latency is unchanged.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use async_nats::jetstream;
use futures::{FutureExt, Stream, StreamExt};

use super::run::{Flow, Runner};
use super::status::{now_ms, Stats};
use crate::model::Batch;
use crate::refresher::{BatchContext, Hosted};
use crate::wire;

/// Most messages taken from the consumer's buffer at once.
const MAX_TAKEN: usize = 1000;

/// A decoded message waiting in a group.
struct Member {
    sequence: u64,
    pending: u64,
    published: SystemTime,
    batch: Batch,
}

impl Runner {
    /// Applies `first` and, while catching up with a refresher that takes
    /// groups, what the consumer has already delivered after it. `Err` when
    /// the consumer failed (after applying what came before the failure).
    pub(super) async fn on_delivered<S, E>(
        &mut self,
        first: jetstream::Message,
        messages: &mut S,
    ) -> Result<Flow, String>
    where
        S: Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        if self.cursor.caught_up() || !self.groups {
            return Ok(self.on_message(&first).await);
        }
        let mut taken = vec![first];
        let mut failed = None;
        while taken.len() < MAX_TAKEN {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => taken.push(message),
                Some(Some(Err(e))) => {
                    failed = Some(format!("consumer: {e}"));
                    break;
                }
                Some(None) => {
                    failed = Some("consumer ended".into());
                    break;
                }
                None => break,
            }
        }
        let flow = self.apply_taken(taken).await;
        match (flow, failed) {
            (Flow::Continue, Some(failed)) => Err(failed),
            (flow, _) => Ok(flow),
        }
    }

    /// Applies messages in order, grouping runs of one refresher.
    async fn apply_taken(&mut self, taken: Vec<jetstream::Message>) -> Flow {
        let mut group: Vec<Member> = Vec::new();
        let mut group_of: Option<Hosted> = None;
        for message in taken {
            if self.cancel.is_cancelled() {
                return Flow::Stop;
            }
            let expected = self.cursor.next() + group.len() as u64;
            let member = self.groupable(&message, expected);
            if let Some((hosted, member)) = member {
                let same = group_of
                    .as_ref()
                    .is_some_and(|h| h.def.name == hosted.def.name);
                let full = group.len() >= hosted.handler.max_group();
                if !same || full {
                    if let Some(of) = group_of.take() {
                        let flow = self.apply_members(&of, std::mem::take(&mut group)).await;
                        if !matches!(flow, Flow::Continue) {
                            return flow;
                        }
                    }
                    if member.sequence != self.cursor.next() {
                        // The group before it was escalated or stopped
                        // short: read it again the one-message way.
                        let flow = self.on_message(&message).await;
                        if !matches!(flow, Flow::Continue) {
                            return flow;
                        }
                        continue;
                    }
                }
                group_of = Some(hosted);
                group.push(member);
                continue;
            }
            if let Some(of) = group_of.take() {
                let flow = self.apply_members(&of, std::mem::take(&mut group)).await;
                if !matches!(flow, Flow::Continue) {
                    return flow;
                }
            }
            let flow = self.on_message(&message).await;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        match group_of {
            Some(of) => self.apply_members(&of, group).await,
            None => Flow::Continue,
        }
    }

    /// The message's refresher and decoded batch when it can join a group
    /// at sequence `expected`; `None` sends it down the one-message path.
    fn groupable(&self, message: &jetstream::Message, expected: u64) -> Option<(Hosted, Member)> {
        let info = message.info().ok()?;
        if info.stream_sequence != expected || !self.liveness.verified(info.consumer) {
            return None;
        }
        let batch = wire::decode_on_subject(&message.subject, &message.payload).ok()?;
        if batch.applied_at_origin && batch.origin == self.settings.node_id.as_str() {
            return None;
        }
        // The app's refreshers only (not the node's built-ins, `canary`).
        let hosted = self.registry.get(batch.refresher.name.as_str())?;
        if hosted.handler.max_group() < 2 {
            return None;
        }
        let member = Member {
            sequence: info.stream_sequence,
            pending: info.pending,
            published: info.published.into(),
            batch,
        };
        Some((hosted.clone(), member))
    }

    /// Applies a group (consecutive, from `next`) and advances past it.
    async fn apply_members(&mut self, hosted: &Hosted, group: Vec<Member>) -> Flow {
        let Some(last) = group.last() else {
            return Flow::Continue;
        };
        let (last_sequence, last_pending, published) =
            (last.sequence, last.pending, last.published);
        let started = Instant::now();
        self.liveness.delivered_with(last_pending);
        self.stats().last_contact_ms.store(now_ms(), Relaxed);
        if let Some(guard) = &self.shared.fill {
            for member in &group {
                guard.record(
                    member.sequence,
                    &hosted.def.name,
                    &member.batch.instructions,
                );
            }
        }
        let flow = match &group[..] {
            [one] => self.apply_batch(hosted, &one.batch, one.sequence).await,
            _ => self.apply_group(hosted, &group).await,
        };
        if matches!(flow, Flow::Stop) {
            return flow;
        }
        self.finish_applied(started, published, last_sequence, last_pending);
        flow
    }

    /// [`Runner::apply_batch`] for a group: retried whole, then escalated
    /// to a refresh-all that covers every message of the group.
    async fn apply_group(&mut self, hosted: &Hosted, group: &[Member]) -> Flow {
        let policy = self.settings.retry;
        let (first, last) = (group[0].sequence, group[group.len() - 1].sequence);
        let mut failures = 0;
        loop {
            let contexts: Vec<BatchContext<'_>> = group
                .iter()
                .map(|m| BatchContext {
                    sequence: m.sequence,
                    batch: &m.batch,
                })
                .collect();
            let error = match hosted.apply_group_guarded(&contexts).await {
                Ok(()) => {
                    self.escalation_covers.set(&hosted.def.name, None);
                    for member in group {
                        self.count_applied(hosted, &member.batch);
                    }
                    return Flow::Continue;
                }
                Err(error) => error,
            };
            failures += 1;
            if error.is_permanent() || failures >= policy.attempts {
                tracing::error!(
                    node = %self.settings.node_id, first, last, refresher = %hosted.def.name,
                    %error, attempts = failures,
                    "refresher failed on a group of batches; escalating to refresh_all"
                );
                let flow = self.escalate(hosted, last).await;
                if matches!(flow, Flow::Continue) {
                    // `escalate` counted one message; the group had more.
                    let more = group.len() as u64 - 1;
                    self.stats().applied_messages.fetch_add(more, Relaxed);
                }
                return flow;
            }
            Stats::bump(&self.stats().retries);
            tracing::warn!(
                node = %self.settings.node_id, first, last, refresher = %hosted.def.name,
                %error, attempt = failures, "refresher failed on a group of batches; retrying"
            );
            if !self.pause(policy.backoff(failures)).await {
                return Flow::Stop;
            }
        }
    }
}
