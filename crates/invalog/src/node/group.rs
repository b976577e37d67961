//! Grouped application while catching up. When a hosted refresher takes
//! groups ([`crate::Refresher::max_group`] above 1, like the agent's
//! appliers) and the node is not ready yet, the window (`window`) hands
//! runs of consecutive messages of that refresher to
//! [`crate::Refresher::apply_group`] at once. A group is one unit of the
//! failure policy: retried whole, then escalated to the refresher's
//! refresh-all; the node advances past it only when it is applied.
//! Everything else — another refresher, a probe, an own message, a
//! sequence that is not the next, a message that does not decode or is
//! superseded — ends the group, so the order and the counters stay exactly
//! as without grouping. A ready node never groups: live latency is
//! unchanged.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use super::run::{Flow, Runner};
use super::status::{now_ms, Stats};
use crate::model::Batch;
use crate::refresher::{BatchContext, Hosted};

/// A decoded message waiting in a group.
pub(super) struct Member {
    pub(super) sequence: u64,
    pub(super) pending: u64,
    pub(super) published: SystemTime,
    pub(super) batch: Batch,
}

impl Runner {
    /// Applies a group (consecutive, from `next`) and advances past it.
    pub(super) async fn apply_members(&mut self, hosted: &Hosted, group: Vec<Member>) -> Flow {
        let Some(last) = group.last() else {
            return Flow::Continue;
        };
        let (last_sequence, last_pending, published) =
            (last.sequence, last.pending, last.published);
        let started = Instant::now();
        self.liveness.delivered();
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
